"""The OCI state a runtime writes on a hook's stdin, validated.

runc sends ``{"ociVersion", "id", "status": "creating", "pid", "bundle"}`` to prestart
and createRuntime hooks; crun sends ``status: "created"`` and adds ``root``. Poststop
states have no ``pid``: they are refused, since there is no container to copy into.
"""

from __future__ import annotations

from transformer.errors import StateError
from transformer.fsguard import decode, problems

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
        doc, notes = decode(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _fail("", f"not UTF-8: {e.reason} at byte {e.start}") from None
    except (ValueError, RecursionError) as e:
        raise _fail("", f"malformed JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _fail("", "must be a JSON object")
    # Two "pid" keys are ambiguous: parsers disagree on which one wins. Other values
    # JSON cannot carry through a round trip are left to the checks of their field.
    twice = next((where for where, kind, _ in problems(doc, notes) if kind == "duplicate"), None) if notes else None
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
