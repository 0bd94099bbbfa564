"""/etc/machine-id and container_uuid (patches/machine-id.json)."""

from __future__ import annotations

import re

from .. import mounts
from ..draft import Draft, SideFile
from .context import Context
from .environment import env_value

CONCERN = "machine-id"

_HEX32_PREFIX = re.compile(r"^[0-9a-fA-F]{32}")
_ID128 = re.compile(r"^[0-9a-f]{32}$")


def machine_id_for(container_id: str) -> str:
    """32 lowercase hex characters, never all zeros (systemd rejects a null id).

    Docker and podman IDs are 64 hex characters: their first 32 are used as they are,
    the way podman derives container_uuid. Any other ID is hashed, stably.
    """
    if _HEX32_PREFIX.match(container_id):
        candidate = container_id[:32].lower()
        if candidate != "0" * 32:
            return candidate
    import hashlib  # loads OpenSSL: only IDs that are not already hex pay for it

    digest = hashlib.sha256(b"oci-systemd machine-id\0" + container_id.encode("utf-8", "surrogateescape"))
    candidate = digest.hexdigest()[:32]
    while candidate == "0" * 32:  # astronomically unlikely, but the rule is absolute
        digest = hashlib.sha256(digest.digest())
        candidate = digest.hexdigest()[:32]
    return candidate


def id_from_container_uuid(value: str) -> str | None:
    """systemd accepts container_uuid as 32 hex digits or as a dashed UUID."""
    candidate = value.replace("-", "").lower()
    if _ID128.match(candidate) and candidate != "0" * 32:
        return candidate
    return None


def contribute(draft: Draft, ctx: Context) -> list[SideFile]:
    policy = ctx.options.policy.machine_id
    side: list[SideFile] = []
    source = f"{policy.side_directory}/{policy.source}"

    # Relative bind sources are relative to the bundle (runtime-spec, runc, crun), so
    # the bundle stays relocatable and the patch stays host-independent.
    if mounts.add_unless_mounted(
        draft,
        {"destination": policy.destination, "type": "bind", "source": source, "options": list(policy.options)},
        CONCERN,
        f"{policy.bind_why} (machine-id {ctx.machine_id})",
        ctx.resolve_quietly,
    ):
        side.append(SideFile(source, (ctx.machine_id + "\n").encode("ascii"), 0o444))

    env = draft.get("process", "env")
    current = env_value(env or [], policy.env)
    if current is not None:
        if id_from_container_uuid(current) != ctx.machine_id:
            draft.note("warning", CONCERN, f"{policy.env}={current} kept, but it does not match /etc/machine-id")
        else:
            draft.note("kept", CONCERN, f"{policy.env} is already set")
    else:
        if env is None:
            draft.ensure_object(("process",), CONCERN, "the config has no process section")
            draft.add(("process", "env"), [], CONCERN, "the config has no process.env")
        draft.add(("process", "env", "-"), f"{policy.env}={ctx.machine_id}", CONCERN, policy.env_why)

    _mask_commit_units(draft, ctx, side)
    return side


def _mask_commit_units(draft: Draft, ctx: Context, side: list[SideFile]) -> None:
    policy = ctx.options.policy.machine_id
    if not policy.mask_units:
        return
    # The mask files are created inside whatever is mounted over the unit directory.
    covering = mounts.covering(draft.doc["mounts"], policy.unit_directory)
    if covering is None or covering.get("type") != "tmpfs":
        draft.note(
            "warning",
            CONCERN,
            f"{policy.unit_directory} is not on a tmpfs mount; {', '.join(policy.mask_units)} not masked "
            "and may fail on a writable rootfs",
        )
        return
    mask_source = f"{policy.side_directory}/{policy.mask_source}"
    added = False
    for unit in policy.mask_units:
        mask = {
            "destination": f"{policy.unit_directory}/{unit}",
            "type": "bind",
            "source": mask_source,
            "options": list(policy.options),
        }
        added |= mounts.add_unless_mounted(draft, mask, CONCERN, policy.mask_why)
    if added:
        side.append(SideFile(mask_source, b"", 0o444))
