"""PID 1's environment (patches/environment.json)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ..draft import Draft
from .context import Context

if TYPE_CHECKING:
    from ..policy import Reader

CONCERN = "environment"


class EnvVar(NamedTuple):
    name: str
    value: str
    why: str


class EnvironmentPolicy(NamedTuple):
    why: str
    set: tuple[EnvVar, ...]


def _parse_var(e: Reader) -> EnvVar:
    var = e.record(EnvVar)
    if not var.name or "=" in var.name:
        e.fail("must be a variable name without '='", "name")
    return var


def parse(r: Reader) -> EnvironmentPolicy:
    return r.record(EnvironmentPolicy, set=tuple(_parse_var(e) for e in r.objs("set")))


DOCUMENTS = {CONCERN: parse}


def env_value(env: list[str], name: str) -> str | None:
    """The value of NAME in an OCI env list (the first NAME=, as execve sees it)."""
    for entry in env:
        key, sep, value = entry.partition("=")
        if sep and key == name:
            return value
    return None


def add_var(draft: Draft, name: str, value: str, concern: str, why: str) -> None:
    """Append NAME=VALUE to process.env, making the list (and process) when missing."""
    if draft.get("process", "env") is None:
        draft.ensure_object(("process",), concern, "the config has no process section")
        draft.add(("process", "env"), [], concern, "the config has no process.env")
    draft.add(("process", "env", "-"), f"{name}={value}", concern, why)


def set_unless_set(draft: Draft, name: str, value: str, concern: str, why: str) -> str:
    """NAME=VALUE added unless the config sets NAME already (kept, and said so); the
    value PID 1 will see."""
    existing = env_value(draft.get("process", "env") or [], name)
    if existing is not None:
        draft.note("kept", concern, f"{name}={existing} kept (the config already sets {name}=)")
        return existing
    add_var(draft, name, value, concern, why)
    return value


def contribute(draft: Draft, ctx: Context) -> None:
    for var in ctx.options.policy.environment.set:
        set_unless_set(draft, var.name, var.value, CONCERN, var.why)
