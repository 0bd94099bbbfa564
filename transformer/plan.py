"""The pure core: plan(config, rootfs, options) -> Plan.

No I/O, no clock, no environment. The same input gives the same ops in the same
order: tmpfs, cgroups, machine-id, journal, capabilities, environment, annotations, copy-up.
"""

from __future__ import annotations

from typing import Any

from .concerns import annotations, capabilities, cgroups, copy_up, environment, journal, machine_id, tmpfs
from .concerns.context import Context
from .concerns.detection import detect
from .config import check_config
from .draft import Draft, Plan
from .options import Options
from .rootfs import RootfsView
from .systemd_version import systemd_version


def _machine_id(config: dict[str, Any], options: Options) -> tuple[str, str]:
    env = (config.get("process") or {}).get("env") or []
    current = environment.env_value(env, options.policy.machine_id.env)
    if current is not None:
        from_env = machine_id.id_from_container_uuid(current)
        if from_env is not None:
            # An already transformed (or podman-made) config keeps the identity it has.
            return from_env, f"from the config's {options.policy.machine_id.env}"
    return machine_id.machine_id_for(options.container_id), f"from container ID {options.container_id!r}"


def _mapped_root(mappings: object) -> int:
    """The host ID that the container's ID 0 maps to; 0 without a mapping of it."""
    for mapping in mappings if isinstance(mappings, list) else []:
        if not isinstance(mapping, dict):
            continue
        start, host, size = (mapping.get(k) for k in ("containerID", "hostID", "size"))
        if all(isinstance(v, int) for v in (start, host, size)) and start <= 0 < start + size:
            return host - start
    return 0


def _user_namespace_fact(ctx: Context) -> str:
    if not ctx.user_namespace:
        return "no: the container's root is the host's root"
    uid, gid = ctx.mapped_root
    return f"yes: the container's root is host uid {uid}, gid {gid}"


def plan(config: dict[str, Any], rootfs: RootfsView, options: Options) -> Plan:
    check_config(config, None)  # the caller names the file in the error
    detection = detect(config, rootfs, options.policy.detection, options.force)
    facts: list[tuple[str, str]] = [("systemd", ("yes: " if detection.systemd else "no: ") + detection.reason)]
    if not detection.systemd:
        draft = Draft(config)
        draft.note("info", "detection", f"not a systemd container ({detection.reason}); nothing to change")
        return Plan(False, (), (), tuple(draft.notes), tuple(facts), draft.doc)

    mid, mid_source = _machine_id(config, options)
    version = systemd_version(rootfs)
    view = cgroups.choose_view(options, version)
    linux = config.get("linux") or {}
    ctx = Context(
        options=options,
        rootfs=rootfs,
        machine_id=mid,
        readonly_root=bool((config.get("root") or {}).get("readonly")),
        mount_label=linux.get("mountLabel") or None,
        systemd=version,
        cgroup_view=view,
        user_namespace=any(ns.get("type") == "user" for ns in linux.get("namespaces") or []),
        mapped_root=(_mapped_root(linux.get("uidMappings")), _mapped_root(linux.get("gidMappings"))),
    )
    facts += [
        ("systemd version", str(version) if version else f"unknown (no libsystemd-shared in {rootfs.label})"),
        ("cgroup host", cgroups.HOST_NAMES[options.cgroup]),
        ("cgroup view", str(view)),
        ("user namespace", _user_namespace_fact(ctx)),
        ("copy-up", options.copy_up),
        ("machine-id", f"{mid} ({mid_source})"),
        ("root", "read-only" if ctx.readonly_root else "writable"),
    ]
    if options.journal == "host":
        # Only a host journal lives outside the container, in a host directory the edge
        # creates and `journal prune` removes: the review names it. A tmpfs journal is
        # the /var/log/journal tmpfs, which the review lists among the mounts already.
        facts.append(("journal", f"host: {journal.host_directory(ctx)}"))
    draft = Draft(config)
    copy_destinations = tmpfs.contribute(draft, ctx)
    cgroups.contribute(draft, ctx)
    side_files = machine_id.contribute(draft, ctx)
    host_directories = journal.contribute(draft, ctx)
    side_files += capabilities.contribute(draft, ctx)
    environment.contribute(draft, ctx)
    annotations.contribute(draft, ctx)
    copy_up.contribute(draft, ctx, copy_destinations)
    return Plan(
        True, tuple(draft.ops), tuple(side_files), tuple(draft.notes), tuple(facts), draft.doc, tuple(host_directories)
    )
