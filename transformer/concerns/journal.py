"""Where the journal lives: the tmpfs (default) or the host (patches/journal.json).

In host mode the core adds one bind mount and names the host directory it needs in
Plan.host_directories; creating that directory is the edge's job (apply, filter).
"""

from __future__ import annotations

from .. import mounts
from ..draft import Draft, HostDirectory
from .context import Context

CONCERN = "journal"


def host_directory(ctx: Context) -> str:
    """The host's directory for this container's journal: <hostDirectory>/<machine-id>,
    the name journald itself gives a machine's persistent journal."""
    return f"{ctx.options.policy.journal.host_directory}/{ctx.machine_id}"


def contribute(draft: Draft, ctx: Context) -> list[HostDirectory]:
    """Bind the host's per-container journal directory (host mode); return the host
    directories the bundle needs."""
    if ctx.options.journal != "host":
        return []
    policy = ctx.options.policy.journal
    source = host_directory(ctx)
    # Inside the /var/log/journal tmpfs, after it (insertion_index puts a mount after
    # its ancestors): runc creates the mount point in the tmpfs, not in the image.
    destination = f"{ctx.resolve_quietly(policy.destination)}/{ctx.machine_id}"
    added = mounts.add_unless_mounted(
        draft,
        {"destination": destination, "type": "bind", "source": source, "options": list(policy.options)},
        CONCERN,
        f"{policy.bind_why} (host directory {source})",
        ctx.resolve_quietly,
    )
    if not added:
        existing = draft.doc["mounts"][mounts.find(draft.doc["mounts"], destination, ctx.resolve_quietly)]
        if existing.get("source") != source:
            return []  # the user's own mount there: nothing of ours to create
    # journald runs as the container's root: with a user namespace that is a mapped
    # host uid, which must own the directory or journald cannot write there.
    return [HostDirectory(source, *ctx.mapped_root)]
