"""Reading an OCI runtime config and checking the parts of its shape we rely on.

parse_config() is pure (bytes in, dict out), under the JSON rules the copy-up helper
shares (fsguard.py); check_config() reports the first field the transformer cannot
work with, by JSON pointer. The full OCI schema check is `oci-systemd validate`
(schema.py); this is the subset that keeps the core honest.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ConfigError
from .fsguard import parse_json
from .pointer import pointer

_KNOWN_OCI_VERSION = re.compile(r"^1\.[0-9]+\.[0-9]+(-[0-9A-Za-z.+-]*)?(\+[0-9A-Za-z.-]*)?$")


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
        # REQUIRED on Linux (runtime-spec config.md, "Root"): it names the rootfs.
        if "path" not in root:
            c.fail(("root", "path"), "is required")
        c.kind(root["path"], ("root", "path"), str, "a string")
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
