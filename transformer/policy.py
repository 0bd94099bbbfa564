"""Policy as data: the JSON documents in patches/ become frozen, validated values.

Each concern module owns its documents' types and parsers (concerns/__init__.py lists
them); this module is the one reader they share and the loading of the directory.
Validation happens here, when the policy is loaded, with the file and JSON pointer of
the offending field, so that planning only applies.

A key that no parser reads is refused ("unknown field", as kustomize says): a typo
such as "copyup" for "copyUp" would otherwise switch a rule off without a word. The
only keys a document may carry for its human readers alone are:
  "$comment"   anywhere, a string (the comment keyword of JSON Schema);
  "concern"    at the top, the document's own name (a file copied under another
               name is refused rather than read as the wrong concern).
"why" is not among them: where the engine reads it, it is the reason a review shows
for the op; anywhere else it would be silently lost, so it is refused too.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TypeVar

from .concerns import PARSERS
from .errors import PolicyError
from .pointer import pointer

if TYPE_CHECKING:
    from .concerns.annotations import AnnotationsPolicy
    from .concerns.capabilities import CapabilitiesPolicy
    from .concerns.cgroups import CgroupV1Policy, CgroupV2Policy
    from .concerns.copy_up import CopyUpPolicy
    from .concerns.detection import DetectionPolicy
    from .concerns.environment import EnvironmentPolicy
    from .concerns.journal import JournalPolicy
    from .concerns.machine_id import MachineIdPolicy
    from .concerns.run_host import RunHostPolicy
    from .concerns.tmpfs import TmpfsPolicy

# The names of the documents (patches/<name>.json), in the order they are read: the
# first bad one is the one reported.
DOCUMENTS = tuple(PARSERS)

# Policy files that are not JSON documents: the seccomp generator, a POSIX sh script.
ASSETS = ("seccomp-generator.sh",)

COMMENT = "$comment"
CONCERN = "concern"

# Kinds of string a policy type may name for its fields, so that Reader.record reads
# them with their checks. Aliases of str: to a type checker they are strings.
AbsolutePath = str  # absolute, in normal form (Reader.path)
BundleDirectory = str  # relative to the bundle, in normal form, inside it
FileName = str  # a plain file name, no '/'

T = TypeVar("T", bound=tuple)


class _Document(NamedTuple):
    """What every reader of one document shares."""

    file: str
    origin: str  # the policy directory, which holds the assets too
    assets: dict[str, bytes] | None  # None: parsed without them (parse_policy alone)
    readers: list  # every Reader of the document, for _refuse_unknown


class Reader:
    """Typed field access into one object of a policy document, raising PolicyError
    with the file and pointer. It records the keys it is asked for, so that the keys
    nobody asked for can be refused once the document is parsed."""

    def __init__(self, doc: Any, document: _Document, tokens: tuple = ()):
        self.doc, self.document, self.tokens = doc, document, tokens
        self._read = {COMMENT}
        document.readers.append(self)
        if not isinstance(doc, dict):
            self.fail("must be an object")

    def fail(self, message: str, *more: str | int) -> NoReturn:
        raise PolicyError(message, file=self.document.file, pointer=pointer(self.tokens + more) or "/")

    def _get(self, key: str, kind: type, default: Any = ...) -> Any:
        self._read.add(key)
        if key not in self.doc:
            if default is ...:
                self.fail("is required", key)
            return default
        value = self.doc[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            self.fail(f"must be {_kind_name(kind)}", key)
        return value

    def str(self, key: str, default: Any = ...) -> str:
        return self._get(key, str, default)

    def bool(self, key: str, default: Any = ...) -> bool:
        return self._get(key, bool, default)

    def int(self, key: str, default: Any = ...) -> int:
        return self._get(key, int, default)

    def strs(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self._get(key, list, default)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail("must be a string", key, i)
        return tuple(value)

    def path(self, key: str) -> str:
        """An absolute path in normal form: no '//', '.', '..' or trailing '/'. A path
        the runtime would read otherwise than written never matches the config's."""
        value = self.str(key)
        # normpath keeps a leading '//' (POSIX lets it differ from '/'): refused too.
        if not value.startswith("/") or posixpath.normpath(value) != value or value.startswith("//"):
            self.fail("must be a normalised absolute path", key)
        return value

    def relative_directory(self, key: str) -> str:
        """A directory inside the bundle: relative, in normal form, never leaving it."""
        value = self.str(key)
        normal = posixpath.normpath(value) == value and ".." not in value.split("/")
        if value in ("", ".") or value.startswith("/") or not normal:
            self.fail("must be a relative directory inside the bundle", key)
        return value

    def file_name(self, key: str) -> str:
        value = self.str(key)
        if "/" in value:
            self.fail("must be a plain file name", key)
        return value

    def asset(self, key: str) -> bytes | None:
        """The content of the policy file that `key` names, beside the documents (None
        when the documents are parsed without their files)."""
        name = self.file_name(key)
        if self.document.assets is None:
            return None
        if name not in self.document.assets:
            raise PolicyError("policy file is missing", file=f"{self.document.origin}/{name}")
        return self.document.assets[name]

    def record(self, kind: type[T], sub: dict[str, "Reader"] | None = None, **given: Any) -> T:
        """A `kind` (a NamedTuple policy type) read from this object.

        Each field not `given` is read by its annotated type from the key that is its
        name in camelCase: str, bool, int, str | None, tuple[str, ...], AbsolutePath,
        BundleDirectory or FileName. A field with a default in `kind` is optional. A
        field whose name starts with a prefix of `sub` is read from that reader instead,
        by the rest of its name: with sub={"hook_": hook}, hook_stage is hook's "stage".
        Fields of any other type must be `given`."""
        values = {}
        for field, annotation in kind.__annotations__.items():
            if field in given:
                values[field] = given[field]
                continue
            reader, name = self, field
            for prefix, nested in (sub or {}).items():
                if field.startswith(prefix):
                    reader, name = nested, field[len(prefix):]
            # NamedTuple keeps a string annotation as a ForwardRef: its text is the type.
            read = _FIELD_READERS.get(getattr(annotation, "__forward_arg__", annotation))
            if read is None:
                raise TypeError(f"{kind.__name__}.{field} ({annotation}) must be given to record()")
            default = kind._field_defaults.get(field, ...)  # type: ignore[attr-defined]
            values[field] = read(reader, _camel(name), default)
        return kind(**values)

    def obj(self, key: str) -> "Reader":
        return Reader(self._get(key, dict), self.document, self.tokens + (key,))

    def objs(self, key: str, default: Any = ...) -> list["Reader"]:
        value = self._get(key, list, default)
        return [Reader(item, self.document, self.tokens + (key, i)) for i, item in enumerate(value)]


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


# How record() reads a field of each annotated type, by the annotation's text: every
# policy type is declared under `from __future__ import annotations`.
_FIELD_READERS = {
    "str": lambda r, key, default: r.str(key, default),
    "bool": lambda r, key, default: r.bool(key, default),
    "int": lambda r, key, default: r.int(key, default),
    "str | None": lambda r, key, default: r.str(key, None),
    "tuple[str, ...]": lambda r, key, default: r.strs(key, default),
    "AbsolutePath": lambda r, key, default: r.path(key),
    "BundleDirectory": lambda r, key, default: r.relative_directory(key),
    "FileName": lambda r, key, default: r.file_name(key),
}


def _kind_name(kind: type) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", list: "a list", dict: "an object"}
    return names.get(kind, "of another type")


class Policy(NamedTuple):
    """Every concern's policy: one field per document of concerns.PARSERS ('-' as '_')."""

    origin: str
    detection: DetectionPolicy
    tmpfs: TmpfsPolicy
    cgroup_v1: CgroupV1Policy
    cgroup_v2: CgroupV2Policy
    machine_id: MachineIdPolicy
    journal: JournalPolicy
    capabilities: CapabilitiesPolicy
    environment: EnvironmentPolicy
    run_host: RunHostPolicy
    annotations: AnnotationsPolicy
    copy_up: CopyUpPolicy


def field_name(document: str) -> str:
    """The Policy field of a document: 'machine-id' is policy.machine_id."""
    return document.replace("-", "_")


def _refuse_unknown(document: _Document) -> None:
    """A key that no parser of the document asked for is an error."""
    for reader in document.readers:
        for key, value in reader.doc.items():
            if key not in reader._read:
                reader.fail("unknown field", key)
            if key == COMMENT and not isinstance(value, str):
                reader.fail("must be a string", key)


def _parse_document(name: str, doc: Any, document: _Document) -> Any:
    top = Reader(doc, document)
    if top.str(CONCERN, name) != name:
        top.fail(f"names the {top.doc[CONCERN]!r} document, but this is the {name!r} one", CONCERN)
    parsed = PARSERS[name](top)
    _refuse_unknown(document)
    return parsed


def parse_policy(
    docs: dict[str, Any], origin: str = "<memory>", files: dict[str, str] | None = None,
    assets: dict[str, bytes] | None = None,
) -> Policy:
    """Pure: turn the already-loaded documents (name -> JSON value) into a Policy.
    `files` names where each document came from, for error messages; `assets` holds
    the non-JSON files the documents name (the seccomp generator script)."""
    parsed = {}
    for name in DOCUMENTS:
        file = (files or {}).get(name, f"{origin}/{name}.json")
        if name not in docs:
            raise PolicyError("policy document is missing", file=file)
        parsed[field_name(name)] = _parse_document(name, docs[name], _Document(file, origin, assets, []))
    return Policy(origin=origin, **parsed)


def default_policy_dir() -> Path:
    here = Path(__file__).resolve().parent
    # Installed wheel: transformer/patches; source checkout or editable install: ../patches.
    for candidate in (here / "patches", here.parent / "patches"):
        if (candidate / "tmpfs.json").is_file():
            return candidate
    raise PolicyError("the built-in policy (patches/) is not installed next to the package", file=str(here))


def load_policy(directory: Path | None = None) -> Policy:
    """Edge: read the policy documents (the built-in ones by default).

    A user's --policy DIR need only hold the documents it changes: each one present
    replaces the built-in document of the same name, the others stay built-in. So a
    concern added by an upgrade does not break a directory written before it."""
    builtin = default_policy_dir()
    directory = directory or builtin
    if not directory.is_dir():
        raise PolicyError("is not a directory", file=str(directory))
    if directory != builtin and not any((directory / f"{name}.json").is_file() for name in DOCUMENTS):
        raise PolicyError(f"holds none of the policy documents ({', '.join(DOCUMENTS)}.json)", file=str(directory))
    docs, files = {}, {}
    for name in DOCUMENTS:
        path = directory / f"{name}.json"
        if not path.exists() and directory != builtin:
            path = builtin / f"{name}.json"
        try:
            docs[name] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError("policy document is missing", file=str(path)) from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise PolicyError(f"cannot read policy: {exc}", file=str(path)) from None
        files[name] = str(path)
    assets = {}
    for name in ASSETS:
        path = directory / name
        if not path.exists() and directory != builtin:
            path = builtin / name
        try:
            assets[name] = path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"cannot read policy file ({exc.strerror})", file=str(path)) from None
    return parse_policy(docs, str(directory), files, assets)
