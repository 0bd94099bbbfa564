"""PID 1's environment (patches/environment.json)."""

from __future__ import annotations

from ..draft import Draft
from .context import Context

CONCERN = "environment"


def contribute(draft: Draft, ctx: Context) -> None:
    for var in ctx.options.policy.environment.set:
        env = draft.get("process", "env")
        existing = next((e for e in env or [] if e.partition("=")[0] == var.name and "=" in e), None)
        if existing is not None:
            draft.note("kept", CONCERN, f"{existing} kept (the config already sets {var.name}=)")
            continue
        if env is None:
            draft.ensure_object(("process",), CONCERN, "the config has no process section")
            draft.add(("process", "env"), [], CONCERN, "the config has no process.env")
        draft.add(("process", "env", "-"), f"{var.name}={var.value}", CONCERN, var.why)
