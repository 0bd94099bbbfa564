"""The capability set systemd needs (patches/capabilities.json)."""

from __future__ import annotations

from ..draft import Draft
from .context import Context

CONCERN = "capabilities"


def contribute(draft: Draft, ctx: Context) -> None:
    policy = ctx.options.policy.capabilities
    wanted = ctx.options.capabilities if ctx.options.capabilities is not None else policy.capabilities
    why = policy.why
    if ctx.options.capabilities is not None:
        why = "the capability set given with --capabilities"
    if draft.get("process", "capabilities") is None:
        draft.ensure_object(("process",), CONCERN, "the config has no process section")
        draft.add(("process", "capabilities"), {}, CONCERN, "the config has no process.capabilities")
    for name in policy.sets:
        current = draft.get("process", "capabilities", name)
        if current is None:
            draft.add(("process", "capabilities", name), list(wanted), CONCERN, why)
            continue
        missing = [cap for cap in wanted if cap not in current]
        for cap in missing:
            draft.add(("process", "capabilities", name, "-"), cap, CONCERN, why)
        if not missing:
            draft.note("kept", CONCERN, f"{name} already holds every capability systemd needs")
    # Never widen the user's grant to CAP_SYS_ADMIN; say so if they granted it themselves.
    for name, caps in (draft.get("process", "capabilities") or {}).items():
        for cap in policy.forbidden:
            if cap in caps:
                draft.note("warning", CONCERN, f"the config itself grants {cap} in {name}; kept, but systemd does not need it")
