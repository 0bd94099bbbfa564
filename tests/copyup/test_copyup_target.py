"""Target verification without runc: a process in its own mount namespace with tmpfs
mounts on <rootfs>/<dest>, as runc's init is when prestart hooks run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.copyup import build_fidelity_tree, state_json, write_config
from tests.harness.mounts import private_tmpfs_holder, tmpfs
from tests.harness.runner import copyup
from tests.harness.skips import require_root
from tests.harness.trees import diff_snapshots, snapshot
from transformer.copyup.mounts import MountInfo, _unescape


def _bundle(tmp_path: Path) -> tuple[Path, Path]:
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    write_config(bundle)
    return bundle, rootfs


def test_copy_into_private_tmpfs(tmp_path):
    require_root()
    bundle, rootfs = _bundle(tmp_path)
    build_fidelity_tree(rootfs / "run", root=True)
    (rootfs / "run" / "lock").mkdir()
    (rootfs / "run" / "lock" / "l").write_bytes(b"lock")
    before = snapshot(rootfs / "run")
    with private_tmpfs_holder(rootfs, [("/run", "nodev,mode=700"), ("/run/lock", "nodev")]) as pid:
        proc = copyup(["--stage", "prestart", "/run", "/run/lock"], state_json(pid, bundle))
        assert proc.returncode == 0, proc.stderr
        seen = snapshot(f"/proc/{pid}/root{rootfs}/run")
    assert diff_snapshots(before, seen) == []
    assert seen[b"lock"]["mode"] == before[b"lock"]["mode"]


def test_host_tmpfs_bound_in_is_refused(tmp_path):
    """A container mount that is a tmpfs the host also has (its /dev/shm, its /run
    bind-mounted in) passes the magic check; it must still be refused."""
    require_root()
    bundle, rootfs = _bundle(tmp_path)
    (rootfs / "run").mkdir()
    (rootfs / "run" / "f").write_bytes(b"image")
    with tmpfs(tmp_path / "hostshm") as hostshm:
        bind = f"mount --bind '{hostshm}' '{rootfs}/run' || exit 9; "
        with private_tmpfs_holder(rootfs, [], extra=bind) as pid:
            proc = copyup(["--stage", "prestart", "/run"], state_json(pid, bundle))
            assert proc.returncode == 1, proc.stderr
            assert b"also mounted in the host namespace" in proc.stderr, proc.stderr
        assert os.listdir(hostshm) == []


def test_tmpfs_on_the_image_path_in_host_view_is_refused(tmp_path):
    """If <rootfs>/run is a tmpfs in our own view, source and target are one."""
    require_root()
    bundle, rootfs = _bundle(tmp_path)
    with tmpfs(rootfs / "run") as run:
        (run / "f").write_bytes(b"x")
        proc = copyup(["--stage", "prestart", "/run"], state_json(os.getpid(), bundle))
        assert proc.returncode == 1 and b"refusing to write" in proc.stderr, proc.stderr
        assert os.listdir(run) == ["f"]


def test_missing_mount_point_is_refused(tmp_path):
    """/run/lock given but not mounted: the walk lands in /run's tmpfs, which is not
    the mount the DEST names."""
    require_root()
    bundle, rootfs = _bundle(tmp_path)
    (rootfs / "run" / "lock").mkdir(parents=True)
    (rootfs / "run" / "lock" / "f").write_bytes(b"x")
    with private_tmpfs_holder(rootfs, [("/run", "nodev")]) as pid:
        proc = copyup(["--stage", "prestart", "/run/lock"], state_json(pid, bundle))
        assert proc.returncode == 1 and b"container rootfs" in proc.stderr, proc.stderr
        os.mkdir(f"/proc/{pid}/root{rootfs}/run/lock")
        proc = copyup(["--stage", "prestart", "/run/lock"], state_json(pid, bundle))
        assert proc.returncode == 1 and b"no tmpfs is mounted there" in proc.stderr, proc.stderr
        assert os.listdir(f"/proc/{pid}/root{rootfs}/run/lock") == []


def test_devices_need_a_nodev_tmpfs(tmp_path):
    require_root()
    bundle, rootfs = _bundle(tmp_path)
    (rootfs / "run").mkdir()
    os.mknod(rootfs / "run" / "sda", 0o60600, os.makedev(8, 0))
    with private_tmpfs_holder(rootfs, [("/run", "dev")]) as pid:
        proc = copyup(["--stage", "prestart", "/run"], state_json(pid, bundle))
        assert proc.returncode == 1 and b"not mounted nodev" in proc.stderr, proc.stderr
    with private_tmpfs_holder(rootfs, [("/run", "nodev")]) as pid:
        proc = copyup(["--stage", "prestart", "/run"], state_json(pid, bundle))
        assert proc.returncode == 0, proc.stderr
        assert os.stat(f"/proc/{pid}/root{rootfs}/run/sda").st_rdev == os.makedev(8, 0)


def test_default_destinations_mode(tmp_path):
    """No DEST (hooks.d): the tmpfs mounts of config.json on the default list."""
    require_root()
    bundle, rootfs = _bundle(tmp_path)
    write_config(bundle, [{"destination": "/tmp", "type": "tmpfs"}, {"destination": "/srv", "type": "tmpfs"}])
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp" / "keep").write_bytes(b"keep")
    (rootfs / "srv").mkdir()
    (rootfs / "srv" / "no").write_bytes(b"not on the default list")
    with private_tmpfs_holder(rootfs, [("/tmp", "nodev"), ("/srv", "nodev")]) as pid:
        proc = copyup(["--stage", "prestart"], state_json(pid, bundle, status="created", root=str(rootfs)))
        assert proc.returncode == 0, proc.stderr
        assert os.listdir(f"/proc/{pid}/root{rootfs}/tmp") == ["keep"]
        assert os.listdir(f"/proc/{pid}/root{rootfs}/srv") == []


def test_mountinfo_parsing():
    line = rb"36 35 0:52 / /b/root\040fs/run rw,nosuid - tmpfs tmp\134fs rw,size=10k" + b"\n"
    m = MountInfo(line)
    assert (m.mount_id, m.parent_id, m.dev, m.root) == (36, 35, "0:52", b"/")
    assert m.mount_point == b"/b/root fs/run" and m.fstype == "tmpfs" and m.source == b"tmp\\fs"
    assert _unescape(rb"a\012b\134") == b"a\nb\\"


@pytest.mark.parametrize("pid", ["self"])
def test_own_mountinfo_reads(pid):
    from transformer.copyup.mounts import read_mountinfo

    table = read_mountinfo(pid)
    assert any(m.mount_point == b"/" for m in table)
