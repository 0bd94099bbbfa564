"""Open the source and the target of one copy-up through directory fds, and verify the
target before anything is written to it.

runc runs prestart and createRuntime hooks in the host's mount namespace, after the
container's mounts exist and before pivot_root (see docs/copyup.md). So:

- ``<rootfs>/<dest>`` in our own view still shows the image's content: the source;
- ``/proc/<pid>/root/<rootfs>/<dest>`` is the container's new tmpfs: the target;
- ``/proc/<pid>/root/<dest>`` is the *host's* /run. We never open it for writing.

Every component below a trusted prefix (the rootfs, /proc/<pid>/root) is opened with
O_NOFOLLOW relative to its parent's fd, so an image symlink is never followed.
"""

from __future__ import annotations

import errno
import os
import stat

from transformer.errors import CopyUpError, StateError

TMPFS_MAGIC = 0x01021994  # linux/magic.h

_WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Reading the image's directories must not change their atime (root may O_NOATIME).
_DIR_NOATIME = _DIR | (os.O_NOATIME if os.geteuid() == 0 else 0)


def components(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _why(dir_fd: int, name: str, err: OSError) -> str:
    """Explain why a component could not be opened as a directory."""
    if err.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return err.strerror or str(err)
        if stat.S_ISLNK(st.st_mode):
            return "is a symlink (not followed)"
        return "is not a directory"
    return err.strerror or str(err)


def walk(
    start_fd: int, parts: list[str], *, label: str, missing_ok: bool = False, noatime: bool = False
) -> int | None:
    """Open start_fd/parts[0]/.../parts[-1] as a readable directory, never following
    a symlink. Returns a new fd (caller closes), or None if missing and missing_ok."""
    cur = os.dup(start_fd)
    try:
        for i, name in enumerate(parts):
            flags = (_DIR_NOATIME if noatime else _DIR) if i == len(parts) - 1 else _WALK
            try:
                nxt = os.open(name, flags, dir_fd=cur)
            except OSError as e:
                if e.errno == errno.ENOENT and missing_ok:
                    return None
                where = "/" + "/".join(parts[: i + 1])
                raise CopyUpError(f"{label} {where}: {_why(cur, name, e)}") from None
            os.close(cur)
            cur = nxt
        if not parts:
            nxt = os.open(".", _DIR, dir_fd=cur)
            os.close(cur)
            cur = nxt
        result, cur = cur, -1
        return result
    finally:
        if cur >= 0:
            os.close(cur)


def open_source(rootfs_fd: int, dest: str) -> int | None:
    """The image's <rootfs>/<dest> as a directory fd, or None if the image has none.

    A symlink anywhere on the way (say /run -> /etc) is refused, not followed: the
    content the user expects in /run is not there, and following it could read the
    host. A missing directory means nothing to copy.
    """
    return walk(rootfs_fd, components(dest), label="image path", missing_ok=True, noatime=True)


def is_empty_dir(fd: int) -> bool:
    with os.scandir(fd) as it:
        for _ in it:
            return False
    return True


def fs_magic(fd: int) -> int:
    """f_type of fstatfs(fd). os.statvfs has no f_type, hence ctypes (imported only
    when there is something to copy, to keep the nothing-to-copy start-up small)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    # struct statfs starts with __fsword_t f_type (a long on the Linux ABIs we run on);
    # 256 bytes is more than any architecture's struct.
    buf = ctypes.create_string_buffer(256)
    if libc.fstatfs(fd, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def mount_id(fd: int) -> int:
    """The mount id of the mount fd lives on (/proc/self/fdinfo, Linux >= 3.15)."""
    with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
        for line in f:
            if line.startswith(b"mnt_id:"):
                return int(line.split()[1])
    raise OSError(errno.ENOTSUP, "no mnt_id in /proc/self/fdinfo")


def _unescape(field: bytes) -> bytes:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if b"\\" not in field:
        return field
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i] == 0x5C and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


class MountInfo:
    """One line of /proc/<pid>/mountinfo (proc(5))."""

    __slots__ = ("mount_id", "parent_id", "dev", "root", "mount_point", "fstype", "source")

    def __init__(self, line: bytes):
        left, _, right = line.rstrip(b"\n").partition(b" - ")
        f = left.split(b" ")
        r = right.split(b" ")
        self.mount_id = int(f[0])
        self.parent_id = int(f[1])
        self.dev = f[2].decode()
        self.root = _unescape(f[3])
        self.mount_point = _unescape(f[4])
        self.fstype = r[0].decode(errors="replace")
        self.source = _unescape(r[1]) if len(r) > 1 else b""


def read_mountinfo(pid: int | str) -> list[MountInfo]:
    with open(f"/proc/{pid}/mountinfo", "rb") as f:
        return [MountInfo(line) for line in f if line.strip()]


def open_target(pid: int, rootfs: str, dest: str, source_fd: int) -> int:
    """The container's tmpfs at /proc/<pid>/root/<rootfs>/<dest>, verified.

    Refused (CopyUpError) unless: it is a tmpfs (statfs magic); it is exactly the
    mount the container has on <rootfs>/<dest> (not a parent tmpfs shown through a
    missing mount point); and its superblock appears nowhere in our own, the host's,
    mount table (so it is not the host's /run or /dev/shm bind-mounted in), and its
    device differs from the image's and from /proc/<pid>/root/<dest>.
    """
    label = f"container {dest}"
    try:
        proc_root = os.open(f"/proc/{pid}/root", _WALK & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        raise StateError(f"pid {pid} is gone: the container's process has exited") from None
    except OSError as e:
        raise StateError(f"pid {pid}: cannot open /proc/{pid}/root: {e.strerror}") from None
    try:
        fd = walk(proc_root, components(rootfs) + components(dest), label="container rootfs")
    finally:
        os.close(proc_root)
    try:
        _verify(fd, pid, rootfs, dest, source_fd, label)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _verify(fd: int, pid: int, rootfs: str, dest: str, source_fd: int, label: str) -> None:
    magic = fs_magic(fd)
    if magic != TMPFS_MAGIC:
        raise CopyUpError(f"{label}: not a tmpfs (filesystem magic {magic:#x}); refusing to write")
    st = os.fstat(fd)
    if st.st_dev == os.fstat(source_fd).st_dev:
        raise CopyUpError(f"{label}: same filesystem as the image; refusing to write")
    try:
        host_view = os.stat(f"/proc/{pid}/root{dest}")
    except OSError:
        host_view = None
    if host_view is not None and host_view.st_dev == st.st_dev:
        raise CopyUpError(f"{label}: is the host's {dest}; refusing to write")
    mnt = mount_id(fd)
    expected = (rootfs.rstrip("/") + dest).encode("utf-8", "surrogateescape")
    try:
        table = read_mountinfo(pid)
    except FileNotFoundError:
        raise StateError(f"pid {pid} is gone: the container's process has exited") from None
    entry = next((m for m in table if m.mount_id == mnt), None)
    if entry is None or entry.mount_point != expected:
        raise CopyUpError(f"{label}: no tmpfs is mounted there in the container; refusing to write")
    if entry.fstype != "tmpfs" or entry.root != b"/":
        raise CopyUpError(f"{label}: mount is {entry.fstype} {entry.root!r}, not a fresh tmpfs")
    for host in read_mountinfo("self"):
        if host.dev == entry.dev:
            raise CopyUpError(
                f"{label}: this tmpfs is also mounted in the host namespace "
                f"({host.mount_point.decode(errors='replace')}); refusing to write"
            )
