"""Putting the image's content back into the new tmpfs mounts (patches/copy-up.json)."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, NamedTuple

from .. import mounts
from ..draft import Draft
from ..errors import OptionsError
from .context import Context

if TYPE_CHECKING:
    from ..policy import Reader

CONCERN = "copy-up"


class CopyUpPolicy(NamedTuple):
    why: str
    # hook.stage, hook.name, ...: how the runtime runs our helper
    hook_stage: str
    hook_name: str
    hook_script: str
    hook_timeout: int
    hook_why: str
    hook_delegate_why: str
    # native.option, native.why: the runtime's own copy-up
    native_option: str
    native_why: str


def parse(r: Reader) -> CopyUpPolicy:
    policy = r.record(CopyUpPolicy, sub={"hook_": r.obj("hook"), "native_": r.obj("native")})
    if policy.hook_stage not in ("prestart", "createRuntime"):
        r.fail("must be prestart or createRuntime (the stages that see the new mounts before pivot_root)",
               "hook", "stage")
    return policy


DOCUMENTS = {CONCERN: parse}


def _registered(draft: Draft, name: str, script: str) -> str | None:
    """The stage our helper is already registered in, whichever way it is run: the
    console script, or an interpreter running its hook.py."""
    for stage, hooks in (draft.get("hooks") or {}).items():
        for hook in hooks:
            words = [hook.get("path", "")] + list(hook.get("args") or [])
            if any(posixpath.basename(w) == name or w.endswith("/" + script) for w in words):
                return stage
    return None


def contribute(draft: Draft, ctx: Context) -> None:
    """Have the tmpfs mounts that want it filled with the image's content: by the
    runtime (native), or by our prestart helper, which a user namespace needs anyway."""
    policy = ctx.options.policy.copy_up
    destinations = list(draft.copy_up_destinations)
    if ctx.options.copy_up == "native":
        for dest in destinations:
            index = mounts.find(draft.doc["mounts"], dest)
            assert index is not None, dest  # added by the tmpfs concern in this plan
            if policy.native_option not in draft.doc["mounts"][index]["options"]:
                draft.add(("mounts", index, "options", "-"), policy.native_option, CONCERN, policy.native_why)
        destinations = []  # the runtime copies; the helper is wanted only for delegation
    if not destinations and not ctx.user_namespace:
        return
    stage = _registered(draft, policy.hook_name, policy.hook_script)
    if stage is not None:
        draft.note("kept", CONCERN, f"{policy.hook_name} is already registered as a {stage} hook")
        return
    command = ctx.options.hook_command
    if command is None:
        if destinations:
            raise OptionsError(f"cannot find {policy.hook_name}; pass --hook-path or use --copy-up native")
        raise OptionsError(f"cannot find {policy.hook_name}, which a user namespace needs; pass --hook-path")
    does = []
    if ctx.user_namespace:
        does.append(policy.hook_delegate_why)
    if destinations:
        does.append(f"copies {', '.join(destinations)}")
    draft.ensure_object(("hooks",), CONCERN, "the config has no hooks")
    draft.ensure_list(("hooks", policy.hook_stage), CONCERN, f"the config has no {policy.hook_stage} hooks")
    draft.add(
        ("hooks", policy.hook_stage, "-"),
        {
            "path": command[0],
            "args": [posixpath.basename(command[0]), *command[1:], "--stage", policy.hook_stage, *destinations],
            "timeout": policy.hook_timeout,
        },
        CONCERN,
        f"{policy.hook_why}; " + "; ".join(does),
    )
