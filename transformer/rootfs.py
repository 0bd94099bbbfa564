"""A read-only look at the image's root filesystem.

Paths are resolved the way the runtime resolves them for the container: inside the
rootfs, as if it were '/'. An absolute link target restarts at the rootfs, '..' stops
at its top, and a link is never followed out of it. The core only ever sees a
RootfsView; HostRootfs (the real tree, opened through directory fds) is built at the
edge, DescribedRootfs (a small JSON description) serves golden cases and tests.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections import deque
from pathlib import Path
from typing import Literal, NamedTuple

from .errors import BundleError
from .fsguard import LIST, TOP, open_beneath

Kind = Literal["missing", "dir", "file", "symlink", "other"]

# Linux's own limit (MAXSYMLINKS): a chain longer than this is a loop for the kernel too.
MAX_SYMLINKS = 40


class ResolveError(Exception):
    """A path cannot be resolved inside the rootfs (a symlink loop or chain too long)."""


class Entry(NamedTuple):
    kind: Kind
    target: str | None = None  # the link text, for symlinks


class RootfsView:
    """Answers questions about paths inside the rootfs. Subclasses implement _entry."""

    label = "rootfs"
    _resolved: dict[str, str | ResolveError]

    def _entry(self, components: tuple[str, ...]) -> Entry:
        """The entry at components, whose parents are real directories (never links)."""
        raise NotImplementedError

    def _names(self, components: tuple[str, ...]) -> tuple[str, ...]:
        """The sorted names in the real directory at components (empty when it is none)."""
        raise NotImplementedError

    def names(self, path: str) -> tuple[str, ...]:
        """The sorted names in the directory path designates, links resolved inside the
        rootfs; empty when it is missing, not a directory or loops."""
        try:
            resolved = self.resolve(path)
        except ResolveError:
            return ()
        components = tuple(c for c in resolved.split("/") if c)
        if components and self._entry(components).kind != "dir":
            return ()
        return self._names(components)

    def resolve(self, path: str) -> str:
        """The absolute path inside the rootfs that path designates, links resolved.

        Memoised: a plan asks about the same few destinations for every mount, and
        the image does not change under one planning run."""
        memo = self.__dict__.setdefault("_resolved", {})
        if path not in memo:
            try:
                memo[path] = self._resolve(path)
            except ResolveError as exc:
                memo[path] = exc
        found = memo[path]
        if isinstance(found, ResolveError):
            raise found
        return found

    def destination(self, path: str) -> str:
        """Where the runtime mounts a destination written as `path`: resolved inside
        the rootfs; a looping one stays as written (the runtime will refuse it)."""
        memo = self.__dict__.setdefault("_destinations", {})
        found = memo.get(path)
        if found is None:
            normal = posixpath.normpath("/" + path.lstrip("/"))
            try:
                found = self.resolve(normal)
            except ResolveError:
                found = normal
            memo[path] = found
        return found

    def _resolve(self, path: str) -> str:
        pending = deque(c for c in path.split("/") if c)
        resolved: list[str] = []
        links = 0
        missing = False  # below a missing or non-directory entry nothing is a link
        while pending:
            name = pending.popleft()
            if name == ".":
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            if missing:
                resolved.append(name)
                continue
            entry = self._entry(tuple(resolved) + (name,))
            if entry.kind == "symlink":
                links += 1
                if links > MAX_SYMLINKS:
                    raise ResolveError(f"{path}: too many levels of symbolic links")
                target = entry.target or ""
                if target.startswith("/"):
                    resolved = []
                pending.extendleft(reversed([c for c in target.split("/") if c]))
                continue
            resolved.append(name)
            if entry.kind != "dir":
                missing = True
        return "/" + "/".join(resolved)

    def exists(self, path: str) -> bool:
        """Whether path designates anything, links resolved inside the rootfs (a
        looping one designates nothing)."""
        try:
            components = tuple(c for c in self.resolve(path).split("/") if c)
        except ResolveError:
            return False
        return not components or self._entry(components).kind != "missing"


class EmptyRootfs(RootfsView):
    """No rootfs to look at: every path is missing, so names are taken literally."""

    label = "no rootfs"

    def _entry(self, components: tuple[str, ...]) -> Entry:
        return Entry("missing")

    def _names(self, components: tuple[str, ...]) -> tuple[str, ...]:
        return ()


class DescribedRootfs(RootfsView):
    """A rootfs described as data: {"/sbin/init": {"symlink": "/lib/systemd/systemd"},
    "/lib/systemd/systemd": "file", "/run": "dir"}. Parents of listed paths are dirs."""

    label = "described rootfs"

    def __init__(self, description: dict[str, object]):
        self._entries: dict[tuple[str, ...], Entry] = {}
        for path, spec in description.items():
            components = tuple(c for c in path.split("/") if c)
            for i in range(1, len(components)):
                self._entries.setdefault(components[:i], Entry("dir"))
            if isinstance(spec, dict) and isinstance(spec.get("symlink"), str):
                self._entries[components] = Entry("symlink", spec["symlink"])
            elif spec in ("file", "dir", "other"):
                self._entries[components] = Entry(spec)  # type: ignore[arg-type]
            else:
                raise ValueError(f"{path}: expected \"file\", \"dir\", \"other\" or {{\"symlink\": TARGET}}")

    def _entry(self, components: tuple[str, ...]) -> Entry:
        return self._entries.get(components, Entry("missing"))

    def _names(self, components: tuple[str, ...]) -> tuple[str, ...]:
        depth = len(components)
        return tuple(sorted(c[-1] for c in self._entries if len(c) == depth + 1 and c[:depth] == components))


# What a look-up below the rootfs may meet instead of a directory it can enter.
_NOT_A_DIRECTORY = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.ENAMETOOLONG)


class HostRootfs(RootfsView):
    """The real tree. Every look-up is relative to an fd of its parent directory, opened
    from the rootfs fd down with O_NOFOLLOW, so a link swapped in under us is never
    followed to the host. Directory fds and answers are cached for the view's life
    (one planning run): the image does not change under it, and a plan asks about the
    same few paths for every mount."""

    def __init__(self, root: Path):
        self.root = root
        self.label = str(root)
        self._fds: dict[tuple[str, ...], int | None] = {}
        self._entries: dict[tuple[str, ...], Entry] = {}
        try:
            self._fds[()] = os.open(root, TOP)
        except OSError as exc:
            raise BundleError(f"rootfs is not a readable directory ({exc.strerror})", file=str(root)) from None

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            if fd is not None:
                os.close(fd)

    def __del__(self) -> None:
        self.close()

    def _dir_fd(self, components: tuple[str, ...]) -> int | None:
        if components in self._fds:
            return self._fds[components]
        parent = self._dir_fd(components[:-1])
        fd = None
        if parent is not None:
            try:
                fd = open_beneath(parent, components[-1:])
            except OSError as exc:
                if exc.errno not in _NOT_A_DIRECTORY:
                    raise
        self._fds[components] = fd
        return fd

    def _entry(self, components: tuple[str, ...]) -> Entry:
        found = self._entries.get(components)
        if found is None:
            found = self._entries[components] = self._lookup(components)
        return found

    def _names(self, components: tuple[str, ...]) -> tuple[str, ...]:
        parent = self._dir_fd(components[:-1])
        if parent is None:
            return ()
        try:
            # O_PATH fds cannot be listed: open this one directory for reading, still
            # without following a link swapped in for it (no name: the rootfs itself).
            fd = open_beneath(parent, components[-1:], LIST)
        except OSError as exc:
            if exc.errno in _NOT_A_DIRECTORY:
                return ()
            raise
        try:
            return tuple(sorted(os.listdir(fd)))
        finally:
            os.close(fd)

    def _lookup(self, components: tuple[str, ...]) -> Entry:
        parent = self._dir_fd(components[:-1])
        if parent is None:
            return Entry("missing")
        name = components[-1]
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ENAMETOOLONG):
                return Entry("missing")
            raise
        if stat.S_ISLNK(st.st_mode):
            return Entry("symlink", os.readlink(name, dir_fd=parent))
        if stat.S_ISDIR(st.st_mode):
            return Entry("dir")
        if stat.S_ISREG(st.st_mode):
            return Entry("file")
        return Entry("other")
