"""Open the target of one copy-up through directory fds, and verify it before
anything is written to it.

runc runs prestart and createRuntime hooks in the host's mount namespace, after the
container's mounts exist and before pivot_root (see docs/copyup.md). So:

- ``<rootfs>/<dest>`` in our own view still shows the image's content: the source;
- ``/proc/<pid>/root/<rootfs>/<dest>`` is the container's new tmpfs: the target;
- ``/proc/<pid>/root/<dest>`` is the *host's* /run. We never open it for writing.

Every component below a trusted prefix (the rootfs, /proc/<pid>/root) is opened with
O_NOFOLLOW relative to its parent's fd, so an image symlink is never followed.
"""

from __future__ import annotations

import os

from transformer.copyup.mounts import TMPFS_MAGIC, fs_magic, mount_id, read_mountinfo
from transformer.copyup.bundle_view import components, walk
from transformer.errors import CopyUpError, StateError
from transformer.fsguard import TOP


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
        proc_root = os.open(f"/proc/{pid}/root", TOP)  # a magic link: followed
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
