"""podman 4.3.1 with `oci-systemd hooks-config --podman DIR`: the precreate filter and
the prestart copy-up helper, on an image imported from the debootstrapped Debian tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.runner import cli

# the policy's set (CAP_AUDIT_WRITE, which podman grants, is withheld)
SYSTEMD_CAPS = {"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_MKNOD", "CAP_CHOWN",
                "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_NET_RAW", "CAP_SETGID",
                "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_SYS_CHROOT"}


@pytest.fixture(scope="module")
def hooks_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hooks.d")
    r = cli("hooks-config", "--podman", str(d))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"", "hooks-config --podman writes files, not stdout"
    assert b"/usr/share/containers/oci/hooks.d" in r.stderr and b"/etc/containers/oci/hooks.d" in r.stderr
    return d


def _mountinfo(podman, name: str) -> dict[str, str]:
    out = podman.run("exec", name, "cat", "/proc/1/mountinfo").stdout
    mounts = {}
    for line in out.splitlines():
        fields = line.split()
        sep = fields.index("-")
        mounts[fields[4]] = fields[sep + 1]
    return mounts


def _caps(podman, name: str) -> int:
    out = podman.run("exec", name, "cat", "/proc/1/status").stdout
    (line,) = [l for l in out.splitlines() if l.startswith("CapBnd:")]
    return int(line.split()[1], 16)


def test_hooks_dir_holds_both_entries(hooks_dir: Path):
    docs = {p.name: json.loads(p.read_text()) for p in hooks_dir.glob("*.json")}
    stages = sorted(s for d in docs.values() for s in d["stages"])
    assert stages == ["precreate", "prestart"], docs
    filt = next(d for d in docs.values() if d["stages"] == ["precreate"])
    assert filt["hook"]["path"].startswith("/") and "filter" in filt["hook"]["args"]
    assert filt["hook"]["args"][0] == filt["hook"]["path"], "a venv python needs its absolute argv[0]"


def test_systemd_boots_to_running_and_stops_cleanly(podman, hooks_dir: Path):
    name = podman.new_name()
    podman.run("--hooks-dir", str(hooks_dir), "run", "-d", "--name", name, "--systemd=false",
               *podman.RUN_FLAGS, podman.image, "/sbin/init")
    state = podman.wait_system_running(name)
    failed = podman.run("exec", name, "systemctl", "--failed", "--no-legend", "--plain", check=False).stdout
    assert state == "running", f"{state}\nfailed units:\n{failed}"
    assert failed.strip() == ""

    mounts = _mountinfo(podman, name)
    for dest in ("/run", "/run/lock", "/tmp", "/var/log/journal"):
        assert mounts.get(dest) == "tmpfs", (dest, mounts)
    assert "/etc/machine-id" in mounts and "/run/systemd/system/systemd-machine-id-commit.service" in mounts

    info = podman.inspect(name)
    container_id = info["Id"]
    machine_id = podman.run("exec", name, "cat", "/etc/machine-id").stdout.strip()
    # The machine-id derives from podman's container ID, as podman's own container_uuid does.
    assert machine_id == container_id[:32]
    env = podman.run("exec", name, "cat", "/proc/1/environ").stdout.split("\0")
    assert f"container_uuid={machine_id}" in env

    from transformer.policy import load_policy

    names = load_policy().capabilities.capabilities
    caps = _caps(podman, name)
    numbers = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
               "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
               "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
               "CAP_SETFCAP": 31, "CAP_SYS_ADMIN": 21}
    assert set(names) == SYSTEMD_CAPS
    for cap in names:
        assert caps & (1 << numbers[cap]), f"{cap} missing from PID 1's bounding set {caps:#x}"
    assert not caps & (1 << numbers["CAP_SYS_ADMIN"])

    config = podman.oci_config(name)
    annotations = config.get("annotations") or {}
    # podman writes the image's STOPSIGNAL into the annotation; the filter keeps it
    # (37 means SIGRTMIN+3) and adds KillSignal for the systemd cgroup driver.
    assert annotations.get("org.opencontainers.image.stopSignal") in ("37", "SIGRTMIN+3")
    assert annotations.get("org.systemd.property.KillSignal") == "37"
    hooks = [h for h in (config.get("hooks") or {}).get("prestart", []) if "copyup" in " ".join(h.get("args", []))]
    assert len(hooks) == 1, f"the copy-up helper must run once, not {len(hooks)} times: {config.get('hooks')}"

    podman.run("stop", "-t", "20", name, timeout=60)
    info = podman.inspect(name)
    # 0, not 137: SIGRTMIN+3 stopped systemd, not the SIGKILL that follows the 20 s
    assert info["State"]["ExitCode"] == 0, info["State"]


def test_non_systemd_container_is_unchanged(podman, hooks_dir: Path, tmp_path: Path):
    script = "cat /etc/machine-id; grep -c . /proc/self/mountinfo; echo $container_uuid"
    outputs = []
    for hooks in (str(hooks_dir), str(tmp_path)):  # tmp_path: an empty hooks dir
        name = podman.new_name()
        p = podman.run("--hooks-dir", hooks, "run", "--name", name, *podman.RUN_FLAGS, podman.image,
                       "/bin/sh", "-c", script)
        config = podman.oci_config(name)
        outputs.append((p.stdout, config))
    (with_hooks, cfg_hooks), (without, cfg_plain) = outputs
    assert with_hooks == without, (with_hooks, without)
    # The config podman handed to runc is the same, apart from what podman makes per container.
    def comparable(cfg):
        cfg = json.loads(json.dumps(cfg))
        for key in ("hostname",):
            cfg.pop(key, None)
        cfg["root"] = None
        # podman's own env order varies from run to run (a Go map)
        cfg["process"]["env"] = sorted(e for e in cfg["process"]["env"] if not e.startswith("HOSTNAME="))
        if not cfg.get("hooks"):
            cfg.pop("hooks", None)  # podman writes "hooks": {} when a hooks dir has entries
        # podman orders its own binds (/etc/hosts, /etc/hostname, ...) from a Go map too
        cfg["mounts"] = sorted(m["destination"] for m in cfg["mounts"])
        cfg["linux"].pop("cgroupsPath", None)
        cfg["annotations"].pop("io.kubernetes.cri-o.Created", None)
        cfg["linux"].pop("mountLabel", None)
        return cfg
    assert comparable(cfg_hooks) == comparable(cfg_plain)
