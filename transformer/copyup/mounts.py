"""What the kernel says about mounts: lines of /proc/<pid>/mountinfo, the mount id of
an open fd, and the filesystem magic of an open fd.

Shared by target.py (is this the container's own tmpfs?) and cgroup.py (which mount is
the host's cgroup hierarchy?), so the mount table is parsed in one place.
"""

from __future__ import annotations

import errno
import os

TMPFS_MAGIC = 0x01021994  # linux/magic.h
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270


def fs_magic(fd: int) -> int:
    """f_type of fstatfs(fd). os.statvfs has no f_type, hence ctypes (imported only
    when there is something to copy or delegate, to keep the nothing-to-copy start-up
    small)."""
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

    __slots__ = ("mount_id", "parent_id", "dev", "root", "mount_point", "fstype", "source", "super_options")

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
        # Per-superblock options: where a cgroup v1 hierarchy says which it is
        # (name=systemd, or its controllers).
        self.super_options = tuple(_unescape(r[2]).decode(errors="replace").split(",")) if len(r) > 2 else ()

    def __repr__(self) -> str:
        return f"MountInfo({self.mount_id}, {self.fstype}, root={self.root!r}, at={self.mount_point!r})"


def parse_mountinfo(data: bytes) -> list[MountInfo]:
    return [MountInfo(line) for line in data.splitlines() if line.strip()]


def read_mountinfo(pid: int | str) -> list[MountInfo]:
    with open(f"/proc/{pid}/mountinfo", "rb") as f:
        return parse_mountinfo(f.read())
