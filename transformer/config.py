"""Reading an OCI runtime config and checking the parts of its shape we rely on.

parse_config() is pure (bytes in, dict out); check_config() reports the first field
the transformer cannot work with, by JSON pointer. The full OCI schema check is
`oci-systemd validate` (schema.py); this is the subset that keeps the core honest.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import ConfigError
from .pointer import pointer

# Real configs are a few KiB; podman's with many mounts stays far below 1 MiB.
# A larger file is refused before it is read, so a 200 MB config costs nothing.
MAX_CONFIG_BYTES = 4 * 1024 * 1024

_KNOWN_OCI_VERSION = re.compile(r"^1\.[0-9]+\.[0-9]+(-[0-9A-Za-z.+-]*)?(\+[0-9A-Za-z.-]*)?$")


class _Duplicate(dict):
    """An object that had a key twice (the last value kept), marked so that parse_json
    can name its JSON pointer once the whole document is decoded."""

    duplicate: str = ""


class _NonFinite:
    """A number too large for a double (1e999): json would decode it as inf, and
    json.dumps would then write the invalid token Infinity into config.json."""

    def __init__(self, text: str):
        self.text = text


class _Decoding:
    """Per-document hooks: cheap flags on the fast path, a walk only when one is set."""

    def __init__(self) -> None:
        self.suspicious = False

    def pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            self.suspicious = True
            seen: set[str] = set()
            marked = _Duplicate(obj)
            marked.duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            return marked
        return obj

    def number(self, text: str) -> Any:
        value = float(text)
        if value in (math.inf, -math.inf):
            self.suspicious = True
            return _NonFinite(text)
        return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _first_problem(doc: Any) -> tuple[tuple, str] | None:
    """(tokens, message) of the first value JSON cannot carry through a round trip:
    a duplicated key, an out-of-range number, a lone UTF-16 surrogate (\\ud800 decodes to
    a str that cannot be encoded as UTF-8 again)."""
    stack: list[tuple[tuple, Any]] = [((), doc)]
    while stack:
        tokens, value = stack.pop()
        if isinstance(value, _Duplicate):
            return tokens + (value.duplicate,), f"duplicate key {value.duplicate!r}"
        if isinstance(value, _NonFinite):
            return tokens, f"the number {value.text} is out of range"
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return tokens, "contains a lone UTF-16 surrogate escape, which is not a Unicode character"
        elif isinstance(value, dict):
            for key in reversed(list(value)):
                if _SURROGATE.search(key):
                    return tokens, f"key {key!r} contains a lone UTF-16 surrogate escape"
                stack.append((tokens + (key,), value[key]))
        elif isinstance(value, list):
            stack.extend((tokens + (i,), item) for i, item in reversed(list(enumerate(value))))
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json(data: bytes, file: str) -> Any:
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; refusing to read it", file=file)
    if data.startswith(b"\xef\xbb\xbf"):
        raise ConfigError("starts with a UTF-8 byte-order mark, which JSON forbids", file=file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not UTF-8 (byte {exc.start})", file=file) from None
    if not text.strip():
        raise ConfigError("is empty", file=file)
    decoding = _Decoding()
    try:
        doc = json.loads(text, object_pairs_hook=decoding.pairs, parse_constant=_no_constant, parse_float=decoding.number)
    except RecursionError:
        raise ConfigError("is nested too deeply", file=file) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", file=file) from None
    except ValueError as exc:
        raise ConfigError(f"is not valid JSON: {exc}", file=file) from None
    # A surrogate can only come from a \\uXXXX escape: valid UTF-8 input cannot hold one.
    if decoding.suspicious or "\\u" in text:
        problem = _first_problem(doc)
        if problem is not None:
            tokens, message = problem
            raise ConfigError(message, file=file, pointer=pointer(tokens) or "/")
    return doc


def parse_config(data: bytes, file: str) -> dict[str, Any]:
    config = parse_json(data, file)
    check_config(config, file)
    return config


class _Check:
    def __init__(self, file: str | None):
        self.file = file

    def fail(self, tokens: tuple, message: str) -> None:
        raise ConfigError(message, file=self.file, pointer=pointer(tokens) or "/")

    def kind(self, value: Any, tokens: tuple, kind: type, name: str) -> None:
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.fail(tokens, f"must be {name}, not {_json_type(value)}")

    def strings(self, value: Any, tokens: tuple) -> None:
        self.kind(value, tokens, list, "a list of strings")
        for i, item in enumerate(value):
            self.kind(item, tokens + (i,), str, "a string")

    def optional(self, obj: dict, key: str, tokens: tuple, kind: type, name: str) -> Any:
        if key in obj:
            self.kind(obj[key], tokens + (key,), kind, name)
        return obj.get(key)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def check_config(config: Any, file: str | None) -> None:
    c = _Check(file)
    c.kind(config, (), dict, "an object")
    if "ociVersion" not in config:
        c.fail(("ociVersion",), "is required")
    c.kind(config["ociVersion"], ("ociVersion",), str, "a string")
    if not _KNOWN_OCI_VERSION.fullmatch(config["ociVersion"]):  # match's $ accepts a trailing newline
        c.fail(("ociVersion",), f"{config['ociVersion']!r} is not a runtime-spec version this tool knows (1.x.y)")

    root = c.optional(config, "root", (), dict, "an object")
    if root is not None:
        c.optional(root, "path", ("root",), str, "a string")
        c.optional(root, "readonly", ("root",), bool, "true or false")

    process = c.optional(config, "process", (), dict, "an object")
    if process is not None:
        if "args" in process:
            c.strings(process["args"], ("process", "args"))
            if not process["args"]:
                c.fail(("process", "args"), "must not be empty")
            if not process["args"][0]:
                c.fail(("process", "args", 0), "must not be an empty string")
        if "env" in process:
            c.strings(process["env"], ("process", "env"))
        caps = c.optional(process, "capabilities", ("process",), dict, "an object")
        if caps is not None:
            for name, value in caps.items():
                c.strings(value, ("process", "capabilities", name))

    mounts = c.optional(config, "mounts", (), list, "a list")
    for i, mount in enumerate(mounts or []):
        tokens = ("mounts", i)
        c.kind(mount, tokens, dict, "an object")
        if "destination" not in mount:
            c.fail(tokens + ("destination",), "is required")
        dest = mount["destination"]
        c.kind(dest, tokens + ("destination",), str, "a string")
        if not dest.startswith("/"):
            c.fail(tokens + ("destination",), f"{dest!r} must be an absolute path")
        if ".." in dest.split("/"):
            c.fail(tokens + ("destination",), f"{dest!r} must not contain '..'")
        c.optional(mount, "type", tokens, str, "a string")
        c.optional(mount, "source", tokens, str, "a string")
        if "options" in mount:
            c.strings(mount["options"], tokens + ("options",))

    linux = c.optional(config, "linux", (), dict, "an object")
    if linux is not None:
        c.optional(linux, "cgroupsPath", ("linux",), str, "a string")
        c.optional(linux, "mountLabel", ("linux",), str, "a string")
        namespaces = c.optional(linux, "namespaces", ("linux",), list, "a list")
        for i, ns in enumerate(namespaces or []):
            c.kind(ns, ("linux", "namespaces", i), dict, "an object")
            if "type" not in ns:
                c.fail(("linux", "namespaces", i, "type"), "is required")
            c.kind(ns["type"], ("linux", "namespaces", i, "type"), str, "a string")

    annotations = c.optional(config, "annotations", (), dict, "an object")
    for key, value in (annotations or {}).items():
        c.kind(value, ("annotations", key), str, "a string")

    hooks = c.optional(config, "hooks", (), dict, "an object")
    for stage, entries in (hooks or {}).items():
        c.kind(entries, ("hooks", stage), list, "a list")
        for i, hook in enumerate(entries):
            c.kind(hook, ("hooks", stage, i), dict, "an object")
            if "path" not in hook:
                c.fail(("hooks", stage, i, "path"), "is required")
            c.kind(hook["path"], ("hooks", stage, i, "path"), str, "a string")
            if "args" in hook:
                c.strings(hook["args"], ("hooks", stage, i, "args"))
