"""Where a mount goes in `mounts`, and whether one is already there.

The runtime mounts in list order, so a mount hides every earlier mount nested under
its destination. A new tmpfs on /run must therefore come *before* podman's bind of
/run/.containerenv, not after it.
"""

from __future__ import annotations

import posixpath
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .draft import Draft


@lru_cache(maxsize=4096)  # a plan normalises the same few destinations hundreds of times
def normalise(path: str) -> str:
    # lstrip first: posixpath.normpath keeps a leading '//' (POSIX allows it to differ).
    return posixpath.normpath("/" + path.lstrip("/"))


def is_under(path: str, parent: str) -> bool:
    """True when path is strictly below parent (both normalised)."""
    return parent == "/" and path != "/" or path.startswith(parent + "/")


def find(mounts: list[dict[str, Any]], destination: str, resolve: Callable[[str], str] = normalise) -> int | None:
    """Index of the last mount at destination (the one that wins), comparing normalised
    and rootfs-resolved paths."""
    wanted = normalise(destination)
    found = None
    for i, mount in enumerate(mounts):
        dest = mount.get("destination", "")
        if normalise(dest) == wanted or resolve(dest) == wanted:
            found = i
    return found


def add_unless_mounted(
    draft: "Draft", mount: dict[str, Any], concern: str, why: str, resolve: Callable[[str], str] = normalise
) -> bool:
    """Add `mount` where it belongs, unless the config already mounts something at its
    destination (then keep the user's and say so). True when added."""
    existing = find(draft.doc["mounts"], mount["destination"], resolve)
    if existing is not None:
        draft.note("kept", concern, f"{mount['destination']} is already mounted by the config", ("mounts", existing))
        return False
    draft.add(("mounts", insertion_index(draft.doc["mounts"], mount["destination"])), mount, concern, why)
    return True


def insertion_index(mounts: list[dict[str, Any]], destination: str) -> int:
    """Before the first mount nested under destination, but after every mount that
    destination is nested under (a later ancestor would hide the new mount)."""
    wanted = normalise(destination)
    first_nested = None
    last_ancestor = -1
    for i, mount in enumerate(mounts):
        dest = normalise(mount.get("destination", ""))
        if first_nested is None and is_under(dest, wanted):
            first_nested = i
        if is_under(wanted, dest):
            last_ancestor = i
    if first_nested is None:
        return len(mounts)
    return max(first_nested, last_ancestor + 1)


def covering(mounts: list[dict[str, Any]], directory: str) -> dict[str, Any] | None:
    """The mount that will hold `directory` (the last at it or above it), or None. A
    mount point the runtime creates there lands in that mount: only a tmpfs of the
    container's own is safe, a host bind would get it on the host."""
    found = None
    for mount in mounts:
        dest = normalise(mount.get("destination", ""))
        if dest == directory or is_under(directory, dest):
            found = mount
    return found


def on_tmpfs(mounts: list[dict[str, Any]], directory: str) -> bool:
    """Whether a mount point made in `directory` lands in a tmpfs of the container's own
    (see covering): the only place where the side files' mount points may go."""
    mount = covering(mounts, directory)
    return mount is not None and mount.get("type") == "tmpfs"
