"""/run/host and $container_host_* (transformer/concerns/run_host.py, patches/run-host.json):
the files repeat what PID 1's environment says, the host's os-release is bound from the
host at run time, its ID fields come from the os-release the edge read, and a bad
--host-os-release is bad input that changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness.bundles import make_systemd_bundle
from tests.harness.planning import POLICY, mounts_at, run, runc_config
from tests.harness.runner import cli
from transformer.concerns.environment import env_value
from transformer.concerns.run_host import parse_os_release

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'


def _side(result, name: str) -> bytes:
    (side,) = [s for s in result.side_files if s.path.endswith("/" + name)]
    assert side.mode == 0o444
    return side.content


def test_os_release_is_parsed_as_systemd_reads_it():
    text = ("# a comment\n\nID=debian\nVERSION_ID='12'\nPRETTY_NAME=\"Debian \\\"12\\\"\"\n"
            "BROKEN=\"no end\nnot a field\n-X=1\nVARIANT_ID=\n")
    assert parse_os_release(text) == (("ID", "debian"), ("VERSION_ID", "12"), ("PRETTY_NAME", 'Debian "12"'),
                                      ("VARIANT_ID", ""))


def test_the_files_repeat_the_environment_and_os_release_comes_from_the_running_host():
    result = run(runc_config())
    env = result.config["process"]["env"]
    assert _side(result, "container-manager") == (env_value(env, "container") + "\n").encode()
    assert _side(result, "container-uuid") == (env_value(env, "container_uuid") + "\n").encode()
    for name in ("container-manager", "container-uuid", "os-release"):
        (mount,) = mounts_at(result, f"/run/host/{name}")
        assert mount["type"] == "bind" and "ro" in mount["options"], mount
    assert mounts_at(result, "/run/host/os-release")[0]["source"] == "/etc/os-release"
    # every /run/host mount comes after the /run tmpfs that holds its mount point
    dests = [m["destination"] for m in result.config["mounts"]]
    assert max(i for i, d in enumerate(dests) if d == "/run") < min(i for i, d in enumerate(dests)
                                                                    if d.startswith("/run/host/"))


def test_values_the_config_kept_are_the_ones_written():
    config = runc_config()
    config["process"]["env"] += ["container=podman", "container_uuid=7fe469f7-2410-a0f2-568e-085b9f8f6d33"]
    result = run(config)
    assert _side(result, "container-manager") == b"podman\n"
    assert _side(result, "container-uuid") == b"7fe469f7-2410-a0f2-568e-085b9f8f6d33\n"


def test_no_run_host_where_run_is_not_the_containers_own_tmpfs():
    config = runc_config()
    config["mounts"].append({"destination": "/run", "type": "bind", "source": "/srv/run", "options": ["rbind"]})
    result = run(config)
    assert not [m for m in result.config["mounts"] if m["destination"].startswith("/run/host")]
    assert not [s for s in result.side_files if s.path.endswith(("container-manager", "container-uuid"))]
    assert any(n.kind == "warning" and n.concern == "run-host" for n in result.notes)


def test_host_env_comes_from_the_options_in_policy_order_and_a_set_one_is_kept():
    fields = parse_os_release(DEBIAN + "VARIANT_ID=\n")
    env = run(runc_config(), host_os_release=fields).config["process"]["env"]
    host = [e for e in env if e.startswith("container_host_")]
    assert host == ["container_host_id=debian", "container_host_version_id=12"]  # empty VARIANT_ID: left out
    assert not [e for e in run(runc_config()).config["process"]["env"] if e.startswith("container_host_")]
    config = runc_config()
    config["process"]["env"].append("container_host_id=fedora")
    env = run(config, host_os_release=fields).config["process"]["env"]
    assert env_value(env, "container_host_id") == "fedora"
    assert POLICY.run_host.host_env_keys[:2] == ("ID", "VERSION_ID")


def test_a_second_apply_changes_nothing():
    fields = parse_os_release(DEBIAN)
    first = run(runc_config(), host_os_release=fields)
    assert run(first.config, host_os_release=fields).ops == ()


def test_cli_host_os_release_file_and_none(tmp_path: Path):
    bundle = make_systemd_bundle(tmp_path / "bundle")
    target = tmp_path / "target-os-release"
    target.write_text(DEBIAN.replace("12", "13"))
    patch = json.loads(cli("plan", "--host-os-release", str(target), str(bundle)).stdout)
    values = [op["value"] for op in patch if op["path"] == "/process/env/-"]
    assert "container_host_version_id=13" in values and "container_host_id=debian" in values
    patch = json.loads(cli("plan", "--host-os-release", "none", str(bundle)).stdout)
    assert not [op for op in patch if str(op.get("value", "")).startswith("container_host_")]


def test_cli_unreadable_host_os_release_is_bad_input_and_writes_nothing(tmp_path: Path):
    bundle = make_systemd_bundle(tmp_path / "bundle")
    before = (bundle / "config.json").read_bytes()
    p = cli("apply", "--host-os-release", str(tmp_path / "missing"), str(bundle))
    err = p.stderr.decode()
    assert p.returncode == 2 and len(err.splitlines()) == 1 and "--host-os-release" in err, err
    assert "Traceback" not in err
    assert (bundle / "config.json").read_bytes() == before and not (bundle / "oci-systemd").exists()
