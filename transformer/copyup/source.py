"""The image side of a copy-up: <rootfs>/<dest> in the host's view, opened through
directory fds with O_NOFOLLOW on every component below the rootfs.

Kept apart from target.py so the nothing-to-copy path imports only this.
"""

from __future__ import annotations

import errno
import os

from transformer.errors import CopyUpError

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
        import stat

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
