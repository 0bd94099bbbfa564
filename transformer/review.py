"""A human-readable account of every change, computed by deepdiff, explained by the ops.

deepdiff compares the config before and after (it, not our own bookkeeping, says what
changed); each difference is then matched to the op that caused it, which carries the
concern and the reason. deepdiff is imported only here, only when a review is asked
for, because its import alone costs more than a whole `plan`.
"""

from __future__ import annotations

import json
from typing import Any

from .draft import Plan
from .pointer import escape, pointer

_KINDS = {
    "dictionary_item_added": "added",
    "iterable_item_added": "added",
    "values_changed": "changed",
    "type_changes": "changed",
    "dictionary_item_removed": "removed",
    "iterable_item_removed": "removed",
}
_MISSING = object()


def _explain(plan: Plan, at: str) -> tuple[str, str]:
    """The op behind the difference at `at`: the op at that very place, else the first
    op that filled it (deepdiff reports a new /hooks object once, for all its ops),
    else the op that created an enclosing value. Parent-creating ops come last."""
    same = [op for op in plan.ops if op.at == at]
    inside = [op for op in plan.ops if op.at.startswith(at + "/")]
    around = sorted((op for op in plan.ops if at.startswith(op.at + "/")), key=lambda op: -len(op.at))
    for op in sorted(same + inside + around, key=lambda op: op.structural):  # stable sort
        return op.concern, op.why
    return "unexplained", "no op of this plan explains this difference"


def review_data(before: dict[str, Any], plan: Plan, label: str) -> dict[str, Any]:
    from deepdiff import DeepDiff

    changes = []
    created = {op.at for op in plan.ops if op.structural}
    replaced = {op.at: op.value for op in plan.ops if op.op == "replace"}
    # ignore_order: an insertion into mounts is one added item, not every later mount
    # "changed". The cut-offs at 1.0 make deepdiff pair a changed mount with its old self
    # however many mounts were added around it, so a new option shows as added to that
    # mount instead of the mount being removed and re-added.
    diff = DeepDiff(
        before,
        plan.config,
        view="tree",
        ignore_order=True,
        cutoff_intersection_for_pairs=1.0,
        cutoff_distance_for_pairs=1.0,
    )
    for report, levels in diff.items():
        kind = _KINDS.get(report)
        if kind is None:
            continue
        for level in levels:
            use_t2 = kind != "removed"
            at = pointer(level.path(output_format="list", use_t2=use_t2))
            if kind == "added":
                # A whole new /mounts or /hooks is one difference to deepdiff; show its
                # members one by one, each with the reason of the op that put it there.
                for member_at, member in _members(at, level.t2, created):
                    concern, why = _explain(plan, member_at)
                    changes.append(
                        {"kind": kind, "pointer": member_at, "old": None, "new": member, "concern": concern, "why": why}
                    )
                continue
            if kind == "changed" and at not in replaced and _paired_scalars(level):
                # Ignoring order, deepdiff pairs a removed list item with an added one
                # ("CAP_AUDIT_WRITE" -> "CAP_SYS_CHROOT"); no op changed that place, one
                # op removed the old value and another added the new one: say both.
                old_at = pointer(level.path(output_format="list"))
                for kind_, place, old, new in (("removed", old_at, level.t1, None), ("added", at, None, level.t2)):
                    concern, why = _explain(plan, place)
                    changes.append({"kind": kind_, "pointer": place, "old": old, "new": new,
                                    "concern": concern, "why": why})
                continue
            concern, why = _explain(plan, at)
            old = level.t1
            new = None if kind == "removed" else level.t2
            if kind == "removed":
                # ["ro", "rw"] made ["ro", "ro"]: ignoring order, deepdiff sees an item
                # vanish; what happened is the replace op at that very place.  The op's
                # pointer is in the new document's terms, where mounts added before this
                # one moved it: read the place through the list's new position too.
                moved = _new_place(level)
                for place in (at, moved):
                    if place in replaced:
                        kind, new, at = "changed", replaced[place], place
                        concern, why = _explain(plan, at)
                        break
            changes.append({"kind": kind, "pointer": at, "old": old, "new": new, "concern": concern, "why": why})
    order = {op.at: i for i, op in enumerate(plan.ops)}
    # In op order (the order the patch applies them), then by pointer: stable output.
    changes.sort(key=lambda c: (_op_rank(order, c["pointer"]), c["pointer"]))
    return {
        "bundle": label,
        "systemd": plan.systemd,
        "facts": dict(plan.facts),
        "ops": len(plan.ops),
        "changes": changes,
        "notes": [
            {"kind": n.kind, "concern": n.concern, "pointer": n.pointer, "message": n.message} for n in plan.notes
        ],
        "sideFiles": [
            {"path": s.path, "mode": f"{s.mode:04o}", "content": s.content.decode("utf-8", "replace")}
            for s in plan.side_files
        ],
    }


def _paired_scalars(level) -> bool:
    """Two scalars of a list that deepdiff paired only because order is ignored."""
    parent = level.up
    return (parent is not None and isinstance(parent.t1, list) and isinstance(parent.t2, list)
            and not isinstance(level.t1, (dict, list)) and not isinstance(level.t2, (dict, list)))


def _new_place(level) -> str | None:
    """The pointer of a removed list item at the same index in its list's new place."""
    parent = level.up
    if parent is None or parent.t2 is None or not isinstance(parent.t2, list):
        return None
    key = level.path(output_format="list")[-1]
    return pointer([*parent.path(output_format="list", use_t2=True), key])


def _members(at: str, value: Any, created: set[str]):
    if at in created and isinstance(value, (dict, list)) and value:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, member in items:
            yield from _members(f"{at}/{escape(key)}", member, created)
    else:
        yield at, value


def _op_rank(order: dict[str, int], at: str) -> int:
    best = len(order)
    best_len = -1
    for op_at, i in order.items():
        if (at == op_at or at.startswith(op_at + "/")) and len(op_at) > best_len:
            best, best_len = i, len(op_at)
    return best


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def render_text(data: dict[str, Any]) -> str:
    lines = [f"oci-systemd review: {data['bundle']}"]
    width = max(len(k) for k in data["facts"]) + 1
    for key, value in data["facts"].items():
        lines.append(f"  {key + ':':<{width}} {value}")
    lines.append("")
    if not data["changes"]:
        lines.append("No changes.")
    else:
        lines.append(f"Changes ({len(data['changes'])} differences from {data['ops']} ops, found by deepdiff):")
        previous_why = None
        for change in data["changes"]:
            mark = {"added": "+", "changed": "~", "removed": "-"}[change["kind"]]
            if change["kind"] == "added":
                detail = _value(change["new"])
            elif change["kind"] == "changed":
                detail = f"{_value(change['old'])} -> {_value(change['new'])}"
            else:
                detail = _value(change["old"])
            why = (change["concern"], change["why"])
            if previous_why is not None and why != previous_why:
                lines.append(f"      why ({previous_why[0]}): {previous_why[1]}")
            lines.append(f"  {mark} {change['kind']:<7} {change['pointer']}  {detail}")
            previous_why = why
        if previous_why is not None:
            lines.append(f"      why ({previous_why[0]}): {previous_why[1]}")
    for kind, title in (("kept", "Kept"), ("warning", "Warnings"), ("info", "Notes")):
        notes = [n for n in data["notes"] if n["kind"] == kind]
        if notes:
            lines.append("")
            lines.append(f"{title}:")
            for n in notes:
                where = f" {n['pointer']}" if n["pointer"] else ""
                lines.append(f"  = ({n['concern']}){where} {n['message']}")
    if data["sideFiles"]:
        lines.append("")
        lines.append("Side files (written next to config.json by apply):")
        for s in data["sideFiles"]:
            content = s["content"].strip() or "(empty)"
            if "\n" in content:
                # A script (the seccomp generator): its first line and size, not its body;
                # the body is policy, reviewed where it lives (patches/).
                first = content.splitlines()[0]
                content = f"{first} ... ({len(s['content'].encode('utf-8', 'replace'))} bytes)"
            lines.append(f"  {s['path']} (mode {s['mode']}): {content}")
    return "\n".join(lines) + "\n"
