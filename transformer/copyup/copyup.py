"""One hook run: from a validated OCI state and the DEST list to copied tmpfs mounts.

The cgroup guard runs first, on every run: a refusal leaves the copies undone.
"""

from __future__ import annotations

import os

from transformer.copyup.bundle import (
    cgroup_views,
    check_host_kind,
    default_destinations,
    load_config,
    read_host_cgroup_hierarchies,
    rootfs_of,
)
from transformer.copyup.state import SOURCE, State
from transformer.errors import BundleError, CopyUpError, StateError


def copy_up(state: State, dests: list[str]) -> list[tuple[str, object]]:
    """Guard the cgroup view, then copy <rootfs>/<dest> of the image into the
    container's tmpfs for each dest.

    Returns (dest, engine.Stats) for each dest that had content. Each dest is its own
    pass into its own mount: /run skips the /run/lock mount point, and the /run/lock
    pass fills it. Nothing is written before that dest's target has been verified.
    """
    if not os.path.isdir(f"/proc/{state.pid}"):
        raise StateError(f"pid {state.pid} is gone: the container's process has exited", file=SOURCE, pointer="/pid")
    if not os.path.isdir(state.bundle):
        raise BundleError("bundle directory does not exist", file=state.bundle)
    config = load_config(state.bundle)
    rootfs = rootfs_of(state.bundle, config)
    views = cgroup_views(config)
    if views:
        check_host_kind(views, read_host_cgroup_hierarchies())
    if not dests:
        dests = default_destinations(config)
    if not dests:
        return []

    from transformer.copyup.source import is_empty_dir, open_source

    rootfs_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    sources: list[tuple[str, int]] = []
    try:
        for dest in dests:
            fd = open_source(rootfs_fd, dest)
            if fd is None:
                continue
            # An empty source is nothing to copy, mount-point metadata included:
            # runc itself creates missing mount points in the image as 0755 root dirs,
            # and giving those to a /tmp tmpfs would take away its 1777.
            if is_empty_dir(fd):
                os.close(fd)
                continue
            sources.append((dest, fd))
        if not sources:
            return []
        return [(dest, _copy_one(state.pid, rootfs, dest, fd)) for dest, fd in sources]
    finally:
        os.close(rootfs_fd)
        for _, fd in sources:
            os.close(fd)


def _copy_one(pid: int, rootfs: str, dest: str, source_fd: int):
    from transformer.copyup.engine import Options, copy_tree
    from transformer.copyup.target import open_target

    target_fd = open_target(pid, rootfs, dest, source_fd)
    try:
        nodev = bool(os.fstatvfs(target_fd).f_flag & os.ST_NODEV)
        try:
            return copy_tree(source_fd, target_fd, Options(allow_devices=nodev))
        except CopyUpError as e:
            raise CopyUpError(f"{dest}: {e.message}") from None
    finally:
        os.close(target_fd)
