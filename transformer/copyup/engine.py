"""The copy engine: one image directory into one target directory, through fds only.

No path is ever resolved from a root: every entry is opened, created, linked or
stat'ed relative to the fd of the directory that holds it, with O_NOFOLLOW, so an
image symlink (absolute, ``../../etc/shadow``, a loop) is copied as a link and never
followed, and path length never matters (PATH_MAX applies to strings, not to fds).

Metadata is applied in an order the kernel forces: chown first (it clears setuid,
setgid and security.capability), then chmod, then xattrs, then times last (every
other step, and filling a directory, changes them).

The target may already hold directories and mount points the runtime created before
hooks run (parents of bind mounts such as /run/systemd/system/x.service, a nested
tmpfs such as /run/lock). Directories on the target's own mount are merged; anything
on another mount, and any existing non-directory, is left alone and never written
through.
"""

from __future__ import annotations

import errno
import os
import stat

from transformer.errors import CopyUpError
from transformer.fsguard import LIST, open_beneath

# Deeper image trees are refused rather than truncated. Each level holds two fds.
MAX_DEPTH = 128

# O_NOATIME (allowed to root and to the owner): copying must not change the image.
_NOATIME = os.O_NOATIME if os.geteuid() == 0 else 0
_SRC_DIR = LIST | _NOATIME
# O_NONBLOCK|O_NOCTTY: should an entry change type under us, opening a FIFO must not
# hang the hook and opening a tty must not make it ours. fstat then checks the type.
_SRC_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | _NOATIME
_DST_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_SENDFILE_MAX = 0x7FFFF000  # Linux caps one sendfile at this many bytes


NOT_NODEV = "the target tmpfs is not mounted nodev"


class CopyLimits:
    """What one copy may do: how deep it goes, whether it creates device nodes, and
    how it words a refusal."""

    __slots__ = ("max_depth", "allow_devices", "no_devices_reason", "denied_hint")

    def __init__(self, *, max_depth: int = MAX_DEPTH, allow_devices: bool = True,
                 no_devices_reason: str = NOT_NODEV, denied_hint: str = ""):
        self.max_depth = max_depth
        # Device nodes are only re-created on a nodev mount (see copy_tree's caller):
        # on a dev mount an image could hand its container a node it may not mknod.
        # In a user namespace the kernel refuses every mknod of a device.
        self.allow_devices = allow_devices
        self.no_devices_reason = no_devices_reason
        # Appended to "permission denied" style errors: in a user namespace they mean
        # an image owner the namespace does not map (see userns.py).
        self.denied_hint = denied_hint


class Stats:
    """What one copy did (for tests, the benchmark and the docs)."""

    __slots__ = ("dirs", "files", "bytes", "symlinks", "hardlinks", "nodes", "dropped_xattrs", "kept")

    def __init__(self):
        self.dirs = self.files = self.bytes = 0
        self.symlinks = self.hardlinks = self.nodes = 0
        self.dropped_xattrs = 0  # user.* xattrs the target refused as unsupported (see _set_xattr)
        self.kept: list[str] = []  # existing target entries left alone (mounts, runtime files)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_dict(cls, doc: dict) -> Stats:
        """The inverse of as_dict (the user-namespace child reports its Stats as JSON)."""
        stats = cls()
        for k in cls.__slots__:
            setattr(stats, k, doc[k])
        return stats

    def __repr__(self) -> str:
        return (
            f"Stats(dirs={self.dirs}, files={self.files}, bytes={self.bytes}, "
            f"symlinks={self.symlinks}, hardlinks={self.hardlinks}, nodes={self.nodes}, "
            f"dropped_xattrs={self.dropped_xattrs}, kept={len(self.kept)})"
        )


def _show(rel: tuple, name: str | None = None) -> str:
    path = "/".join(rel + ((name,) if name is not None else ()))
    path = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    # Hostile images carry 4096-byte paths; an error line must stay readable.
    return path if len(path) <= 160 else f"{path[:70]}...{path[-70:]} ({len(path)} chars)"


def _mode_name(mode: int) -> str:
    return {
        stat.S_IFCHR: "character device",
        stat.S_IFBLK: "block device",
        stat.S_IFIFO: "FIFO",
        stat.S_IFSOCK: "socket",
    }.get(stat.S_IFMT(mode), f"file of type {stat.S_IFMT(mode):#o}")


def _proc(dir_fd: int, name: str) -> str:
    # Linux has no fd-relative getxattr/setxattr: go through the directory's fd link;
    # with follow_symlinks=False only the final component is looked up, unfollowed.
    return f"/proc/self/fd/{dir_fd}/{name}"


_UNSUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP)


def _set_xattr(dst, key: str, value: bytes, follow_symlinks: bool = True) -> int:
    """setxattr; returns 1 when a ``user.*`` xattr was dropped because the target file
    system does not support that namespace, else 0.  tmpfs takes user.* only from Linux
    6.6 on: on Debian 12's 6.1 an image with one in /run could not start at all, while
    cp -a and runc's tmpcopyup go on without it.  Every other namespace (security.*,
    trusted.*, ACLs) carries meaning the container may rely on, and its failure stays a
    refusal."""
    try:
        os.setxattr(dst, key, value, follow_symlinks=follow_symlinks)
    except OSError as e:
        if e.errno in _UNSUPPORTED and key.startswith("user."):
            return 1
        raise
    return 0


def _copy_xattrs_fd(src: int, dst: int) -> int:
    return sum(_set_xattr(dst, key, os.getxattr(src, key)) for key in os.listxattr(src))


def _copy_xattrs_at(sdir: int, ddir: int, name: str) -> int:
    spath = _proc(sdir, name)
    keys = os.listxattr(spath, follow_symlinks=False)
    if not keys:
        return 0
    dpath = _proc(ddir, name)
    return sum(_set_xattr(dpath, key, os.getxattr(spath, key, follow_symlinks=False), follow_symlinks=False)
               for key in keys)


def apply_metadata_fd(src: int, dst: int, st: os.stat_result) -> int:
    """owner, mode (incl. setuid/setgid/sticky), xattrs, atime+mtime (ns): in this order.
    Returns the number of user.* xattrs dropped (see _set_xattr)."""
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    dropped = _copy_xattrs_fd(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return dropped


class _Copier:
    def __init__(self, dst_root: int, limits: CopyLimits, stats: Stats):
        self.dst_root = dst_root
        self.limits = limits
        self.stats = stats
        self.root_dev = os.fstat(dst_root).st_dev
        self._root_mnt: int | None = None
        # (st_dev, st_ino) of an image inode with st_nlink > 1 -> where we created it.
        self.links: dict[tuple[int, int], tuple[tuple, str]] = {}

    def root_mount_id(self) -> int:
        if self._root_mnt is None:
            from transformer.copyup.mounts import mount_id

            self._root_mnt = mount_id(self.dst_root)
        return self._root_mnt

    # -- directories ------------------------------------------------------------

    def fill(self, sdir: int, ddir: int, rel: tuple, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise CopyUpError(
                f"{_show(rel)}: image tree is deeper than {self.limits.max_depth} levels; refusing"
            )
        with os.scandir(sdir) as it:
            entries = list(it)  # closes scandir's own fd before we descend
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    self.copy_dir(sdir, ddir, name, rel, depth)
                elif entry.is_symlink():
                    self.copy_symlink(sdir, ddir, name, rel)
                elif entry.is_file(follow_symlinks=False):
                    self.copy_file(sdir, ddir, name, rel)
                else:
                    self.copy_node(sdir, ddir, name, rel, os.stat(name, dir_fd=sdir, follow_symlinks=False))
            except OSError as e:
                raise _os_error(e, rel, name, self.limits.denied_hint) from None

    def copy_dir(self, sdir: int, ddir: int, name: str, rel: tuple, depth: int) -> None:
        sfd = _open_source(name, _SRC_DIR, sdir)
        try:
            st = os.fstat(sfd)
            try:
                os.mkdir(name, 0o700, dir_fd=ddir)
            except FileExistsError:
                dfd = self._existing_dir(ddir, name, rel)
                if dfd is None:
                    return
            else:
                dfd = os.open(name, LIST, dir_fd=ddir)
            try:
                self.fill(sfd, dfd, rel + (name,), depth + 1)
                self.stats.dropped_xattrs += apply_metadata_fd(sfd, dfd, st)  # after filling: filling changes mtime
            finally:
                os.close(dfd)
            self.stats.dirs += 1
        finally:
            os.close(sfd)

    def _existing_dir(self, ddir: int, name: str, rel: tuple) -> int | None:
        """An existing target directory we may merge into, or None to leave it alone."""
        try:
            dfd = os.open(name, LIST, dir_fd=ddir)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                self.stats.kept.append(_show(rel, name))
                return None
            raise
        st = os.fstat(dfd)
        # A mount point (nested tmpfs, bind mount) is another mount: never write
        # through it. A bind mount from the same superblock shares st_dev, hence the
        # mount id as well.
        if st.st_dev != self.root_dev or _mount_id_of(dfd) != self.root_mount_id():
            os.close(dfd)
            self.stats.kept.append(_show(rel, name))
            return None
        return dfd

    # -- leaves -------------------------------------------------------------------

    def _hardlink(self, st: os.stat_result, ddir: int, name: str, rel: tuple) -> bool:
        """Link to the first copy of this inode if we made one; else remember this one."""
        key = (st.st_dev, st.st_ino)
        first = self.links.get(key)
        if first is None:
            self.links[key] = (rel, name)
            return False
        first_rel, first_name = first
        # Re-walk from the target root with O_NOFOLLOW: the directories are ours, but
        # the rule stays the same everywhere: no path string is resolved from a root.
        pfd = open_beneath(self.dst_root, first_rel)
        try:
            os.link(first_name, name, src_dir_fd=pfd, dst_dir_fd=ddir, follow_symlinks=False)
        except FileExistsError:
            self.stats.kept.append(_show(rel, name))
            return True
        finally:
            os.close(pfd)
        self.stats.hardlinks += 1
        return True

    def copy_file(self, sdir: int, ddir: int, name: str, rel: tuple) -> None:
        sfd = _open_source(name, _SRC_FILE, sdir)
        try:
            st = os.fstat(sfd)
            if not stat.S_ISREG(st.st_mode):  # changed type since readdir
                return self.copy_node(sdir, ddir, name, rel, st)
            if st.st_nlink > 1 and self._hardlink(st, ddir, name, rel):
                return
            try:
                dfd = os.open(name, _DST_FILE, 0o600, dir_fd=ddir)
            except FileExistsError:
                self._forget(st)
                self.stats.kept.append(_show(rel, name))
                return
            try:
                size = st.st_size
                offset = 0
                while offset < size:
                    # Copy st_size bytes, not "until EOF": a file that grows while we
                    # copy cannot keep the hook busy forever.
                    n = os.sendfile(dfd, sfd, offset, min(size - offset, _SENDFILE_MAX))
                    if n == 0:
                        break
                    offset += n
                self.stats.dropped_xattrs += apply_metadata_fd(sfd, dfd, st)
            finally:
                os.close(dfd)
            self.stats.files += 1
            self.stats.bytes += offset
        finally:
            os.close(sfd)

    def _forget(self, st: os.stat_result) -> None:
        self.links.pop((st.st_dev, st.st_ino), None)

    def copy_symlink(self, sdir: int, ddir: int, name: str, rel: tuple) -> None:
        st = os.stat(name, dir_fd=sdir, follow_symlinks=False)
        if st.st_nlink > 1 and self._hardlink(st, ddir, name, rel):
            return
        target = os.readlink(name, dir_fd=sdir)  # copied verbatim, never resolved
        try:
            os.symlink(target, name, dir_fd=ddir)
        except FileExistsError:
            self._forget(st)
            self.stats.kept.append(_show(rel, name))
            return
        os.chown(name, st.st_uid, st.st_gid, dir_fd=ddir, follow_symlinks=False)
        self.stats.dropped_xattrs += _copy_xattrs_at(sdir, ddir, name)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=ddir, follow_symlinks=False)
        self.stats.symlinks += 1

    def copy_node(self, sdir: int, ddir: int, name: str, rel: tuple, st: os.stat_result) -> None:
        """FIFOs, sockets and device nodes: re-created with mknod, never opened."""
        kind = stat.S_IFMT(st.st_mode)
        if kind in (stat.S_IFCHR, stat.S_IFBLK) and not self.limits.allow_devices:
            raise CopyUpError(
                f"{_show(rel, name)}: image holds a {_mode_name(kind)}, and "
                f"{self.limits.no_devices_reason}; refusing to create it"
            )
        if kind not in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            raise CopyUpError(f"{_show(rel, name)}: unsupported {_mode_name(kind)}")
        if st.st_nlink > 1 and self._hardlink(st, ddir, name, rel):
            return
        try:
            os.mknod(name, kind | 0o600, st.st_rdev, dir_fd=ddir)
        except FileExistsError:
            self._forget(st)
            self.stats.kept.append(_show(rel, name))
            return
        os.chown(name, st.st_uid, st.st_gid, dir_fd=ddir, follow_symlinks=False)
        # Just created by us and not a symlink, so chmod's following is harmless here
        # (Linux has no lchmod before fchmodat2 in 6.6).
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=ddir)
        self.stats.dropped_xattrs += _copy_xattrs_at(sdir, ddir, name)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=ddir, follow_symlinks=False)
        self.stats.nodes += 1


def _mount_id_of(fd: int) -> int:
    from transformer.copyup.mounts import mount_id

    return mount_id(fd)


def _open_source(name: str, flags: int, dir_fd: int) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except PermissionError as e:
        # O_NOATIME needs the owner or CAP_FOWNER over the inode. In a user namespace
        # the copier has neither for an entry whose owner the namespace does not map:
        # read it like anyone else would (its atime then changes).
        if e.errno != errno.EPERM or not flags & _NOATIME:
            raise
        return os.open(name, flags & ~_NOATIME, dir_fd=dir_fd)


_DENIED = (errno.EACCES, errno.EPERM, errno.EINVAL, errno.EOVERFLOW)


def _os_error(e: OSError, rel: tuple, name: str, denied_hint: str = "") -> CopyUpError:
    if e.errno in _NO_SPACE:
        return CopyUpError(
            f"image content does not fit in the target tmpfs (at {_show(rel, name)}): "
            f"{e.strerror}; raise the tmpfs size= option or shrink the image's tree"
        )
    hint = f" ({denied_hint})" if denied_hint and e.errno in _DENIED else ""
    return CopyUpError(f"{_show(rel, name)}: cannot copy: {e.strerror or e}{hint}")


def copy_tree(src: int, dst: int, limits: CopyLimits | None = None, *, root_metadata: bool = True) -> Stats:
    """Copy the content of directory fd ``src`` into directory fd ``dst``, then give
    ``dst`` itself src's owner, mode, xattrs and times (the mount point's metadata)."""
    limits = limits or CopyLimits()
    stats = Stats()
    copier = _Copier(dst, limits, stats)
    st = os.fstat(src)
    try:
        copier.fill(src, dst, (), 0)
        if root_metadata:
            stats.dropped_xattrs += apply_metadata_fd(src, dst, st)
    except OSError as e:
        raise _os_error(e, (), ".", limits.denied_hint) from None
    return stats
