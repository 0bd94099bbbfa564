"""The cgroup delegator: for a container with its own user namespace, hand the
container's own cgroup to its root.

systemd as PID 1 creates /init.scope and a cgroup per unit below its own cgroup. In a
user namespace it is not the host's root, so unless that directory (and the files
the kernel lists in /sys/kernel/cgroup/delegate) belongs to the container's mapped
root, it stops with ``Failed to create /init.scope control group: Permission denied``.
runc 1.1.5 does not delegate, so the helper does, at prestart: runc has created the
container's cgroup and put its init in it, and PID 1 has not started.

What is guarded against:

- **Handing out the host's tree.** The directory chowned is the one the kernel names
  for the container's PID in /proc/<pid>/cgroup, never a path from config.json. It is
  refused when it is the hierarchy's root, or the hook's own cgroup or one of its
  ancestors (the runtime's own cgroup: the container could then move or limit it).
- **Symlinks and other mounts.** The host's hierarchy is opened at the mount point
  /proc/self/mountinfo names (its mount id re-checked on the fd), every component
  below it with O_NOFOLLOW relative to its parent's fd, and the directory is
  verified to be cgroupfs on that very mount. Files are chowned with fchownat and
  AT_SYMLINK_NOFOLLOW, and only regular files are touched.

The guard against a bundle prepared for another kind of host (a cgroup2 mount on a
legacy v1 host, a name=systemd bind on a pure v2 host) runs on every start, with or
without a user namespace, so it lives in bundle_view.py (check_host_kind), which every
start imports anyway.

What it does not do: controllers. Limits stay the runtime's; the unified directory's
cgroup.subtree_control is handed over as the kernel's delegation model intends, so
the container can enable, below itself, the controllers its parent gives it.
"""

from __future__ import annotations

import os
import stat

from transformer.copyup.bundle_view import NAMED_SYSTEMD, UNIFIED
from transformer.copyup.mounts import (
    CGROUP2_SUPER_MAGIC,
    CGROUP_SUPER_MAGIC,
    MountInfo,
    fs_magic,
    mount_id,
    read_mountinfo,
)
from transformer.copyup.state import read_proc
from transformer.errors import CopyUpError
from transformer.fsguard import TOP

# cgroup v2 delegation (Documentation/admin-guide/cgroup-v2.rst, "Delegation"): the
# directory and these files; the kernel lists them in /sys/kernel/cgroup/delegate.
DELEGATE_FILE = "/sys/kernel/cgroup/delegate"
DELEGATE_FALLBACK = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")


def _is_named_systemd(m: MountInfo) -> bool:
    return m.fstype == "cgroup" and NAMED_SYSTEMD in m.super_options


def _matches(m: MountInfo, view: str) -> bool:
    return m.fstype == "cgroup2" if view == UNIFIED else _is_named_systemd(m)


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup as {view: path} for the two views we know.

    Lines are ``hierarchy-ID:controllers:path``: ``0::/a`` is the unified hierarchy,
    ``1:name=systemd:/a`` the named one (the path may itself hold colons)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            found.setdefault(UNIFIED, path)
        elif NAMED_SYSTEMD in controllers.split(","):
            found.setdefault(NAMED_SYSTEMD, path)
    return found


def _components(path: str, what: str) -> list[str]:
    if not path.startswith("/"):
        raise CopyUpError(f"{what} {path!r}: not an absolute cgroup path")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        # A cgroup outside the hook's cgroup namespace shows as /../..: not reachable here.
        raise CopyUpError(f"{what} {path!r}: outside this hook's cgroup namespace; refusing to delegate")
    return parts


def locate(view: str, container: dict[str, str], hook: dict[str, str], mounts: list[MountInfo],
           pid: int | str = "<pid>") -> tuple[MountInfo, list[str]]:
    """The host mount of ``view`` that shows the container's cgroup, and the path
    components below that mount's directory. Pure: every input is text already read.

    ``container`` and ``hook`` are parse_proc_cgroup of /proc/<pid>/cgroup and of
    /proc/self/cgroup."""
    label = "unified" if view == UNIFIED else NAMED_SYSTEMD
    path = container.get(view)
    if path is None:
        raise CopyUpError(f"/proc/{pid}/cgroup has no {label} cgroup line; cannot delegate the container's cgroup")
    path = path.removesuffix(" (deleted)")
    parts = _components(path, f"container's {label} cgroup")
    if not parts:
        raise CopyUpError(
            f"container's {label} cgroup is the hierarchy's root /: delegating it would hand the host's "
            "whole tree to the container; set linux.cgroupsPath"
        )
    mine = hook.get(view)
    if mine is not None:
        own = [p for p in mine.split("/") if p]
        if own[: len(parts)] == parts:
            what = "this hook's own cgroup" if own == parts else f"an ancestor of this hook's own cgroup {mine}"
            raise CopyUpError(
                f"container's {label} cgroup {path} is {what} (the runtime's): refusing to delegate it to the container"
            )
    for m in mounts:
        if not _matches(m, view):
            continue
        root = [p for p in m.root.decode("utf-8", "surrogateescape").split("/") if p]
        if parts[: len(root)] == root:
            return m, parts[len(root):]
    raise CopyUpError(f"no {label} cgroup mount in this host's mount table shows {path}; cannot delegate it")


def delegate_files(view: str) -> tuple[str, ...] | None:
    """The names to chown in the directory: the kernel's delegate list for the unified
    hierarchy; None (every regular file of the cgroup core in it) for a v1 hierarchy."""
    if view != UNIFIED:
        return None
    try:
        with open(DELEGATE_FILE, "rb") as f:
            names = tuple(n for n in f.read().decode(errors="replace").split() if "/" not in n)
    except OSError:
        return DELEGATE_FALLBACK
    return names or DELEGATE_FALLBACK


def _v1_core(name: str) -> bool:
    # The files every v1 hierarchy has (a name=systemd one has no others). A
    # controller's files are prefixed with its name: were a controller co-mounted
    # with name=systemd, handing over cpu.shares or memory.limit_in_bytes would let
    # the container raise its own limits.
    return name.startswith("cgroup.") or name in ("tasks", "notify_on_release")


def delegate_directory(dir_fd: int, uid: int, gid: int, files: tuple[str, ...] | None) -> list[str]:
    """chown the directory dir_fd and, inside it, the regular files ``files`` that
    exist (when None: every regular file of the v1 cgroup core, cgroup.*, tasks and
    notify_on_release), never following a symlink. Returns the names chowned, "."
    first."""
    os.chown(dir_fd, uid, gid)
    done = ["."]
    if files is None:
        with os.scandir(dir_fd) as it:
            files = tuple(sorted(e.name for e in it if _v1_core(e.name) and e.is_file(follow_symlinks=False)))
    for name in files:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # a controller file of a controller not enabled here
        if not stat.S_ISREG(st.st_mode):
            continue
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        done.append(name)
    return done


def _open_cgroup(m: MountInfo, parts: list[str], label: str) -> int:
    from transformer.copyup.bundle_view import walk

    try:
        top = os.open(m.mount_point, TOP)
    except OSError as e:
        raise CopyUpError(f"cannot open the host's {label} hierarchy {m.mount_point!r}: {e.strerror}") from None
    try:
        if mount_id(top) != m.mount_id:
            raise CopyUpError(f"{m.mount_point!r} is no longer the host's {label} mount; refusing to delegate")
        fd = walk(top, parts, label=f"host {label} cgroup")
    finally:
        os.close(top)
    try:
        if mount_id(fd) != m.mount_id or fs_magic(fd) not in (CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC):
            raise CopyUpError(f"host {label} cgroup /{'/'.join(parts)}: not a cgroup directory of that mount")
    except BaseException:
        os.close(fd)
        raise
    return fd



def delegate(pid: int, views: tuple[str, ...], uid: int, gid: int) -> list[tuple[str, str, list[str]]]:
    """Give each of ``views`` of the container's cgroup to host uid:gid (its mapped
    root). Everything is located first, so nothing is chowned when one view is
    refused. Returns (view, host directory, names chowned)."""
    container = parse_proc_cgroup(read_proc(f"/proc/{pid}/cgroup"))
    hook = parse_proc_cgroup(read_proc("/proc/self/cgroup"))
    mounts = read_mountinfo("self")
    found = [(view, *locate(view, container, hook, mounts, pid)) for view in views]
    done = []
    for view, m, parts in found:
        label = "unified" if view == UNIFIED else NAMED_SYSTEMD
        fd = _open_cgroup(m, parts, label)
        try:
            names = delegate_directory(fd, uid, gid, delegate_files(view))
        except OSError as e:
            raise CopyUpError(f"cannot delegate the host {label} cgroup /{'/'.join(parts)}: {e.strerror}") from None
        finally:
            os.close(fd)
        where = os.path.join(m.mount_point.decode(errors="replace"), *parts)
        done.append((view, where, names))
    return done
