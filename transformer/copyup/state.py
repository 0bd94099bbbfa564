"""The OCI state a runtime writes on a hook's stdin, validated.

runc sends ``{"ociVersion", "id", "status": "creating", "pid", "bundle"}`` to prestart
and createRuntime hooks; crun sends ``status: "created"`` and adds ``root``. Poststop
states have no ``pid``: they are refused, since there is no container to copy into.
"""

from __future__ import annotations

from transformer.copyup.jsonfast import loads
from transformer.errors import StateError

# A state document is a few hundred bytes; a megabyte means something else is on stdin.
MAX_STATE_BYTES = 1 << 20

# Copy-up only makes sense before the container's process runs.
COPYABLE_STATUSES = ("creating", "created")

SOURCE = "<stdin: OCI state>"


class State:
    """The fields of an OCI state the helper uses (runtime-spec "State")."""

    __slots__ = ("oci_version", "id", "status", "pid", "bundle", "annotations", "root")

    def __init__(self, oci_version, id, status, pid, bundle, annotations, root):
        self.oci_version = oci_version
        self.id = id
        self.status = status
        self.pid = pid
        self.bundle = bundle
        self.annotations = annotations
        self.root = root

    def __repr__(self) -> str:
        return f"State(id={self.id!r}, status={self.status!r}, pid={self.pid}, bundle={self.bundle!r})"


class _Twice(dict):
    """An object of the state that had a key twice (marked for _duplicate_key)."""

    key = ""


def _pairs(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        obj = _Twice(obj)
        obj.key = next(k for k, _ in pairs if k in seen or seen.add(k))
    return obj


def _duplicate_key(text: str) -> str | None:
    """The JSON pointer of the first key given twice, or None. Two "pid" keys are
    ambiguous: parsers disagree on which one wins, so the state is refused."""
    try:
        import _json

        from transformer.copyup.jsonfast import _Context

        class _Unique(_Context):
            object_pairs_hook = staticmethod(_pairs)

        doc, _ = _json.make_scanner(_Unique())(text.strip(" \t\n\r"), 0)
    except (ImportError, AttributeError):  # pragma: no cover - CPython always has _json
        import json

        doc = json.loads(text, object_pairs_hook=_pairs)
    stack = [("", doc)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, _Twice):
            return f"{where}/{_escape(value.key)}"
        if isinstance(value, dict):
            stack.extend((f"{where}/{_escape(k)}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}/{i}", v) for i, v in enumerate(value))
    return None


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _fail(pointer: str, message: str) -> StateError:
    return StateError(message, file=SOURCE, pointer=pointer or None)


def _string(doc: dict, key: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(f"/{key}", "missing" if key not in doc else "must be a non-empty string")
    if "\0" in value:
        raise _fail(f"/{key}", "must not contain NUL")
    return value


def parse_state(data: bytes) -> State:
    """Validate the raw bytes of an OCI state document and return its fields."""
    if len(data) > MAX_STATE_BYTES:
        raise _fail("", f"larger than {MAX_STATE_BYTES} bytes")
    if not data.strip():
        raise _fail("", "empty: the runtime must pass the OCI state JSON on stdin")
    try:
        text = data.decode("utf-8")
        doc = loads(text)
    except UnicodeDecodeError as e:
        raise _fail("", f"not UTF-8: {e.reason} at byte {e.start}") from None
    except (ValueError, RecursionError) as e:
        raise _fail("", f"malformed JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _fail("", "must be a JSON object")
    twice = _duplicate_key(text)
    if twice is not None:
        raise _fail(twice, "given twice (the state is ambiguous)")

    oci_version = _string(doc, "ociVersion")
    container_id = _string(doc, "id")
    status = _string(doc, "status")
    if status not in COPYABLE_STATUSES:
        raise _fail(
            "/status",
            f"{status!r}: copy-up runs before the container starts "
            f"(expected one of {', '.join(COPYABLE_STATUSES)})",
        )
    if "pid" not in doc:
        raise _fail("/pid", "missing (a poststop state has none; copy-up needs a live container)")
    pid = doc["pid"]
    # bool is an int subclass in Python; true is not a pid.
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise _fail("/pid", f"must be a positive integer, not {pid!r}")
    bundle = _string(doc, "bundle")
    if not bundle.startswith("/"):
        raise _fail("/bundle", f"must be an absolute path, not {bundle!r}")
    annotations = doc.get("annotations")
    if annotations is None:
        annotations = {}
    elif not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise _fail("/annotations", "must be an object of strings")
    root = _string(doc, "root", required=False)  # crun only; informative
    return State(oci_version, container_id, status, pid, bundle, annotations, root)


def read_proc(path: str) -> str:
    """A small /proc file of the container's process (cgroup, uid_map, gid_map). A
    vanished file means the process has exited: bad input, like a pid that is gone."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        raise StateError(f"{path}: gone: the container's process has exited") from None
