"""cgroups for systemd: v1 (patches/cgroup-v1.json) or v2 (patches/cgroup-v2.json).

The version is a value in Options: the CLI probes the host (or takes --cgroup), the
core never looks.
"""

from __future__ import annotations

from .. import mounts
from ..draft import Draft
from ..errors import ConfigError
from .context import Context

CONCERN_V1 = "cgroup-v1"
CONCERN_V2 = "cgroup-v2"

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


def _cgroup_mount(draft: Draft, mountpoint: str) -> int | None:
    return mounts.find(draft.doc["mounts"], mountpoint)


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


def _ensure_cgroup_mount(
    draft: Draft, mountpoint: str, options: tuple[str, ...], concern: str, why: str
) -> int | None:
    """Index of the config's own mount on mountpoint, or None after adding ours."""
    index = _cgroup_mount(draft, mountpoint)
    if index is None:
        at = mounts.insertion_index(draft.doc["mounts"], mountpoint)
        draft.add(
            ("mounts", at),
            {"destination": mountpoint, "type": "cgroup", "source": "cgroup", "options": list(options)},
            concern,
            why,
        )
    return index


def contribute_v1(draft: Draft, ctx: Context) -> None:
    policy = ctx.options.policy.cgroup_v1
    c = CONCERN_V1
    if _ensure_cgroup_mount(draft, policy.mountpoint, policy.cgroup_mount_options, c, policy.read_only_why) is not None:
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
    if draft.get("linux", "uidMappings"):
        draft.note(
            "warning",
            c,
            "with a user namespace on v1 the host's name=systemd directory belongs to host root; "
            "it must be chowned to the mapped root before systemd can write to it",
        )


def contribute_v2(draft: Draft, ctx: Context) -> None:
    policy = ctx.options.policy.cgroup_v2
    c = CONCERN_V2
    index = _ensure_cgroup_mount(draft, policy.mountpoint, policy.cgroup_mount_options, c, policy.writable_why)
    if index is None:
        pass
    elif draft.doc["mounts"][index].get("type") in _CGROUP_MOUNT_TYPES:
        _force_option(draft, index, "rw", "ro", c, policy.writable_why)
    else:
        draft.note(
            "warning",
            c,
            f"{policy.mountpoint} is a {draft.doc['mounts'][index].get('type')} mount, not cgroup; left as it is",
            ("mounts", index),
        )
    namespaces = draft.get("linux", "namespaces") or []
    if any(ns.get("type") == policy.namespace for ns in namespaces):
        draft.note("kept", c, f"the config already has a {policy.namespace} namespace")
    else:
        draft.ensure_object(("linux",), c, "the config has no linux section")
        draft.ensure_list(("linux", "namespaces"), c, "the config has no namespaces list")
        draft.add(("linux", "namespaces", "-"), {"type": policy.namespace}, c, policy.namespace_why)
    stale = mounts.find(draft.doc["mounts"], ctx.options.policy.cgroup_v1.hierarchy)
    if stale is not None:
        draft.note(
            "warning",
            c,
            "the config binds a v1 name=systemd hierarchy; it was prepared for a cgroup v1 host",
            ("mounts", stale),
        )


def contribute(draft: Draft, ctx: Context) -> None:
    if ctx.options.cgroup == "v1":
        contribute_v1(draft, ctx)
    else:
        contribute_v2(draft, ctx)
