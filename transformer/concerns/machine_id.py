"""/etc/machine-id and container_uuid (patches/machine-id.json)."""

from __future__ import annotations

import re

from .. import mounts
from ..draft import Draft, SideFile
from .context import Context

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


def existing_container_uuid(env: list[str], name: str) -> str | None:
    for entry in env:
        key, sep, value = entry.partition("=")
        if sep and key == name:
            return value
    return None


def contribute(draft: Draft, ctx: Context) -> list[SideFile]:
    policy = ctx.options.policy.machine_id
    side: list[SideFile] = []
    source = f"{policy.side_directory}/{policy.source}"

    existing = mounts.find(draft.doc["mounts"], policy.destination, ctx.resolve_quietly)
    if existing is not None:
        draft.note("kept", CONCERN, f"{policy.destination} is already mounted by the config", ("mounts", existing))
    else:
        at = mounts.insertion_index(draft.doc["mounts"], policy.destination)
        # Relative bind sources are relative to the bundle (runtime-spec, runc, crun),
        # so the bundle stays relocatable and the patch stays host-independent.
        draft.add(
            ("mounts", at),
            {"destination": policy.destination, "type": "bind", "source": source, "options": list(policy.options)},
            CONCERN,
            f"{policy.bind_why} (machine-id {ctx.machine_id})",
        )
        side.append(SideFile(source, (ctx.machine_id + "\n").encode("ascii"), 0o444))

    env = draft.get("process", "env")
    current = existing_container_uuid(env or [], policy.env)
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
    # Only a tmpfs is safe: on a host bind the runtime would create them on the host.
    covering = None
    for i, mount in enumerate(draft.doc["mounts"]):
        dest = mounts.normalise(mount.get("destination", ""))
        if dest == policy.unit_directory or mounts.is_under(policy.unit_directory, dest):
            covering = i
    if covering is None or draft.doc["mounts"][covering].get("type") != "tmpfs":
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
        dest = f"{policy.unit_directory}/{unit}"
        existing = mounts.find(draft.doc["mounts"], dest)
        if existing is not None:
            draft.note("kept", CONCERN, f"{unit} is already masked by the config", ("mounts", existing))
            continue
        at = mounts.insertion_index(draft.doc["mounts"], dest)
        draft.add(
            ("mounts", at),
            {"destination": dest, "type": "bind", "source": mask_source, "options": list(policy.options)},
            CONCERN,
            policy.mask_why,
        )
        added = True
    if added:
        side.append(SideFile(mask_source, b"", 0o444))
