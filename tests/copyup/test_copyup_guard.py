"""The host-kind guard, run on every start: a bundle whose cgroup view this host cannot
give (prepared on or for another kind of host) is refused with one line, exit 1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.harness.checks import require_hybrid_host
from tests.harness.copyup import (
    MOUNTINFO_HYBRID as HYBRID,
    MOUNTINFO_LEGACY as LEGACY,
    MOUNTINFO_NO_CGROUPS as NO_CGROUPS,
    MOUNTINFO_PURE_V2 as PURE_V2,
    state_json,
    write_config,
)
from tests.harness.runner import HOOK_ARGV, copyup, isolated_python
from transformer.copyup.bundle_view import (
    NAMED_SYSTEMD,
    UNIFIED,
    cgroup_views,
    check_host_kind,
    host_cgroup_hierarchies,
    read_host_cgroup_hierarchies,
)
from transformer.errors import ConfigError, CopyUpError

CGROUP2_MOUNT = {"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup", "options": ["rw"]}
RUNC_CGROUP_MOUNT = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]}
SYSTEMD_BIND = {"destination": "/sys/fs/cgroup/systemd", "type": "bind", "source": "/sys/fs/cgroup/systemd/x",
                "options": ["rbind", "rw"]}


# -- which view config.json asks for ----------------------------------------------------------


@pytest.mark.parametrize(
    "mounts, views",
    [
        ([], ()),
        ([RUNC_CGROUP_MOUNT], ()),  # runc's default spec: neither view
        ([CGROUP2_MOUNT], (UNIFIED,)),
        ([dict(CGROUP2_MOUNT, destination="/sys/fs/cgroup/")], (UNIFIED,)),
        ([CGROUP2_MOUNT, RUNC_CGROUP_MOUNT], ()),  # the last mount on /sys/fs/cgroup wins
        ([RUNC_CGROUP_MOUNT, CGROUP2_MOUNT], (UNIFIED,)),
        ([RUNC_CGROUP_MOUNT, SYSTEMD_BIND], (NAMED_SYSTEMD,)),
        ([CGROUP2_MOUNT, SYSTEMD_BIND], (UNIFIED, NAMED_SYSTEMD)),
    ],
)
def test_cgroup_views(mounts, views):
    assert cgroup_views({"mounts": mounts}) == views


def test_cgroup_views_rejects_bad_mounts():
    with pytest.raises(ConfigError) as info:
        cgroup_views({"mounts": {"a": 1}})
    assert info.value.one_line() == "config.json: /mounts: must be a list"
    with pytest.raises(ConfigError) as info:
        cgroup_views({"mounts": [RUNC_CGROUP_MOUNT, {"type": "bind", "destination": 7}]})
    assert info.value.pointer == "/mounts/1/destination"


# -- the guard ---------------------------------------------------------------------------------


def test_host_hierarchies():
    assert host_cgroup_hierarchies(HYBRID) == {"cgroup", "cgroup2", NAMED_SYSTEMD}
    assert host_cgroup_hierarchies(LEGACY) == {"cgroup", NAMED_SYSTEMD}
    assert host_cgroup_hierarchies(PURE_V2) == {"cgroup2"}
    assert host_cgroup_hierarchies(NO_CGROUPS) == frozenset()
    # A v1 hierarchy named otherwise is not name=systemd.
    other = b"40 31 0:37 / /x rw - cgroup cgroup rw,name=systemd-not\n"
    assert host_cgroup_hierarchies(other) == {"cgroup"}
    # The helper's own table parses (whatever this host is).
    assert read_host_cgroup_hierarchies() <= {"cgroup", "cgroup2", NAMED_SYSTEMD}


@pytest.mark.parametrize("host", [HYBRID, LEGACY, PURE_V2, NO_CGROUPS])
def test_guard_passes_what_the_host_has(host):
    kinds = host_cgroup_hierarchies(host)
    check_host_kind((), kinds)  # nothing asked for, nothing refused
    if "cgroup2" in kinds:
        check_host_kind((UNIFIED,), kinds)
    if NAMED_SYSTEMD in kinds:
        check_host_kind((NAMED_SYSTEMD,), kinds)


def test_guard_refuses_cgroup2_on_a_legacy_host():
    with pytest.raises(CopyUpError) as info:
        check_host_kind((UNIFIED,), host_cgroup_hierarchies(LEGACY))
    assert info.value.one_line() == (
        "config.json mounts cgroup2 on /sys/fs/cgroup (prepared for a host with cgroup2), but this host has "
        "only cgroup v1 hierarchies: systemd would share the host's unified root; prepare the bundle on this "
        "host (oci-systemd apply --cgroup auto)"
    )
    assert info.value.exit_code == 1


def test_guard_refuses_the_systemd_bind_on_a_pure_v2_host():
    with pytest.raises(CopyUpError) as info:
        check_host_kind((NAMED_SYSTEMD,), host_cgroup_hierarchies(PURE_V2))
    line = info.value.one_line()
    assert line.startswith("config.json binds /sys/fs/cgroup/systemd (prepared for a cgroup v1 host)")
    assert "pure cgroup v2 host" in line and line.endswith("(oci-systemd apply --cgroup auto)")


def test_guard_on_a_host_without_cgroups():
    with pytest.raises(CopyUpError, match="no cgroup2 hierarchy mounted"):
        check_host_kind((UNIFIED,), frozenset())
    with pytest.raises(CopyUpError, match="has no name=systemd hierarchy: "):
        check_host_kind((NAMED_SYSTEMD,), frozenset({"cgroup"}))


# The same refusals from the real helper: runs in a private mount namespace made into a
# legacy host (the unified mount removed) or a pure v2 host (cgroup2 on /sys/fs/cgroup).
_AS_LEGACY = "mount --make-rprivate / && umount -l /sys/fs/cgroup/unified && exec \"$@\""
_AS_PURE_V2 = "mount --make-rprivate / && umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\""


def _helper_in(script: str, bundle: Path, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *HOOK_ARGV, *argv],
                          input=state_json(os.getpid(), bundle), capture_output=True, timeout=60)


@pytest.mark.parametrize(
    "script, mounts, expected",
    [
        (_AS_LEGACY, [CGROUP2_MOUNT], "but this host has only cgroup v1 hierarchies"),
        (_AS_PURE_V2, [RUNC_CGROUP_MOUNT, SYSTEMD_BIND], "(it is a pure cgroup v2 host)"),
        (_AS_LEGACY, [RUNC_CGROUP_MOUNT, SYSTEMD_BIND], None),
        (_AS_PURE_V2, [CGROUP2_MOUNT], None),
    ],
)
def test_guard_in_the_helper_process(tmp_path, script, mounts, expected):
    """Exit 1 and one line; it runs with and without DEST, before anything else."""
    require_hybrid_host()
    (tmp_path / "rootfs").mkdir()
    write_config(tmp_path, [{"destination": "/run", "type": "tmpfs"}] + mounts)
    for argv in (["--stage", "prestart"], ["--stage", "prestart", "/run"]):
        proc = _helper_in(script, tmp_path, argv)
        err = proc.stderr.decode()
        if expected is None:
            assert (proc.returncode, err) == (0, "")
        else:
            assert proc.returncode == 1, err
            assert err.startswith("oci-systemd-copyup: config.json ") and err.count("\n") == 1, err
            assert expected in err and "oci-systemd apply --cgroup auto" in err


def test_delegation_module_is_not_loaded_by_the_guard(tmp_path):
    """Every start runs the guard; only a user namespace loads cgroup.py (and ctypes)."""
    write_config(tmp_path, [CGROUP2_MOUNT, SYSTEMD_BIND])
    (tmp_path / "rootfs").mkdir()
    argv, env = isolated_python(
        "import sys; import transformer.copyup.main as m; rc = m.main(['--stage', 'prestart']);"
        "print(rc, ' '.join(sorted(sys.modules)))"
    )
    proc = subprocess.run(argv, env=env, input=state_json(os.getpid(), tmp_path), capture_output=True, check=True)
    rc, modules = proc.stdout.decode().split(" ", 1)
    kinds = read_host_cgroup_hierarchies()
    assert rc == ("0" if {"cgroup2", NAMED_SYSTEMD} <= kinds else "1"), proc.stderr
    loaded = set(modules.split())
    assert not loaded & {"transformer.copyup.cgroup", "transformer.copyup.mounts", "transformer.copyup.userns",
                         "ctypes", "re", "json.decoder"}


def test_helper_refuses_a_config_without_mounts_list(tmp_path):
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text('{"root": {"path": "rootfs"}, "mounts": {"a": 1}}')
    proc = copyup(["--stage", "prestart"], state_json(os.getpid(), tmp_path))
    assert proc.returncode == 2 and b"/mounts: must be a list" in proc.stderr
