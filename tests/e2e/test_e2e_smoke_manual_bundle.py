"""Smoke test for the e2e machinery: a HAND-WRITTEN bundle (no transformer) boots bookworm's
systemd under real runc to ``running`` with no failed unit.

It pins the design the transformer implements, as verified with runc 1.1.5 on a cgroup v1
hybrid host: 14 capabilities (no CAP_SYS_ADMIN), env container=oci, tmpfs on /run,
/run/lock, /tmp, /var/log/journal, a generated /etc/machine-id bound read-only from a path
RELATIVE to the bundle, systemd-machine-id-commit.service masked by a read-only bind of an
empty file under /run/systemd/system, and on v1 a read-only cgroup mount plus a read-write
bind of only the container's own name=systemd directory.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.harness import bundles, runc_harness
from tests.harness.skips import skip_or_fail

pytestmark = pytest.mark.e2e

CAPS = ["CAP_" + c for c in (
    "AUDIT_WRITE KILL NET_BIND_SERVICE MKNOD CHOWN DAC_OVERRIDE FSETID FOWNER "
    "NET_RAW SETGID SETUID SETFCAP SETPCAP SYS_CHROOT").split()]
RO_BIND = ["bind", "ro", "nosuid", "nodev", "noexec"]


def _tmpfs(dest: str, mode: str, size: str) -> dict:
    return {"destination": dest, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", f"mode={mode}", f"size={size}"]}


def write_manual_bundle(bundle: Path, *, cgroup_v2: bool) -> str:
    """Write config.json and oci-systemd/ beside an existing bundle/rootfs; return the
    machine id bound into the container."""
    subprocess.run([runc_harness.RUNC, "spec", "--bundle", str(bundle)], check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    gen = bundle / "oci-systemd"
    gen.mkdir()
    machine_id = secrets.token_hex(16)
    (gen / "machine-id").write_text(machine_id + "\n")
    (gen / "empty.service").write_text("")

    cfg["root"] = {"path": "rootfs", "readonly": False}
    cfg["process"].update(
        terminal=False,
        args=["/sbin/init"],
        env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "container=oci"],
        capabilities={"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
    )
    cgroups_path = runc_harness.new_cgroups_path()
    cfg["linux"]["cgroupsPath"] = cgroups_path
    mounts = cfg["mounts"]
    i = next(n for n, m in enumerate(mounts) if m["destination"] == "/sys/fs/cgroup")
    if cgroup_v2:
        cfg["linux"]["namespaces"].append({"type": "cgroup"})
        mounts[i]["options"] = ["rw" if o == "ro" else o for o in mounts[i]["options"]]
    else:
        assert "ro" in mounts[i]["options"]  # every controller stays read-only
        mounts.insert(i + 1, {"destination": "/sys/fs/cgroup/systemd", "type": "bind",
                              "source": f"/sys/fs/cgroup/systemd{cgroups_path}",
                              "options": ["rbind", "rw", "nosuid", "nodev", "noexec"]})
    mounts += [
        _tmpfs("/run", "755", "64m"),
        _tmpfs("/run/lock", "755", "4m"),
        _tmpfs("/tmp", "1777", "256m"),
        _tmpfs("/var/log/journal", "755", "64m"),
        # relative sources: runc resolves them against the bundle directory
        {"destination": "/etc/machine-id", "type": "bind",
         "source": "oci-systemd/machine-id", "options": RO_BIND},
        # must come after the /run tmpfs; an empty unit file is a mask
        {"destination": "/run/systemd/system/systemd-machine-id-commit.service", "type": "bind",
         "source": "oci-systemd/empty.service", "options": RO_BIND},
    ]
    (bundle / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return machine_id


@pytest.fixture
def bookworm_bundle(images, tmp_path):
    """A bundle directory whose rootfs is an overlay on the session's bookworm image."""
    image = images.get("bookworm")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    try:
        image.layer_to(bundle / "rootfs", bundle / bundles.LAYER_SCRATCH)
        yield bundle
    finally:
        bundles.remove_bundle(bundle)


@pytest.mark.parametrize("cgroup_v2", [False, True], ids=["cgroup-v1", "cgroup-v2-private-ns"])
def test_manual_bundle_boots_to_running(bookworm_bundle, cgroup_v2):
    if not cgroup_v2 and runc_harness.host_cgroup_mode() != "v1":
        skip_or_fail("host has no cgroup v1 name=systemd hierarchy")
    image_machine_id = (bookworm_bundle / "rootfs/etc/machine-id").read_text()
    machine_id = write_manual_bundle(bookworm_bundle, cgroup_v2=cgroup_v2)
    cgroups_path = json.loads((bookworm_bundle / "config.json").read_text())["linux"]["cgroupsPath"]

    with runc_harness.RuncContainer(bookworm_bundle, cgroup_v2=cgroup_v2) as c:
        c.start()
        state = c.wait_running(timeout=90)
        assert state == "running", c.diagnostics()
        assert c.failed_units() == [], c.diagnostics()
        assert c.exec("cat", "/etc/machine-id").stdout.strip() == machine_id
        load = c.exec("systemctl", "show", "-P", "LoadState", "systemd-machine-id-commit.service")
        assert load.stdout.strip() == "masked"
        if not cgroup_v2:
            w = c.exec("sh", "-c", "echo 1000 > /sys/fs/cgroup/pids/pids.max")
            assert w.returncode != 0, "container can write its own pids.max"
        c.kill(37, timeout=10)  # raises unless runc reports it stopped within 10 s
    assert runc_harness.leftover_cgroups(cgroups_path) == []
    assert (bookworm_bundle / "rootfs/etc/machine-id").read_text() == image_machine_id
