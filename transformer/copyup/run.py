"""One hook run: from a validated OCI state and the DEST list to copied tmpfs mounts.

The order is fixed: the cgroup guard (every run), then, for a container with its own
user namespace, the delegation of its cgroup, then the copies. A refusal at any step
leaves the later ones undone.
"""

from __future__ import annotations

import os

from transformer.copyup.bundle_view import (
    cgroup_views,
    check_host_kind,
    default_destinations,
    load_config,
    read_host_cgroup_hierarchies,
    rootfs_of,
)
from transformer.copyup.state import SOURCE, State
from transformer.errors import BundleError, CopyUpError, StateError
from transformer.fsguard import TOP


def own_user_namespace(pid: int) -> bool:
    """Whether the container's process is in another user namespace than the helper.

    Two stats, kept here rather than in userns.py: every start pays for this check,
    and only a container that has a user namespace imports the rest."""
    try:
        theirs = os.stat(f"/proc/{pid}/ns/user")
    except FileNotFoundError:
        raise StateError(f"pid {pid} is gone: the container's process has exited", file=SOURCE, pointer="/pid") from None
    except OSError as e:
        # EACCES: a process of a more privileged namespace than ours (the host's own pid 1
        # when the runtime itself runs in a container): not a container we started.
        raise StateError(f"pid {pid}: cannot open /proc/{pid}/ns/user: {e.strerror}", file=SOURCE, pointer="/pid") from None
    mine = os.stat("/proc/self/ns/user")
    return (theirs.st_ino, theirs.st_dev) != (mine.st_ino, mine.st_dev)


def copy_up(state: State, dests: list[str]) -> list[tuple[str, object]]:
    """Guard the cgroup view, delegate the container's cgroup when it has a user
    namespace, then copy <rootfs>/<dest> of the image into the container's tmpfs for
    each dest.

    Returns (dest, engine.Stats) for each dest that had content. Each dest is its own
    pass into its own mount: /run skips the /run/lock mount point, and the /run/lock
    pass fills it. Nothing is written before that dest's target has been verified.
    """
    userns = own_user_namespace(state.pid)  # first: it also says whether the pid is gone
    if not os.path.isdir(state.bundle):
        raise BundleError("bundle directory does not exist", file=state.bundle)
    config = load_config(state.bundle)
    rootfs = rootfs_of(state.bundle, config)
    views = cgroup_views(config)
    if views:
        check_host_kind(views, read_host_cgroup_hierarchies())
    ns = None  # the id maps, read once, and only when delegation or a copy needs them
    if userns and views:
        from transformer.copyup.cgroup import delegate
        from transformer.copyup.userns import user_namespace

        ns = user_namespace(state.pid)
        delegate(state.pid, views, ns.root_uid, ns.root_gid)
    if not dests:
        dests = default_destinations(config)
    if not dests:
        return []

    from transformer.copyup.bundle_view import is_empty_dir, open_source

    rootfs_fd = os.open(rootfs, TOP)
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
        if userns:
            if ns is None:
                from transformer.copyup.userns import user_namespace

                ns = user_namespace(state.pid)
            return _copy_as_container_root(state.pid, rootfs, rootfs_fd, sources, ns)
        return [(dest, _copy_one(state.pid, rootfs, dest, fd)) for dest, fd in sources]
    finally:
        os.close(rootfs_fd)
        for _, fd in sources:
            os.close(fd)


def _copy_one(pid: int, rootfs: str, dest: str, source_fd: int):
    from transformer.copyup.engine import CopyLimits, copy_tree
    from transformer.copyup.target import open_target

    target_fd = open_target(pid, rootfs, dest, source_fd)
    try:
        nodev = bool(os.fstatvfs(target_fd).f_flag & os.ST_NODEV)
        try:
            return copy_tree(source_fd, target_fd, CopyLimits(allow_devices=nodev))
        except CopyUpError as e:
            raise CopyUpError(f"{dest}: {e.message}") from None
    finally:
        os.close(target_fd)


UNMAPPED = (
    "its owner is not mapped in the container's user namespace: shift the image's owners "
    "into the range of linux.uidMappings and linux.gidMappings"
)
NO_DEVICES_IN_USERNS = "the container has its own user namespace, where the kernel creates no device nodes"


def _copy_as_container_root(pid: int, rootfs: str, rootfs_fd: int, sources: list[tuple[str, int]], ns):
    """Copy every source as the container's root, in a child in its user namespace.

    The parent opens and verifies every target first, exactly as _copy_one does, and
    refuses an image whose rootfs or DEST directory has an owner the namespace does
    not map: inside, that directory would belong to nobody (the overflow id), and so
    would the tmpfs it is copied onto."""
    from transformer.copyup.engine import CopyLimits, Stats, copy_tree
    from transformer.copyup.target import open_target
    from transformer.copyup.userns import run_as_root

    for what, fd in [("rootfs", rootfs_fd)] + [(dest, fd) for dest, fd in sources]:
        st = os.fstat(fd)
        if not ns.maps(st.st_uid, st.st_gid):
            where = f"image rootfs {rootfs}" if what == "rootfs" else f"image {what}"
            raise CopyUpError(
                f"{where} is owned by host {st.st_uid}:{st.st_gid}, which the container's user namespace "
                f"does not map ({ns.describe()}); shift the image's owners into the mapped range"
            )
    jobs: list[tuple[str, int, int]] = []
    try:
        for dest, source_fd in sources:
            jobs.append((dest, source_fd, open_target(pid, rootfs, dest, source_fd)))

        def work():
            limits = CopyLimits(allow_devices=False, no_devices_reason=NO_DEVICES_IN_USERNS, denied_hint=UNMAPPED)
            done = []
            for dest, source_fd, target_fd in jobs:
                try:
                    done.append((dest, copy_tree(source_fd, target_fd, limits).as_dict()))
                except CopyUpError as e:
                    raise CopyUpError(f"{dest}: {e.message}") from None
            return done

        return [(dest, Stats.from_dict(doc)) for dest, doc in run_as_root(ns, work)]
    finally:
        for _, _, target_fd in jobs:
            os.close(target_fd)
