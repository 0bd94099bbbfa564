"""The copy engine on temporary directories: fidelity and hostile trees."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tests.harness.copyup import build_fidelity_tree
from tests.harness.mounts import tmpfs
from tests.harness.skips import require_root
from tests.harness.trees import diff_snapshots, sha256_file, snapshot, without_symlink_atimes
from transformer.copyup.engine import CopyLimits, copy_tree
from transformer.errors import CopyUpError

IS_ROOT = os.geteuid() == 0


def _copy(src: Path, dst: Path, limits: CopyLimits | None = None):
    dst.mkdir(exist_ok=True)
    sfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | (os.O_NOATIME if IS_ROOT else 0))
    dfd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return copy_tree(sfd, dfd, limits)
    finally:
        os.close(sfd)
        os.close(dfd)


def test_fidelity_without_root(tmp_path):
    """Everything an unprivileged user can create survives, byte for byte, ns for ns."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_fidelity_tree(src, root=False)
    before = snapshot(src)
    stats = _copy(src, dst)
    assert diff_snapshots(before, snapshot(dst)) == []
    # The image is not changed (atimes included, but for symlinks: see the docs).
    assert without_symlink_atimes(snapshot(src)) == without_symlink_atimes(before)
    assert stats.hardlinks == 1 and stats.symlinks == 6 and stats.nodes == 2


def test_fidelity_with_root(tmp_path):
    """Owners, devices, security.capability: the properties only root can set."""
    require_root()
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_fidelity_tree(src, root=True)
    before = snapshot(src)
    assert before[b"marker"]["uid"] == 1000 and before[b"marker"]["mode"] == 0o640
    assert "security.capability" in before[b"cap"]["xattrs"]
    stats = _copy(src, dst)
    after = snapshot(dst)
    assert diff_snapshots(before, after) == []
    assert after[b"suid"]["mode"] == 0o4755 and after[b"sgid"]["mode"] == 0o2750
    assert after[b"sticky"]["mode"] == 0o1777
    assert after[b""]["mode"] == 0o751 and after[b""]["uid"] == 1000  # the mount point itself
    assert after[b"null"]["rdev"] == (1, 3) and after[b"loop0"]["type"] == stat.S_IFBLK
    assert after[b"sub/marker-hardlink"]["inode"] == b"marker"
    assert stats.nodes == 4


def test_capability_survives_chown_order(tmp_path):
    """chown clears security.capability, so it must be set after chown: a file owned
    by a non-root user keeps its capability."""
    require_root()
    src = tmp_path / "src"
    src.mkdir()
    f = src / "ping"
    f.write_bytes(b"x")
    os.chown(f, 1000, 1000)
    f.chmod(0o4755)
    from tests.harness.copyup import CAP_NET_BIND_SERVICE

    os.setxattr(f, "security.capability", CAP_NET_BIND_SERVICE)
    _copy(src, tmp_path / "dst")
    out = tmp_path / "dst" / "ping"
    assert os.getxattr(out, "security.capability") == CAP_NET_BIND_SERVICE
    assert stat.S_IMODE(out.stat().st_mode) == 0o4755 and out.stat().st_uid == 1000


def test_devices_refused_when_not_allowed(tmp_path):
    require_root()
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "sda", stat.S_IFBLK | 0o600, os.makedev(8, 0))
    with pytest.raises(CopyUpError, match="block device.*not mounted nodev"):
        _copy(src, tmp_path / "dst", CopyLimits(allow_devices=False))
    assert not (tmp_path / "dst" / "sda").exists()


def test_hostile_links_are_copied_not_followed(tmp_path):
    canary = tmp_path / "host-secret"
    canary.write_bytes(b"host secret\n")
    digest = sha256_file(canary)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    os.symlink(str(canary), src / "abs")
    os.symlink("../../../../../../" + str(canary).lstrip("/"), src / "d" / "up")
    os.symlink("/", src / "root")
    os.symlink("self", src / "self")
    # The image's link to a directory must not make the engine descend into the host.
    os.symlink(str(tmp_path), src / "hostdir")
    stats = _copy(src, tmp_path / "dst")
    dst = tmp_path / "dst"
    assert os.readlink(dst / "abs") == str(canary)
    assert os.readlink(dst / "d" / "up").endswith("host-secret")
    assert os.readlink(dst / "self") == "self"
    assert os.readlink(dst / "hostdir") == str(tmp_path)
    assert stats.symlinks == 5 and stats.files == 0
    assert sha256_file(canary) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "host-secret", "src"]


def test_names_with_newlines_and_4096_byte_paths(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # 20 levels of 250-byte names: a 5000-byte relative path, beyond PATH_MAX.
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    names = [("n\n" + str(i)).ljust(250, "x") for i in range(20)]
    for name in names:
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    leaf = os.open("leaf\nfile", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(leaf, b"deep")
    os.close(leaf)
    os.close(fd)
    assert sum(len(n) + 1 for n in names) > 4096
    _copy(src, tmp_path / "dst")
    fd = os.open(tmp_path / "dst", os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        os.close(fd)
        fd = nfd
    leaf = os.open("leaf\nfile", os.O_RDONLY, dir_fd=fd)
    assert os.read(leaf, 100) == b"deep"
    os.close(leaf)
    os.close(fd)


def test_tree_deeper_than_allowed_is_refused(tmp_path):
    src = tmp_path / "src"
    deep = src
    for _ in range(12):
        deep = deep / "d"
    deep.mkdir(parents=True)
    with pytest.raises(CopyUpError, match="deeper than 10 levels"):
        _copy(src, tmp_path / "dst", CopyLimits(max_depth=10))
    _copy(src, tmp_path / "dst2", CopyLimits(max_depth=12))  # the limit is exact
    assert (tmp_path / "dst2" / ("d/" * 12)).is_dir()


def test_default_depth_limit(tmp_path):
    from transformer.copyup.engine import MAX_DEPTH

    src = tmp_path / "src"
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.mkdir("src", dir_fd=fd)
    for _ in range(MAX_DEPTH + 2):
        nfd = os.open("src" if _ == 0 else "d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
        os.mkdir("d", dir_fd=fd)
    os.close(fd)
    with pytest.raises(CopyUpError, match=f"deeper than {MAX_DEPTH} levels"):
        _copy(src, tmp_path / "dst")


def test_file_larger_than_tmpfs_does_not_fit(tmp_path):
    require_root()
    src = tmp_path / "src"
    src.mkdir()
    (src / "small").write_bytes(b"s")
    (src / "huge").write_bytes(b"\1" * (3 << 20))
    with tmpfs(tmp_path / "t", "size=1m,nodev") as t:
        with pytest.raises(CopyUpError, match="does not fit") as info:
            _copy(src, t)
        assert "\n" not in info.value.one_line()


def test_too_many_inodes_does_not_fit(tmp_path):
    require_root()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}").write_bytes(b"")
    with tmpfs(tmp_path / "t", "nr_inodes=16,nodev") as t:
        with pytest.raises(CopyUpError, match="does not fit"):
            _copy(src, t)


def test_merge_never_writes_into_other_mounts(tmp_path):
    """What runc leaves before hooks run: a nested tmpfs (/run/lock) and a read-only
    bind mount of a file inside the tmpfs (a masked unit). The /run pass merges into
    the parent directories, keeps out of both mounts, and the /run/lock pass fills
    its own mount."""
    require_root()
    src = tmp_path / "src"
    (src / "lock").mkdir(parents=True)
    (src / "lock" / "lockfile").write_bytes(b"image lock")
    (src / "lock").chmod(0o1777)
    unitdir = src / "systemd" / "system"
    unitdir.mkdir(parents=True)
    (unitdir / "masked.service").write_bytes(b"image unit, must not land on the bind mount")
    (unitdir / "other.service").write_bytes(b"other")
    hostfile = tmp_path / "empty-mask"
    hostfile.write_bytes(b"")
    with tmpfs(tmp_path / "t", "nodev,mode=755") as t:
        (t / "systemd" / "system").mkdir(parents=True)
        (t / "systemd" / "system" / "masked.service").write_bytes(b"")
        (t / "lock").mkdir()
        subprocess_run(["mount", "--bind", "-o", "ro", str(hostfile), str(t / "systemd/system/masked.service")])
        try:
            with tmpfs(t / "lock", "nodev"):
                stats = _copy(src, t)
                assert sorted(stats.kept) == ["lock", "systemd/system/masked.service"]
                assert list((t / "lock").iterdir()) == []
                assert (t / "systemd/system/other.service").read_bytes() == b"other"
                assert hostfile.read_bytes() == b""
                _copy(src / "lock", t / "lock")
                assert (t / "lock" / "lockfile").read_bytes() == b"image lock"
                assert stat.S_IMODE((t / "lock").stat().st_mode) == 0o1777
        finally:
            subprocess_run(["umount", str(t / "systemd/system/masked.service")])


def test_existing_entries_are_kept(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"image")
    (src / "g").write_bytes(b"image")
    (dst / "d").mkdir(parents=True)
    (dst / "g").write_bytes(b"runtime")
    stats = _copy(src, dst)
    assert (dst / "g").read_bytes() == b"runtime"
    assert (dst / "d" / "f").read_bytes() == b"image"
    assert stats.kept == ["g"]


def test_non_regular_source_top_type_is_checked(tmp_path):
    """A hardlinked FIFO stays one inode with two names."""
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "p")
    os.link(src / "p", src / "q")
    _copy(src, tmp_path / "dst")
    a, b = os.lstat(tmp_path / "dst/p"), os.lstat(tmp_path / "dst/q")
    assert stat.S_ISFIFO(a.st_mode) and a.st_ino == b.st_ino


def subprocess_run(argv):
    import subprocess

    subprocess.run(argv, check=True)


def test_enospc_errno_mapping():
    from transformer.copyup.engine import _os_error

    e = _os_error(OSError(errno.ENOSPC, "No space left on device"), ("a",), "b")
    assert "does not fit" in e.message and "a/b" in e.message
    e = _os_error(OSError(errno.EACCES, "Permission denied"), (), "x")
    assert "does not fit" not in e.message and "Permission denied" in e.message


def _unsupported_namespace(monkeypatch, namespace: str) -> None:
    """setxattr of ``namespace``.* fails with EOPNOTSUPP, as tmpfs answers user.* before
    Linux 6.6 (Debian 12's 6.1, a test guest's kernel)."""
    real = os.setxattr

    def setxattr(path, key, value, *args, **kwargs):
        if key.startswith(namespace + "."):
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        return real(path, key, value, *args, **kwargs)

    monkeypatch.setattr(os, "setxattr", setxattr)


def test_unsupported_user_xattrs_are_dropped_and_counted(tmp_path, monkeypatch):
    """A target without user.* xattrs (tmpfs before 6.6): the copy goes on without them,
    counts them, and keeps everything else, on files, directories and the top."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"content")
    for p in (src, src / "d", src / "d" / "f"):
        os.setxattr(p, "user.marker", b"1")
    _unsupported_namespace(monkeypatch, "user")
    stats = _copy(src, tmp_path / "dst")
    assert stats.dropped_xattrs == 3 and stats.files == 1 and stats.dirs == 1
    assert (tmp_path / "dst" / "d" / "f").read_bytes() == b"content"
    assert os.listxattr(tmp_path / "dst" / "d" / "f") == []


def test_unsupported_security_xattr_still_refuses(tmp_path, monkeypatch):
    """Only user.* is dropped: a security.* xattr the target cannot hold refuses the copy."""
    require_root()
    from tests.harness.copyup import CAP_NET_BIND_SERVICE

    src = tmp_path / "src"
    src.mkdir()
    (src / "ping").write_bytes(b"x")
    os.setxattr(src / "ping", "security.capability", CAP_NET_BIND_SERVICE)
    _unsupported_namespace(monkeypatch, "security")
    with pytest.raises(CopyUpError, match="ping: cannot copy"):
        _copy(src, tmp_path / "dst")
