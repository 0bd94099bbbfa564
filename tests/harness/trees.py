"""One record of a directory tree, to prove what a run changed, copied or left alone.

``snapshot(top)`` maps every path below (and of) top, relative and as bytes (b"" is top
itself), to every property a copy must keep: type, permission bits, owner, mtime and
atime in ns, xattrs, a symlink's target, a regular file's size and SHA-256, a device's
numbers and, for a file with more than one link, the first path (sorted) of its inode,
so that a broken hardlink pair differs.

``manifest(top)`` is the same record without atimes (reading a file may update its
atime, and the tool under test reads) and without crossing into other file systems: it
proves that a tool left a tree (a bundle, an image) alone.

Taking a record changes nothing it records: files and directories are opened with
O_NOATIME where the caller may, and the atime that readlink(2) updates is put back.
Nothing is followed through a symlink, no FIFO is opened (O_NONBLOCK, and only regular
files are read), and an entry that cannot be read is recorded as such, not skipped.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor

Snapshot = dict[bytes, dict]

_CHUNK = 1 << 20
# Hash in threads from this many regular files on (an image has thousands; hashlib
# releases the GIL on large buffers); fewer are hashed faster in this thread.
_THREADED_FROM = 64


def snapshot(top: str | os.PathLike) -> Snapshot:
    """Everything about the tree below top, atimes included, across mount points."""
    return _record(top, atimes=True, one_file_system=False)


def manifest(top: str | os.PathLike) -> Snapshot:
    """The tree below top without atimes, on top's file system only."""
    return _record(top, atimes=False, one_file_system=True)


def without_symlink_atimes(snap: Snapshot) -> Snapshot:
    """A copy's own readlink(2) of the image updates the image's symlink atimes."""
    return {
        rel: {k: v for k, v in info.items() if not (k == "atime_ns" and info["type"] == stat.S_IFLNK)}
        for rel, info in snap.items()
    }


def diff_snapshots(expected: Snapshot, actual: Snapshot) -> list[str]:
    """One line (or three) per path that differs; [] when the two records are equal."""
    out = []
    for rel in sorted(set(expected) | set(actual)):
        e, a = expected.get(rel), actual.get(rel)
        if e != a:
            out.append(f"{rel!r}:\n  expected {e}\n  actual   {a}")
    return out


def describe_difference(before: Snapshot, after: Snapshot, limit: int = 20) -> str:
    """How many paths were added, removed and changed, and the first ``limit`` of each,
    for an assertion message."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    lines = [f"{len(added)} added, {len(removed)} removed, {len(changed)} changed"]
    lines += [f"  + {p!r} {after[p]}" for p in added[:limit]]
    lines += [f"  - {p!r}" for p in removed[:limit]]
    lines += [f"  ~ {p!r}: {before[p]} -> {after[p]}" for p in changed[:limit]]
    return "\n".join(lines)


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---- the walk ----------------------------------------------------------------------------


def _open_noatime(path: bytes, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError:  # O_NOATIME needs the owner or CAP_FOWNER
        return os.open(path, flags)


def _xattrs(path: bytes) -> dict[str, bytes | str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes | str] = {}
    for name in sorted(names):
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            out[name] = f"<{errno.errorcode.get(e.errno, e.errno)}>"
    return out


def _sha256(path: bytes) -> str:
    try:
        fd = _open_noatime(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        return f"<{errno.errorcode.get(e.errno, e.errno)}>"
    h = hashlib.sha256()
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def _record(top: str | os.PathLike, *, atimes: bool, one_file_system: bool) -> Snapshot:
    top = os.fsencode(top)
    top_dev = os.lstat(top).st_dev
    entries: Snapshot = {}
    inodes: dict[tuple[int, int], bytes] = {}
    regular: list[tuple[bytes, bytes]] = []

    def visit(path: bytes, rel: bytes) -> None:
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        info: dict = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                      "mtime_ns": st.st_mtime_ns}
        if atimes:
            info["atime_ns"] = st.st_atime_ns
        info["xattrs"] = _xattrs(path)
        if kind == stat.S_IFLNK:
            info["target"] = os.readlink(path)
            if atimes:  # there is no O_NOATIME for readlink(2): put the atime back
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        elif kind == stat.S_IFREG:
            info["size"] = st.st_size
            regular.append((rel, path))
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if kind != stat.S_IFDIR and st.st_nlink > 1:
            info["inode"] = inodes.setdefault((st.st_dev, st.st_ino), rel)
        entries[rel] = info
        if kind != stat.S_IFDIR or (one_file_system and st.st_dev != top_dev):
            return
        try:
            fd = _open_noatime(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                names = sorted(os.fsencode(n) for n in os.listdir(fd))
            finally:
                os.close(fd)
        except OSError as e:
            info["unreadable"] = errno.errorcode.get(e.errno, e.errno)
            return
        for name in names:  # sorted: the hardlink labels do not depend on the disk's order
            visit(path + b"/" + name, rel + b"/" + name if rel else name)

    visit(top, b"")
    if len(regular) >= _THREADED_FROM:
        with ThreadPoolExecutor(max_workers=4) as pool:
            digests = list(pool.map(lambda rp: _sha256(rp[1]), regular))
    else:
        digests = [_sha256(path) for _, path in regular]
    for (rel, _), digest in zip(regular, digests):
        entries[rel]["sha256"] = digest
    return entries
