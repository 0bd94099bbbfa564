"""RFC 6901 JSON pointers. Annotation keys contain '/', so every token is escaped."""

from __future__ import annotations

from typing import Iterable


def escape(token: str | int) -> str:
    # '~' first: escaping '/' introduces '~1', which must not be re-escaped.
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(tokens: Iterable[str | int]) -> str:
    return "".join("/" + escape(t) for t in tokens)
