"""/etc/machine-id and container_uuid (patches/machine-id.json)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import mounts
from ..draft import Draft
from .context import Context
from .environment import add_var, env_value

if TYPE_CHECKING:
    from ..options import Options
    from ..policy import AbsolutePath, BundleDirectory, FileName, Reader

CONCERN = "machine-id"


class MachineIdPolicy(NamedTuple):
    why: str
    # Where side files go, relative to the bundle, unless Options.side_dir says otherwise.
    side_directory: BundleDirectory
    destination: AbsolutePath
    source: FileName
    options: tuple[str, ...]
    bind_why: str
    env: str
    env_why: str
    unit_directory: AbsolutePath
    mask_source: FileName
    mask_why: str
    mask_units: tuple[str, ...] = ()


def parse(r: Reader) -> MachineIdPolicy:
    return r.record(MachineIdPolicy)


DOCUMENTS = {CONCERN: parse}

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


def choose(config: dict[str, Any], options: Options) -> tuple[str, str]:
    """The container's machine-id, and where it comes from, in words for the review.

    An already transformed (or podman-made) config keeps the identity its container_uuid
    gives; any other gets the one its container ID derives."""
    env = (config.get("process") or {}).get("env") or []
    current = env_value(env, options.policy.machine_id.env)
    if current is not None:
        from_env = id_from_container_uuid(current)
        if from_env is not None:
            return from_env, f"from the config's {options.policy.machine_id.env}"
    return machine_id_for(options.container_id), f"from container ID {options.container_id!r}"


def contribute(draft: Draft, ctx: Context) -> None:
    policy = ctx.options.policy.machine_id
    source = ctx.options.side_source(policy.source)
    if mounts.add_unless_mounted(
        draft,
        {"destination": policy.destination, "type": "bind", "source": source, "options": list(policy.options)},
        CONCERN,
        f"{policy.bind_why} (machine-id {ctx.machine_id})",
        ctx.resolve_quietly,
    ):
        draft.side_file(source, (ctx.machine_id + "\n").encode("ascii"), 0o444)

    env = draft.get("process", "env")
    current = env_value(env or [], policy.env)
    if current is not None:
        if id_from_container_uuid(current) != ctx.machine_id:
            draft.note("warning", CONCERN, f"{policy.env}={current} kept, but it does not match /etc/machine-id")
        else:
            draft.note("kept", CONCERN, f"{policy.env} is already set")
    else:
        add_var(draft, policy.env, ctx.machine_id, CONCERN, policy.env_why)

    _mask_commit_units(draft, ctx)


def _mask_commit_units(draft: Draft, ctx: Context) -> None:
    policy = ctx.options.policy.machine_id
    if not policy.mask_units:
        return
    # The mask files are created inside whatever is mounted over the unit directory.
    if not mounts.on_tmpfs(draft.doc["mounts"], policy.unit_directory):
        draft.note(
            "warning",
            CONCERN,
            f"{policy.unit_directory} is not on a tmpfs mount; {', '.join(policy.mask_units)} not masked "
            "and may fail on a writable rootfs",
        )
        return
    mask_source = ctx.options.side_source(policy.mask_source)
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
        draft.side_file(mask_source, b"", 0o444)
