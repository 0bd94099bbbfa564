"""`oci-systemd validate`: the official OCI runtime-spec JSON schema, every problem at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from .errors import SchemaError
from .pointer import pointer

# Debian's golang-github-opencontainers-specs-dev installs the schema here.
DEFAULT_SCHEMA_DIR = Path("/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema")

# Which part of the runtime-spec each top-level field is defined in.
_SPEC_SECTION = {
    "ociVersion": "config.md#specification-version",
    "root": "config.md#root",
    "mounts": "config.md#mounts",
    "process": "config.md#process",
    "hostname": "config.md#hostname",
    "hooks": "config.md#posix-platform-hooks",
    "annotations": "config.md#annotations",
    "linux": "config-linux.md",
}


class Problem(NamedTuple):
    pointer: str
    message: str
    spec: str


def load_validator(schema_dir: Path | None = None):
    directory = schema_dir or DEFAULT_SCHEMA_DIR
    main = directory / "config-schema.json"
    if not main.is_file():
        raise SchemaError(
            "OCI runtime-spec schema not found (install golang-github-opencontainers-specs-dev or pass --schema-dir)",
            file=str(main),
        )
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    resources = []
    for path in sorted(directory.glob("*.json")):
        try:
            contents = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaError(f"cannot read schema: {exc}", file=str(path)) from None
        resources.append((path.resolve().as_uri(), Resource.from_contents(contents, default_specification=DRAFT4)))
    registry = Registry().with_resources(resources)
    schema = dict(registry.contents(main.resolve().as_uri()))
    # Relative $refs ("defs.json#/...") resolve against the main file's URI; draft 4
    # names the base URI "id", not "$id".
    schema.setdefault("id", main.resolve().as_uri())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)
    return cls(schema, registry=registry)


def validate(config: Any, validator) -> list[Problem]:
    problems = []
    for error in validator.iter_errors(config):
        tokens = list(error.absolute_path)
        section = _SPEC_SECTION.get(str(tokens[0]), "config.md") if tokens else "config.md"
        problems.append(Problem(pointer(tokens) or "/", error.message, f"runtime-spec {section}"))
    problems.sort(key=lambda p: (p.pointer, p.message))
    return problems
