"""JSON decoding (and a small encoder) without importing ``re`` and ``enum``.

``json.loads`` pulls in ``json.decoder`` -> ``re`` -> ``enum``: about 10 ms of start-up
on these machines, which is most of the helper's budget when it has nothing to copy
(it runs on every container start). The C scanner behind ``json`` (``_json``) needs
none of that, so we drive it directly and fall back to ``json`` where it is missing.
Only errors take the slow path: they are re-parsed by ``json`` for its message.
"""

from __future__ import annotations

_WHITESPACE = " \t\n\r"


class _Context:
    # The attributes _json.make_scanner reads from its context (json.JSONDecoder's).
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str):
        # NaN and Infinity are not JSON; an OCI state or config never carries them.
        raise ValueError(f"non-standard JSON constant {name}")


try:
    import _json

    _scan = _json.make_scanner(_Context())
except (ImportError, AttributeError):  # pragma: no cover - CPython always has _json
    _scan = None


def loads(text: str):
    """Decode one JSON document, raising ValueError with json's message on error."""
    if _scan is not None:
        body = text.strip(_WHITESPACE)
        try:
            value, end = _scan(body, 0)
        except (StopIteration, ValueError, RecursionError, SystemError):
            # SystemError: on malformed input the C scanner wants json.decoder (for
            # JSONDecodeError) already imported; json below gives the real message.
            pass
        else:
            if end == len(body):
                return value
    import json  # error path (or no _json): let json produce the precise message

    return json.loads(text, parse_constant=_Context.parse_constant)


def dumps(value) -> str:
    """Encode None, bools, ints, strings, lists and dicts with string keys as ASCII
    JSON (the user-namespace child's report: json.encoder would import ``re``)."""
    try:
        from _json import encode_basestring_ascii as quote
    except ImportError:  # pragma: no cover - CPython always has _json
        import json

        return json.dumps(value)
    out: list[str] = []

    def emit(v) -> None:
        if v is None:
            out.append("null")
        elif v is True:
            out.append("true")
        elif v is False:
            out.append("false")
        elif isinstance(v, int):
            out.append(int.__repr__(v))
        elif isinstance(v, str):
            out.append(quote(v))
        elif isinstance(v, (list, tuple)):
            out.append("[")
            for i, item in enumerate(v):
                if i:
                    out.append(",")
                emit(item)
            out.append("]")
        elif isinstance(v, dict):
            out.append("{")
            for i, (k, item) in enumerate(v.items()):
                if not isinstance(k, str):
                    raise TypeError(f"JSON object keys must be strings, not {type(k).__name__}")
                if i:
                    out.append(",")
                out.append(quote(k))
                out.append(":")
                emit(item)
            out.append("}")
        else:
            raise TypeError(f"cannot encode {type(v).__name__} as JSON")

    emit(value)
    return "".join(out)
