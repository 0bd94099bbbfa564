"""Where the journal lives: the tmpfs (default) or the host (patches/journal.json).

In host mode the core adds one bind mount and records the host directory it needs in
the draft (Plan.host_directories); creating that directory is the edge's job (apply,
filter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from .. import mounts
from ..draft import Draft
from .context import Context

if TYPE_CHECKING:
    from ..policy import AbsolutePath, Reader

CONCERN = "journal"


class JournalPolicy(NamedTuple):
    why: str
    destination: AbsolutePath
    host_directory: AbsolutePath
    options: tuple[str, ...]
    bind_why: str
    registry_directory: AbsolutePath
    registry_why: str


def parse(r: Reader) -> JournalPolicy:
    policy = r.record(JournalPolicy)
    if "bind" not in policy.options and "rbind" not in policy.options:
        r.fail("must contain bind: the host directory is bind-mounted", "options")
    return policy


DOCUMENTS = {CONCERN: parse}


def host_directory(ctx: Context) -> str:
    """The host's directory for this container's journal: <hostDirectory>/<machine-id>,
    the name journald itself gives a machine's persistent journal."""
    return f"{ctx.options.policy.journal.host_directory}/{ctx.machine_id}"


def contribute(draft: Draft, ctx: Context) -> None:
    """Bind the host's per-container journal directory (host mode), and record it as a
    host directory the bundle needs."""
    if ctx.options.journal != "host":
        return
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
            return  # the user's own mount there: nothing of ours to create
    # journald runs as the container's root: with a user namespace that is a mapped
    # host uid, which must own the directory or journald cannot write there.
    draft.host_directory(source, *ctx.mapped_root)
