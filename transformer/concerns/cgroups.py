"""cgroups for systemd: the v1 view (patches/cgroup-v1.json) or the unified view
(patches/cgroup-v2.json), each with a cgroup namespace.

Which view a container gets follows from two facts: the host's kind of cgroups (a value
in Options: the CLI probes the host or takes --cgroup; the core never looks) and the
image's systemd version (read from the rootfs). choose_view() decides, and says why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

from .. import mounts
from ..draft import Draft
from ..errors import ConfigError, OptionsError
from ..systemd_version import SystemdVersion
from .context import Context

if TYPE_CHECKING:
    from ..options import Options
    from ..policy import AbsolutePath, Reader

CONCERN_V1 = "cgroup-v1"
CONCERN_V2 = "cgroup-v2"


class CgroupV1Policy(NamedTuple):
    """cgroup-v1.json: the read-only controllers, the writable name=systemd directory of
    the container's own, and the newest systemd that still runs on v1."""

    why: str
    mountpoint: AbsolutePath
    cgroup_mount_options: tuple[str, ...]
    read_only_why: str
    hierarchy: AbsolutePath
    hierarchy_options: tuple[str, ...]
    hierarchy_why: str
    # A cgroup path is a path too: '/a//b' or '/a/../b' names what runc would not create.
    default_cgroups_path: AbsolutePath
    cgroups_path_why: str
    namespace: str
    namespace_why: str
    # The newest systemd that runs on v1; a newer one gets the unified view or is refused.
    last_systemd: int
    last_systemd_why: str
    hybrid_why: str


class CgroupV2Policy(NamedTuple):
    why: str
    mountpoint: AbsolutePath
    mount_type: str
    mount_type_why: str
    cgroup_mount_options: tuple[str, ...]
    writable_why: str
    namespace: str
    namespace_why: str
    hybrid_why: str
    # For a /sys bound from the host (see _shadow_sys_bind).
    sys_bind_shadow_options: tuple[str, ...]
    sys_bind_shadow_why: str


def parse_v1(r: Reader) -> CgroupV1Policy:
    policy = r.record(CgroupV1Policy)
    if "ro" not in policy.cgroup_mount_options:
        r.fail("must contain ro: a writable cgroup mount on v1 exposes every controller", "cgroupMountOptions")
    return policy


def parse_v2(r: Reader) -> CgroupV2Policy:
    policy = r.record(CgroupV2Policy)
    if policy.mount_type != "cgroup2":
        # "cgroup" is every v1 controller on a v1 host; writable there it hands the
        # container its own limits.
        r.fail("must be cgroup2: type cgroup mounts every v1 controller on a v1 host", "mountType")
    return policy


# One concern, two documents: the view chosen for the container decides which applies.
DOCUMENTS = {CONCERN_V1: parse_v1, CONCERN_V2: parse_v2}

HOST_NAMES = {
    "v2": "a cgroup v2 host",
    "hybrid": "a hybrid host (v1 controllers, unified hierarchy at /sys/fs/cgroup/unified)",
    "legacy": "a legacy cgroup v1 host (no unified hierarchy)",
    "v1": "a cgroup v1 host (--cgroup v1)",
}


class CgroupView(NamedTuple):
    view: Literal["unified", "v1"]
    why: str

    def __str__(self) -> str:
        return f"{self.view} ({self.why})"


def choose_view(options: Options, systemd: SystemdVersion | None) -> CgroupView:
    """The view this container gets on the host Options names, or OptionsError when the
    image's systemd cannot run there at all (refused at plan time: nothing is written,
    instead of a PID 1 that exits 255 without a word)."""
    v1, v2 = options.policy.cgroup_v1, options.policy.cgroup_v2
    host = options.cgroup
    too_new = systemd is not None and systemd.version > v1.last_systemd
    if host == "v2":
        return CgroupView("unified", "the host's only hierarchy is cgroup2")
    if host == "hybrid":
        if systemd is None:
            return CgroupView("unified", "the image's systemd version is unknown, and every systemd runs in "
                                         f"the unified view; {v2.hybrid_why}")
        if too_new:
            return CgroupView("unified", f"systemd {systemd.version} > {v1.last_systemd}: {v1.last_systemd_why}; "
                                         f"{v2.hybrid_why}")
        return CgroupView("v1", f"systemd {systemd.version} <= {v1.last_systemd}: {v1.hybrid_why}")
    if too_new:
        raise OptionsError(
            f"the image's systemd {systemd.version} ({systemd.evidence}) cannot run on {HOST_NAMES[host]}: "
            f"{v1.last_systemd_why}; run it on a cgroup v2 or hybrid host (--cgroup auto there), "
            f"or use an image with systemd {v1.last_systemd} or older"
        )
    if systemd is None:
        return CgroupView("v1", f"{HOST_NAMES[host]} offers only v1; the image's systemd version is unknown")
    return CgroupView("v1", f"{HOST_NAMES[host]} offers only v1, and systemd {systemd.version} runs there")

_CGROUP_MOUNT_TYPES = ("cgroup", "cgroup2")


def systemd_slice_path(cgroups_path: str) -> str:
    """Where runc's systemd driver puts "slice:prefix:name" on a v1 hierarchy.

    systemd nests slices by their dash-separated prefixes: a-b.slice lives in
    /a.slice/a-b.slice; the container is the scope prefix-name.scope inside it.
    """
    slice_name, prefix, name = cgroups_path.split(":")
    slice_name = slice_name or "system.slice"
    path = ""
    if slice_name != "-.slice":
        stem = slice_name.removesuffix(".slice")
        parts = stem.split("-")
        for i in range(1, len(parts) + 1):
            path += "/" + "-".join(parts[:i]) + ".slice"
    scope = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return f"{path}/{scope}"


def _all_at(draft: Draft, mountpoint: str) -> list[int]:
    return [i for i, m in enumerate(draft.doc["mounts"]) if mounts.normalise(m.get("destination", "")) == mountpoint]


def _force_option(draft: Draft, index: int, want: str, unwanted: str, concern: str, why: str) -> None:
    """Make mount `index` carry option `want` instead of `unwanted` (ro vs rw)."""
    options = draft.get("mounts", index, "options")
    if options is None:
        draft.add(("mounts", index, "options"), [want], concern, why)
        return
    if want in options and unwanted not in options:
        draft.note("kept", concern, f"{draft.doc['mounts'][index]['destination']} is already {want}", ("mounts", index))
        return
    for j, option in enumerate(options):
        if option == unwanted:
            draft.replace(("mounts", index, "options", j), want, concern, why)
    if want not in draft.get("mounts", index, "options"):
        draft.add(("mounts", index, "options", "-"), want, concern, why)


def _add_cgroup_mount(
    draft: Draft, mountpoint: str, mount_type: str, options: tuple[str, ...], concern: str, why: str
) -> None:
    """Add a cgroup file system of mount_type at mountpoint, where it belongs in mounts."""
    draft.add(
        ("mounts", mounts.insertion_index(draft.doc["mounts"], mountpoint)),
        {"destination": mountpoint, "type": mount_type, "source": mount_type, "options": list(options)},
        concern,
        why,
    )


def contribute_v1(draft: Draft, ctx: Context) -> None:
    policy = ctx.options.policy.cgroup_v1
    c = CONCERN_V1
    if mounts.find(draft.doc["mounts"], policy.mountpoint) is None:
        _add_cgroup_mount(draft, policy.mountpoint, "cgroup", policy.cgroup_mount_options, c, policy.read_only_why)
    else:
        # Every cgroup or bind mount there, not only the visible last one: a hidden rw
        # mount is one unmount away from exposing the host's controllers.
        for index in _all_at(draft, policy.mountpoint):
            mount = draft.doc["mounts"][index]
            options = mount.get("options") or []
            if mount.get("type") in _CGROUP_MOUNT_TYPES or "bind" in options or "rbind" in options:
                _force_option(draft, index, "ro", "rw", c, policy.read_only_why)

    cgroups_path = draft.get("linux", "cgroupsPath")
    if cgroups_path is None:
        cgroups_path = policy.default_cgroups_path.replace("{machineId}", ctx.machine_id)
        draft.ensure_object(("linux",), c, "the config has no linux section")
        draft.add(("linux", "cgroupsPath"), cgroups_path, c, policy.cgroups_path_why)
    if cgroups_path.count(":") == 2:
        hierarchy_path = systemd_slice_path(cgroups_path)
    elif cgroups_path.startswith("/"):
        hierarchy_path = mounts.normalise(cgroups_path)
    else:
        raise ConfigError(
            f"{cgroups_path!r} is relative to the runtime's own cgroup, so its name=systemd directory "
            "cannot be known; use an absolute path or slice:prefix:name",
            pointer="/linux/cgroupsPath",
        )

    mounts.add_unless_mounted(
        draft,
        {
            "destination": policy.hierarchy,
            "type": "bind",
            "source": policy.hierarchy + hierarchy_path,
            "options": list(policy.hierarchy_options),
        },
        c,
        policy.hierarchy_why,
    )
    _ensure_namespace(draft, policy.namespace, c, policy.namespace_why)
    if ctx.user_namespace:
        draft.note(
            "info",
            c,
            "a user namespace: the copy-up helper gives the container's name=systemd directory to its mapped root "
            "before systemd starts",
        )


def _ensure_namespace(draft: Draft, namespace: str, concern: str, why: str) -> None:
    namespaces = draft.get("linux", "namespaces") or []
    if any(ns.get("type") == namespace for ns in namespaces):
        draft.note("kept", concern, f"the config already has a {namespace} namespace")
        return
    draft.ensure_object(("linux",), concern, "the config has no linux section")
    draft.ensure_list(("linux", "namespaces"), concern, "the config has no namespaces list")
    draft.add(("linux", "namespaces", "-"), {"type": namespace}, concern, why)


def contribute_unified(draft: Draft, ctx: Context) -> None:
    policy = ctx.options.policy.cgroup_v2
    c = CONCERN_V2
    index = mounts.find(draft.doc["mounts"], policy.mountpoint)
    if index is None:
        _add_cgroup_mount(draft, policy.mountpoint, policy.mount_type, policy.cgroup_mount_options, c,
                          f"{policy.writable_why}; {policy.mount_type_why}")
    elif draft.doc["mounts"][index].get("type") in _CGROUP_MOUNT_TYPES:
        _force_option(draft, index, "rw", "ro", c, policy.writable_why)
    else:
        draft.note(
            "warning",
            c,
            f"{policy.mountpoint} is a {draft.doc['mounts'][index].get('type')} mount, not cgroup; left as it is",
            ("mounts", index),
        )
    # Every cgroup mount there, hidden ones included: a user namespace holds
    # CAP_SYS_ADMIN, and an unmount would bring a hidden v1 one back.
    for i in _all_at(draft, policy.mountpoint):
        if draft.doc["mounts"][i].get("type") == "cgroup":
            draft.replace(("mounts", i, "type"), policy.mount_type, c, policy.mount_type_why)
    _shadow_sys_bind(draft, policy, c)
    _ensure_namespace(draft, policy.namespace, c, policy.namespace_why)
    stale = mounts.find(draft.doc["mounts"], ctx.options.policy.cgroup_v1.hierarchy)
    if stale is not None:
        draft.note(
            "warning",
            c,
            "the config binds a v1 name=systemd hierarchy; it was prepared for the v1 view",
            ("mounts", stale),
        )
    if ctx.user_namespace:
        draft.note(
            "info",
            c,
            "a user namespace: the copy-up helper gives the container's cgroup (the directory, cgroup.procs, "
            "cgroup.threads, cgroup.subtree_control) to its mapped root before systemd starts",
        )


def _shadow_sys_bind(draft: Draft, policy: CgroupV2Policy, concern: str) -> None:
    """A tmpfs under the cgroup2 mount when /sys is a bind of the host's /sys.

    A rootless config (``runc spec --rootless``) has no network namespace, so it cannot
    mount a sysfs of its own and binds the host's.  Its /sys/fs/cgroup is then the root
    of the host's cgroup2 mount, and mounting cgroup2 there again is the same file system
    on the same mount root, which the kernel refuses with EBUSY.  runc 1.1 falls back to
    a bind only for type cgroup, which the unified view does not use (type cgroup is every
    v1 controller on a v1 host).  A tmpfs first gives the cgroup2 mount a root of its own."""
    mounts_ = draft.doc["mounts"]
    index = mounts.find(mounts_, policy.mountpoint)
    sys_mount = mounts.covering(mounts_[:index] if index is not None else mounts_, "/sys")
    if sys_mount is None or index is None:
        return
    options = sys_mount.get("options") or []
    if not (sys_mount.get("type") == "bind" or "bind" in options or "rbind" in options):
        return
    if any(m.get("type") == "tmpfs" and mounts.normalise(m.get("destination", "")) == policy.mountpoint
           for m in mounts_[:index]):
        draft.note("kept", concern, f"{policy.mountpoint} already has a tmpfs under the cgroup2 mount")
        return
    draft.add(
        ("mounts", index),
        {"destination": policy.mountpoint, "type": "tmpfs", "source": "tmpfs",
         "options": list(policy.sys_bind_shadow_options)},
        concern,
        policy.sys_bind_shadow_why,
    )


def contribute(draft: Draft, ctx: Context) -> None:
    if ctx.cgroup_view.view == "v1":
        contribute_v1(draft, ctx)
    else:
        contribute_unified(draft, ctx)
