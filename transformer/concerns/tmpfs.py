"""tmpfs on /run, /run/lock, /tmp, /var/log/journal (patches/tmpfs.json)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from .. import mounts
from ..draft import Draft
from ..rootfs import ResolveError
from .context import Context

if TYPE_CHECKING:
    from ..policy import AbsolutePath, Reader

CONCERN = "tmpfs"


class TmpfsMount(NamedTuple):
    destination: AbsolutePath
    options: tuple[str, ...]
    why: str
    copy_up: bool = False
    size: str | None = None  # None: the policy's defaultSize


class TmpfsPolicy(NamedTuple):
    why: str
    default_size: str
    mounts: tuple[TmpfsMount, ...]
    # Added too when root.readonly is true.
    readonly_root: tuple[TmpfsMount, ...]


def _parse_mount(m: Reader) -> TmpfsMount:
    mount = m.record(TmpfsMount)
    for i, option in enumerate(mount.options):
        if option.startswith("size="):
            m.fail("put the size in \"size\", not in options", "options", i)
    return mount


def parse(r: Reader) -> TmpfsPolicy:
    return r.record(
        TmpfsPolicy,
        mounts=tuple(_parse_mount(m) for m in r.objs("mounts")),
        readonly_root=tuple(_parse_mount(m) for m in r.objs("readonlyRoot", [])),
    )


DOCUMENTS = {CONCERN: parse}


def contribute(draft: Draft, ctx: Context) -> None:
    """Add the policy's tmpfs mounts; record in the draft those that want copy-up."""
    policy = ctx.options.policy.tmpfs
    wanted = list(policy.mounts)
    if ctx.readonly_root:
        wanted += policy.readonly_root
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
            draft.want_copy_up(destination)
