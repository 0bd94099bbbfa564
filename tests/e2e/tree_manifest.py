"""A content manifest of a directory tree, to prove that nothing touched an image.

For every path (relative, sorted, symlinks never followed, one file system): file type,
full st_mode, uid, gid, size, mtime in nanoseconds, rdev for device nodes, the symlink
target, the sorted xattrs, the SHA-256 of a regular file's content, and the inode number
relative to the other paths of the tree (so hardlinks count: a broken link pair differs).
atime and ctime are left out: reading a tree changes the first, copying it the second.

``manifest(tree)`` returns a dict ``path -> tuple``; ``describe_difference(a, b)`` says
which paths were added, removed or changed, for an assertion message.
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_CHUNK = 1 << 20


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0))
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)  # hashlib releases the GIL on large buffers: threads help
    finally:
        os.close(fd)
    return h.hexdigest()


def _xattrs(path: str) -> tuple:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in sorted(names):
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False).hex()))
        except OSError as e:
            out.append((name, f"<{e.strerror}>"))
    return tuple(out)


def manifest(tree: str | os.PathLike, *, workers: int = 4) -> dict[str, tuple]:
    root = os.fspath(tree)
    root_dev = os.lstat(root).st_dev
    entries: dict[str, tuple] = {}
    regular: list[tuple[str, str]] = []
    inodes: dict[int, str] = {}

    def visit(rel: str, full: str, st: os.stat_result) -> None:
        kind = stat.S_IFMT(st.st_mode)
        extra: tuple = ()
        if stat.S_ISLNK(st.st_mode):
            extra = (os.readlink(full),)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            extra = (st.st_rdev,)
        link_group = ""
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            link_group = inodes.setdefault(st.st_ino, rel)  # first path seen with this inode
        entries[rel] = (kind, st.st_mode, st.st_uid, st.st_gid,
                        st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
                        st.st_mtime_ns, extra, _xattrs(full), link_group)
        if stat.S_ISREG(st.st_mode):
            regular.append((rel, full))

    def walk(rel: str, full: str) -> None:
        with os.scandir(full) as it:
            children = sorted(it, key=lambda e: e.name)
        for e in children:
            crel = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            visit(crel, e.path, st)
            if stat.S_ISDIR(st.st_mode) and st.st_dev == root_dev:
                walk(crel, e.path)

    visit(".", root, os.lstat(root))
    walk("", root)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (rel, _), digest in zip(regular, pool.map(lambda rf: _sha256(rf[1]), regular)):
            entries[rel] = entries[rel] + (digest,)
    return entries


def digest(entries: dict[str, tuple]) -> str:
    h = hashlib.sha256()
    for rel in sorted(entries):
        h.update(repr((rel, entries[rel])).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def describe_difference(before: dict[str, tuple], after: dict[str, tuple], limit: int = 20) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    lines = [f"{len(added)} added, {len(removed)} removed, {len(changed)} changed"]
    lines += [f"  + {p} {after[p][:6]}" for p in added[:limit]]
    lines += [f"  - {p}" for p in removed[:limit]]
    lines += [f"  ~ {p}: {before[p]} -> {after[p]}" for p in changed[:limit]]
    return "\n".join(lines)


if __name__ == "__main__":  # python3 tree_manifest.py DIR
    import sys
    import time

    t0 = time.monotonic()
    m = manifest(Path(sys.argv[1]))
    print(digest(m), len(m), f"{time.monotonic() - t0:.2f}s")
