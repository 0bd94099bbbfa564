"""The stop signal annotations (patches/annotations.json)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ..draft import Draft
from .context import Context

if TYPE_CHECKING:
    from ..policy import Reader

CONCERN = "annotations"


class Annotation(NamedTuple):
    """One annotation of annotations.json: the value it must have, and why."""

    key: str
    value: str
    # The values that already mean `value` (default: itself alone).
    equivalent: tuple[str, ...]
    why: str


class AnnotationsPolicy(NamedTuple):
    why: str
    set: tuple[Annotation, ...]


def parse(r: Reader) -> AnnotationsPolicy:
    items = tuple(a.record(Annotation, equivalent=a.strs("equivalent", [a.str("value")])) for a in r.objs("set"))
    return r.record(AnnotationsPolicy, set=items)


DOCUMENTS = {CONCERN: parse}


def contribute(draft: Draft, ctx: Context) -> None:
    policy = ctx.options.policy.annotations
    for item in policy.set:
        current = draft.get("annotations", item.key)
        if current is not None and current.strip().upper() in {e.upper() for e in item.equivalent}:
            draft.note("kept", CONCERN, f"{item.key}={current} already means {item.value}")
            continue
        draft.ensure_object(("annotations",), CONCERN, "the config has no annotations")
        if current is None:
            draft.add(("annotations", item.key), item.value, CONCERN, item.why)
        else:
            draft.replace(
                ("annotations", item.key),
                item.value,
                CONCERN,
                f"{item.why}; was {current!r}, which does not stop systemd cleanly",
            )
