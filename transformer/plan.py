"""The pure core: plan(config, rootfs, options) -> Plan.

No I/O, no clock, no environment. The same input gives the same ops in the same
order: detection decides, then each concern of concerns.CONCERNS contributes, in turn.
"""

from __future__ import annotations

from typing import Any

from .concerns import CONCERNS, cgroups, journal, machine_id
from .concerns.context import Context
from .concerns.detection import detect
from .config import check_config
from .draft import Draft, Plan
from .options import Options
from .rootfs import RootfsView
from .systemd_version import systemd_version


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
    draft = Draft(config)
    if not detection.systemd:
        draft.note("info", "detection", f"not a systemd container ({detection.reason}); nothing to change")
        return draft.plan(False, facts)

    mid, mid_source = machine_id.choose(config, options)
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
    for concern in CONCERNS:
        concern.contribute(draft, ctx)
    return draft.plan(True, facts)
