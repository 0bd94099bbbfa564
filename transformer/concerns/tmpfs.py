"""tmpfs on /run, /run/lock, /tmp, /var/log/journal (patches/tmpfs.json)."""

from __future__ import annotations

from .. import mounts
from ..draft import Draft
from ..rootfs import ResolveError
from .context import Context

CONCERN = "tmpfs"


def contribute(draft: Draft, ctx: Context) -> list[str]:
    """Add the policy's tmpfs mounts; return the destinations that want copy-up."""
    policy = ctx.options.policy.tmpfs
    wanted = list(policy.mounts)
    if ctx.readonly_root:
        wanted += policy.readonly_root
    copy_up: list[str] = []
    draft.ensure_list(("mounts",), CONCERN, "the config has no mounts list")
    for entry in wanted:
        try:
            destination = ctx.rootfs.resolve(entry.destination)
        except ResolveError:
            draft.note("warning", CONCERN, f"{entry.destination} loops inside the rootfs; no tmpfs added there")
            continue
        existing = mounts.find(draft.doc["mounts"], destination, ctx.resolve_quietly)
        if existing is None and destination != entry.destination:
            existing = mounts.find(draft.doc["mounts"], entry.destination, ctx.resolve_quietly)
        if existing is not None:
            mount = draft.doc["mounts"][existing]
            draft.note(
                "kept",
                CONCERN,
                f"{entry.destination}: the config already mounts {mount.get('type', 'something')} there; no tmpfs added",
                ("mounts", existing),
            )
            continue
        options = list(entry.options)
        options.append(f"size={ctx.options.tmpfs_size or entry.size or policy.default_size}")
        if ctx.mount_label:
            # Quoted: SELinux labels contain ',' (categories), the mount option separator.
            options.append(f'context="{ctx.mount_label}"')
        why = entry.why
        if destination != entry.destination:
            why += f" ({entry.destination} is a symlink in the rootfs; the runtime mounts on {destination})"
        index = mounts.insertion_index(draft.doc["mounts"], destination)
        draft.add(
            ("mounts", index),
            {"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": options},
            CONCERN,
            why,
        )
        if entry.copy_up:
            copy_up.append(destination)
    return copy_up
