"""RFC 6901 JSON pointers. Annotation keys contain '/', so every token is escaped."""

from __future__ import annotations

from typing import Iterable


def escape(token: str | int) -> str:
    if type(token) is int:
        return str(token)
    if "~" in token or "/" in token:  # type: ignore[operator]
        # '~' first: escaping '/' introduces '~1', which must not be re-escaped.
        return token.replace("~", "~0").replace("/", "~1")  # type: ignore[union-attr]
    return token  # type: ignore[return-value]


def pointer(tokens: Iterable[str | int]) -> str:
    return "".join(["/" + escape(t) for t in tokens])
