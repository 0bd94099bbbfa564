"""Delegation of the container's cgroup to its mapped root: /proc/<pid>/cgroup, the
host mount that shows it, the refusals, chowning on fake trees, then on real cgroupfs."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.harness.checks import require_hybrid_host
from tests.harness.copyup import MOUNTINFO_HYBRID as HYBRID
from tests.harness.copyup import MOUNTINFO_PURE_V2 as PURE_V2
from tests.harness.skips import require_root
from transformer.copyup import cgroup
from transformer.copyup.bundle_view import NAMED_SYSTEMD, UNIFIED
from transformer.copyup.mounts import MountInfo, parse_mountinfo
from transformer.errors import CopyUpError

# -- /proc/<pid>/cgroup and the host mount that shows it ----------------------------------------

PROC_HYBRID = """\
9:name=systemd:/oci-systemd-abc
8:pids:/oci-systemd-abc
4:memory:/process_api/4f7a
1:cpu:/
0::/oci-systemd-abc
"""


def test_parse_proc_cgroup():
    assert cgroup.parse_proc_cgroup(PROC_HYBRID) == {NAMED_SYSTEMD: "/oci-systemd-abc", UNIFIED: "/oci-systemd-abc"}
    assert cgroup.parse_proc_cgroup("0::/machine.slice/x.scope\n") == {UNIFIED: "/machine.slice/x.scope"}
    # Co-mounted controllers, and a path that holds colons.
    assert cgroup.parse_proc_cgroup("3:cpu,name=systemd:/a:b:c\n") == {NAMED_SYSTEMD: "/a:b:c"}
    assert cgroup.parse_proc_cgroup("7:name=systemd-x:/a\n2:cpu,cpuacct:/b\n") == {}


def test_mountinfo_super_options():
    m = MountInfo(b"40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n")
    assert m.fstype == "cgroup" and m.super_options == ("rw", "xattr", "name=systemd")
    assert MountInfo(b"1 0 0:1 / / rw - rootfs rootfs\n").super_options == ()


def _locate(view, container, hook="0::/\n1:name=systemd:/\n", table=HYBRID):
    return cgroup.locate(view, cgroup.parse_proc_cgroup(container), cgroup.parse_proc_cgroup(hook),
                         parse_mountinfo(table), 4242)


def test_locate_both_views_on_a_hybrid_host():
    m, parts = _locate(UNIFIED, PROC_HYBRID)
    assert (m.mount_point, parts) == (b"/sys/fs/cgroup/unified", ["oci-systemd-abc"])
    m, parts = _locate(NAMED_SYSTEMD, PROC_HYBRID)
    assert (m.mount_point, parts) == (b"/sys/fs/cgroup/systemd", ["oci-systemd-abc"])
    m, parts = _locate(UNIFIED, "0::/a/b\n", "0::/\n", PURE_V2)
    assert (m.mount_point, parts) == (b"/sys/fs/cgroup", ["a", "b"])


def test_locate_maps_the_path_through_the_mount_root():
    table = b"50 22 0:38 /machine.slice /srv/cg rw - cgroup2 cgroup2 rw\n" + PURE_V2
    m, parts = _locate(UNIFIED, "0::/machine.slice/c1\n", "0::/\n", table)
    assert (m.mount_point, parts) == (b"/srv/cg", ["c1"])
    m, parts = _locate(UNIFIED, "0::/user.slice/c1\n", "0::/\n", table)  # not below /machine.slice
    assert (m.mount_point, parts) == (b"/sys/fs/cgroup", ["user.slice", "c1"])
    only_sub = b"50 22 0:38 /machine.slice /srv/cg rw - cgroup2 cgroup2 rw\n"
    with pytest.raises(CopyUpError, match="no unified cgroup mount in this host's mount table shows /user.slice/c1"):
        _locate(UNIFIED, "0::/user.slice/c1\n", "0::/\n", only_sub)


@pytest.mark.parametrize(
    "view, container, hook, message",
    [
        (UNIFIED, "0::/\n", "0::/x\n", "unified cgroup is the hierarchy's root /"),
        (NAMED_SYSTEMD, "1:name=systemd:/\n", "0::/\n", "name=systemd cgroup is the hierarchy's root /"),
        (UNIFIED, "0::/runtime.slice\n", "0::/runtime.slice\n", "is this hook's own cgroup (the runtime's)"),
        (UNIFIED, "0::/a\n", "0::/a/b/c\n", "is an ancestor of this hook's own cgroup /a/b/c"),
        (NAMED_SYSTEMD, "1:name=systemd:/s\n", "1:name=systemd:/s\n", "is this hook's own cgroup"),
        (UNIFIED, "1:name=systemd:/a\n", "0::/\n", "/proc/4242/cgroup has no unified cgroup line"),
        (NAMED_SYSTEMD, "0::/a\n", "0::/\n", "has no name=systemd cgroup line"),
        (UNIFIED, "0::/../../c\n", "0::/\n", "outside this hook's cgroup namespace"),
    ],
)
def test_locate_refusals(view, container, hook, message):
    with pytest.raises(CopyUpError) as info:
        _locate(view, container, hook)
    assert message in info.value.one_line()


def test_locate_allows_a_sibling_of_the_hook():
    m, parts = _locate(UNIFIED, "0::/a/b2\n", "0::/a/b\n")
    assert parts == ["a", "b2"]
    m, parts = _locate(UNIFIED, "0::/ab\n", "0::/a\n")  # a name prefix is not an ancestor
    assert parts == ["ab"]


def test_delegate_files():
    names = cgroup.delegate_files(UNIFIED)
    assert {"cgroup.procs", "cgroup.threads", "cgroup.subtree_control"} <= set(names)
    assert cgroup.delegate_files(NAMED_SYSTEMD) is None


def test_delegate_files_fallback(monkeypatch, tmp_path):
    monkeypatch.setattr(cgroup, "DELEGATE_FILE", str(tmp_path / "missing"))
    assert cgroup.delegate_files(UNIFIED) == cgroup.DELEGATE_FALLBACK


# -- chowning: tmp directories standing in for cgroupfs ------------------------------------------


def _fake_cgroup(d: Path, outside: Path) -> None:
    d.mkdir()
    for name in ("cgroup.procs", "cgroup.subtree_control", "memory.max", "tasks"):
        (d / name).write_bytes(b"")
    os.symlink(outside, d / "cgroup.threads")  # never followed
    (d / "child").mkdir()
    (d / "child" / "cgroup.procs").write_bytes(b"")


def _owners(d: Path) -> dict[str, int]:
    owners = {p.name: os.lstat(p).st_uid for p in [d, *d.iterdir()]}
    owners["child/cgroup.procs"] = os.lstat(d / "child" / "cgroup.procs").st_uid
    return owners


def _delegate_directory(d, uid, gid, files):
    """cgroup.delegate_directory on an fd of d, closed afterwards."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return cgroup.delegate_directory(fd, uid, gid, files)
    finally:
        os.close(fd)


def test_delegate_directory_unified(tmp_path):
    require_root()
    outside = tmp_path / "outside"
    outside.write_bytes(b"host file")
    d = tmp_path / "cg"
    _fake_cgroup(d, outside)
    done = _delegate_directory(d, 100000, 100001, ("cgroup.procs", "cgroup.threads",
                                                   "cgroup.subtree_control", "memory.oom.group"))
    assert done == [".", "cgroup.procs", "cgroup.subtree_control"]
    assert _owners(d) == {"cg": 100000, "cgroup.procs": 100000, "cgroup.subtree_control": 100000,
                          "memory.max": 0, "tasks": 0, "cgroup.threads": 0, "child": 0, "child/cgroup.procs": 0}
    assert os.stat(d).st_gid == 100001 and os.stat(d / "cgroup.procs").st_gid == 100001
    assert os.stat(outside).st_uid == 0


def test_delegate_directory_v1_takes_the_core_files(tmp_path):
    """Every regular file of the cgroup core; not a controller's (memory.max stands for
    a controller co-mounted with name=systemd), nor a symlink, nor a child."""
    require_root()
    outside = tmp_path / "outside"
    outside.write_bytes(b"host file")
    d = tmp_path / "cg"
    _fake_cgroup(d, outside)
    done = _delegate_directory(d, 100000, 100000, None)
    assert done == [".", "cgroup.procs", "cgroup.subtree_control", "tasks"]
    owners = _owners(d)
    assert owners.pop("cgroup.threads") == 0 and owners.pop("child") == 0
    assert owners.pop("child/cgroup.procs") == 0 and owners.pop("memory.max") == 0
    assert set(owners.values()) == {100000}
    assert os.stat(outside).st_uid == 0


# -- real cgroupfs (this hybrid host: both hierarchies) -----------------------------------------


class _CgroupedProcess:
    """A process of ours in a new cgroup of each given hierarchy; always cleaned up."""

    def __init__(self, hierarchies: list[Path]):
        self.name = f"copyup-test-{uuid.uuid4().hex[:12]}"
        self.dirs = [h / self.name for h in hierarchies]
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        self.proc = subprocess.Popen(["sleep", "600"])
        try:
            for d in self.dirs:
                d.mkdir()
                (d / "cgroup.procs").write_text(str(self.proc.pid))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        self.proc.kill()  # by the pid we started
        self.proc.wait()
        for d in self.dirs:
            if d.is_dir():
                d.rmdir()


def test_delegate_real_cgroups():
    require_hybrid_host()
    with _CgroupedProcess([Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd")]) as c:
        done = cgroup.delegate(c.proc.pid, (UNIFIED, NAMED_SYSTEMD), 100000, 100000)
        unified, named = c.dirs
        assert [(v, w) for v, w, _ in done] == [(UNIFIED, str(unified)), (NAMED_SYSTEMD, str(named))]
        for name in ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
            st = os.stat(unified / name)
            assert (st.st_uid, st.st_gid) == (100000, 100000), name
        assert os.stat(unified / "cgroup.freeze").st_uid == 0  # not on the kernel's delegate list
        for p in [named, *named.iterdir()]:
            assert os.stat(p).st_uid == 100000, p
        # The parents are untouched.
        assert os.stat("/sys/fs/cgroup/unified").st_uid == 0 and os.stat("/sys/fs/cgroup/systemd").st_uid == 0


def test_delegate_refuses_before_chowning_anything():
    """The named hierarchy is fine, the unified one is the root: nothing is chowned."""
    require_hybrid_host()
    with _CgroupedProcess([Path("/sys/fs/cgroup/systemd")]) as c:
        with pytest.raises(CopyUpError, match="unified cgroup is the hierarchy's root"):
            cgroup.delegate(c.proc.pid, (NAMED_SYSTEMD, UNIFIED), 100000, 100000)
        assert os.stat(c.dirs[0]).st_uid == 0


