"""patches/seccomp-generator.sh, run by the image's /bin/sh as systemd would run it, on
unit trees made here; plus the plan's choice of when to bind it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.planning import mounts_at, run, runc_config
from tests.harness.skips import skip_or_fail
from transformer.policy import default_policy_dir
from transformer.rootfs import DescribedRootfs

SCRIPT = default_policy_dir() / "seccomp-generator.sh"
NO_SYS_ADMIN = "00000000a80425fb"  # runc's default 14 capabilities
WITH_SYS_ADMIN = "00000000a82425fb"
DROP_IN = "99-oci-systemd-seccomp.conf"

HARDENED = """[Unit]
Description=a hardened daemon
[Service]
User=daemon
ExecStart=/usr/bin/daemon
SystemCallFilter=@system-service
RestrictAddressFamilies=AF_UNIX
"""


def _generate(root: Path, capbnd: str = NO_SYS_ADMIN, version: str = "262") -> dict[str, str]:
    late = root / "late"
    late.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OCI_SYSTEMD_GENERATOR_ROOT": str(root / "image"),
           "OCI_SYSTEMD_GENERATOR_CAPBND": capbnd, "OCI_SYSTEMD_GENERATOR_VERSION": version}
    p = subprocess.run(["sh", str(SCRIPT), str(root / "normal"), str(root / "early"), str(late)],
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return {str(f.relative_to(late)): f.read_text() for f in late.rglob("*.conf")}


def _unit(root: Path, directory: str, name: str, text: str) -> Path:
    path = root / "image" / directory.lstrip("/") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_unit_with_user_and_seccomp_gets_the_drop_in(tmp_path):
    _unit(tmp_path, "/usr/lib/systemd/system", "hardened.service", HARDENED)
    out = _generate(tmp_path)
    assert list(out) == [f"hardened.service.d/{DROP_IN}"]
    drop_in = out[f"hardened.service.d/{DROP_IN}"]
    assert "[Service]\nSystemCallFilter=\n" in drop_in and "RestrictAddressFamilies=\n" in drop_in
    assert "\nUser=" not in drop_in  # only seccomp settings change


@pytest.mark.parametrize("text,why", [
    (HARDENED.replace("User=daemon\n", ""), "no User=: systemd keeps no capability"),
    (HARDENED.replace("SystemCallFilter=@system-service\nRestrictAddressFamilies=AF_UNIX\n", "ProtectSystem=strict\n"),
     "no seccomp setting"),
    (HARDENED + "PrivateUsers=yes\n", "its own user namespace holds CAP_SYS_ADMIN"),
    (HARDENED.replace("[Service]\nUser=daemon", "[Install]\nUser=daemon\n[Service]"), "User= outside [Service]"),
    (HARDENED.replace("RestrictAddressFamilies=AF_UNIX", "RestrictAddressFamilies=").replace(
        "SystemCallFilter=@system-service", "SystemCallFilter=@system-service\nSystemCallFilter="),
     "the list reset by an empty assignment"),
])
def test_units_that_do_not_need_it(tmp_path, text, why):
    _unit(tmp_path, "/usr/lib/systemd/system", "plain.service", text)
    assert _generate(tmp_path) == {}, why


def test_dynamic_user_and_boolean_settings(tmp_path):
    _unit(tmp_path, "/usr/lib/systemd/system", "dyn.service",
          "[Service]\nDynamicUser=yes\nLockPersonality=yes\nExecStart=/bin/true\n")
    _unit(tmp_path, "/usr/lib/systemd/system", "off.service",
          "[Service]\nUser=x\nLockPersonality=no\nMemoryDenyWriteExecute=false\nExecStart=/bin/true\n")
    assert list(_generate(tmp_path)) == [f"dyn.service.d/{DROP_IN}"]


def test_drop_ins_and_precedence(tmp_path):
    # The vendor unit has no User=; an admin drop-in adds it: now it needs the drop-in.
    _unit(tmp_path, "/usr/lib/systemd/system", "a.service", HARDENED.replace("User=daemon\n", ""))
    _unit(tmp_path, "/etc/systemd/system", "a.service.d/user.conf", "[Service]\nUser=daemon\n")
    # /etc overrides the vendor file of the same name, which had User= and seccomp.
    _unit(tmp_path, "/usr/lib/systemd/system", "b.service", HARDENED)
    _unit(tmp_path, "/etc/systemd/system", "b.service", "[Service]\nExecStart=/bin/true\n")
    assert list(_generate(tmp_path)) == [f"a.service.d/{DROP_IN}"]


def test_aliases_and_masked_units_are_skipped(tmp_path):
    _unit(tmp_path, "/usr/lib/systemd/system", "real.service", HARDENED)
    etc = tmp_path / "image/etc/systemd/system"
    etc.mkdir(parents=True)
    os.symlink("/usr/lib/systemd/system/real.service", etc / "alias.service")
    os.symlink("/dev/null", etc / "masked.service")
    assert list(_generate(tmp_path)) == [f"real.service.d/{DROP_IN}"]


def test_nothing_when_pid_1_holds_cap_sys_admin_or_systemd_is_older(tmp_path):
    _unit(tmp_path, "/usr/lib/systemd/system", "hardened.service", HARDENED)
    assert _generate(tmp_path, capbnd=WITH_SYS_ADMIN) == {}
    assert _generate(tmp_path, version="252") == {}
    assert list(_generate(tmp_path, version="255")) == [f"hardened.service.d/{DROP_IN}"]


def test_runs_under_dash(tmp_path):
    if shutil.which("dash") is None:
        skip_or_fail("dash (Debian's /bin/sh) is not installed")
    _unit(tmp_path, "/usr/lib/systemd/system", "hardened.service", HARDENED)
    late = tmp_path / "late"
    late.mkdir()
    env = {"PATH": "/usr/bin:/bin", "OCI_SYSTEMD_GENERATOR_ROOT": str(tmp_path / "image"),
           "OCI_SYSTEMD_GENERATOR_CAPBND": NO_SYS_ADMIN, "OCI_SYSTEMD_GENERATOR_VERSION": "262"}
    p = subprocess.run(["dash", str(SCRIPT), "n", "e", str(late)], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == ""
    assert (late / "hardened.service.d" / DROP_IN).is_file()


# ---- when the plan binds it -------------------------------------------------------------

def _rootfs(version):
    description = {"/sbin/init": {"symlink": "/lib/systemd/systemd"}, "/lib/systemd/systemd": "file"}
    if version:
        description[f"/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-{version}.so"] = "file"
    return DescribedRootfs(description)


GENERATOR = "/run/systemd/system-generators/oci-systemd-seccomp"


@pytest.mark.parametrize("version,bound", [(252, False), (254, False), (255, True), (262, True), (None, True)])
def test_bound_only_for_systemd_that_needs_it(version, bound):
    result = run(runc_config(), rootfs=_rootfs(version), cgroup="v2")
    assert bool(mounts_at(result, GENERATOR)) == bound
    assert any(s.path == "oci-systemd/seccomp-generator" for s in result.side_files) == bound


def test_not_bound_with_a_user_namespace_which_gets_cap_sys_admin():
    config = runc_config()
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    result = run(config, rootfs=_rootfs(262), cgroup="v2")
    assert mounts_at(result, GENERATOR) == []
    assert "CAP_SYS_ADMIN" in result.config["process"]["capabilities"]["bounding"]


def test_side_file_is_the_policy_script_and_executable():
    result = run(runc_config(), rootfs=_rootfs(262), cgroup="v2")
    (side,) = [s for s in result.side_files if s.path == "oci-systemd/seccomp-generator"]
    assert side.content == SCRIPT.read_bytes() and side.mode == 0o555
    (mount,) = mounts_at(result, GENERATOR)
    assert "noexec" not in mount["options"] and "ro" in mount["options"]
    run_tmpfs = [i for i, m in enumerate(result.config["mounts"]) if m["destination"] == "/run"]
    at = result.config["mounts"].index(mount)
    assert run_tmpfs and run_tmpfs[-1] < at, "the generator must be bound inside the /run tmpfs"


# ---- what it costs ------------------------------------------------------------------------

def _shimmed(root: Path, tools: tuple[str, ...] = ("awk", "mkdir", "readlink")) -> tuple[dict[str, str], Path]:
    """A PATH holding only logging shims of ``tools``: a command the script runs that is not
    one of them fails, and every run of one is a line in the log."""
    shims, log = root / "shims", root / "exec.log"
    shims.mkdir()
    for tool in tools:
        real = shutil.which(tool)
        assert real, f"{tool} is not installed"
        (shims / tool).write_text(f'#!/bin/sh\necho {tool} >> "{log}"\nexec {real} "$@"\n')
        (shims / tool).chmod(0o755)
    return {"PATH": str(shims)}, log


def _units(root: Path, count: int, hardened: int, links: int) -> None:
    for i in range(count):
        _unit(root, "/usr/lib/systemd/system", f"u{i}.service", HARDENED if i < hardened else "[Service]\nExecStart=/x\n")
    etc = root / "image/etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    for i in range(links):
        os.symlink(f"../../../usr/lib/systemd/system/u{i}.service", etc / f"alias{i}.service")


@pytest.mark.parametrize("count", [20, 300])
def test_a_fixed_number_of_processes_however_many_units(tmp_path, count):
    """systemd kills all generators together after 90 s, and PID 1 then exits 255: on a slow
    machine a process per unit used that up (sid's ~160 units, under emulation). One awk,
    one mkdir, one readlink per symlinked unit, whatever the number of units."""
    _units(tmp_path, count, hardened=3, links=2)
    env, log = _shimmed(tmp_path)
    late = tmp_path / "late"
    late.mkdir()
    env.update(OCI_SYSTEMD_GENERATOR_ROOT=str(tmp_path / "image"), OCI_SYSTEMD_GENERATOR_CAPBND=NO_SYS_ADMIN,
               OCI_SYSTEMD_GENERATOR_VERSION="262")
    p = subprocess.run(["/bin/sh", str(SCRIPT), "n", "e", str(late)], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert sorted(f.parent.name for f in late.rglob("*.conf")) == ["u0.service.d", "u1.service.d", "u2.service.d"]
    assert sorted(log.read_text().split()) == ["awk", "mkdir", "readlink", "readlink"]


def test_version_and_bounding_set_read_without_a_process(tmp_path):
    """Without the test variables, the version comes from the image's libsystemd-shared name
    and the bounding set from /proc/self/status, with no process started for either."""
    _unit(tmp_path, "/usr/lib/systemd/system", "hardened.service", HARDENED)
    env, log = _shimmed(tmp_path)
    env["OCI_SYSTEMD_GENERATOR_ROOT"] = str(tmp_path / "image")
    lib = tmp_path / "image/usr/lib/x86_64-linux-gnu/systemd"
    lib.mkdir(parents=True)
    argv = ["/bin/sh", str(SCRIPT), "n", "e", str(tmp_path / "late")]
    bounding = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("CapBnd:"))
    with_sys_admin = bool((int(bounding, 16) >> 21) & 1)
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv:
        argv = [setpriv, "--bounding-set", "-sys_admin", *argv]  # as PID 1's in the container
        with_sys_admin = False
    for version, wanted in (("252.39-1~deb12u1", False), ("262.1-1", not with_sys_admin)):
        shutil.rmtree(tmp_path / "late", ignore_errors=True)
        (tmp_path / "late").mkdir()
        for old in lib.iterdir():
            old.unlink()
        (lib / f"libsystemd-shared-{version}.so").write_text("")
        p = subprocess.run(argv, env=env, capture_output=True, text=True)
        assert p.returncode == 0 and p.stderr == "", p.stderr
        made = (tmp_path / "late/hardened.service.d" / DROP_IN).is_file()
        assert made == wanted, f"systemd {version}, CAP_SYS_ADMIN in the bounding set: {with_sys_admin}"
    assert "sed" not in log.read_text() and "systemctl" not in log.read_text()


def test_assignments_with_spaces_around_the_equals_sign(tmp_path):
    """systemd reads ``User = daemon`` as ``User=daemon``; so does the generator."""
    _unit(tmp_path, "/usr/lib/systemd/system", "spaced.service",
          "[Service]\nUser = daemon\nSystemCallFilter =@system-service\r\nExecStart=/x\n")
    assert list(_generate(tmp_path)) == [f"spaced.service.d/{DROP_IN}"]
