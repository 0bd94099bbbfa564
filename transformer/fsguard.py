"""Reading what a bundle holds without being fooled by it, for both sides.

The transformer and the copy-up helper both run as root over files someone else
wrote, and both need the same three guarded reads:

- config.json: a regular file of bounded size, opened without waiting on a FIFO
  (read_config_file), decoded by one set of JSON rules (parse_json);
- the rootfs: the directory root.path names (rootfs_dir);
- a walk below a trusted directory fd that never follows a link (open_beneath).

The helper imports this module on every container start (python3 -I -S .../hook.py),
so it stays standard library only and light: no pathlib, re, typing or json.decoder
on the way to a good answer (json is imported only to word a syntax error).
"""

from __future__ import annotations

import errno
import os
import stat

from transformer.errors import BundleError, ConfigError

# -- config.json ----------------------------------------------------------------------

# Real configs are a few KiB; podman's with many mounts stays far below 1 MiB.
# A larger file is refused before it is read, so a 200 MB config costs nothing.
MAX_CONFIG_BYTES = 4 << 20
# The helper reads what oci-systemd wrote: re-indented from up to MAX_CONFIG_BYTES of
# compact JSON, so it may be several times larger than what oci-systemd accepts.
MAX_WRITTEN_CONFIG_BYTES = 16 << 20


def _too_large(limit: int, label: str) -> ConfigError:
    return ConfigError(f"larger than {limit >> 20} MiB; refusing to read it", file=label)


def read_limited(read, label: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """What read(n) gives until its end (a stream's read, os.read on an fd): at most
    limit bytes, more is refused."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise _too_large(limit, label)
    return b"".join(chunks)


def read_config_file(path, *, limit: int = MAX_CONFIG_BYTES, follow_symlinks: bool = False) -> tuple[bytes, int]:
    """The bytes and permission bits of a regular file, refusing FIFOs, directories and
    huge files before reading them (O_NONBLOCK: opening a FIFO must not hang).

    oci-systemd refuses a symlinked config.json because it replaces the file by a
    rename, which would replace the link; the helper only reads it, and follows a
    link as the runtime does (follow_symlinks=True)."""
    label = str(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BundleError("does not exist", file=label) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise BundleError("is a symbolic link; oci-systemd only edits a regular config.json", file=label) from None
        if exc.errno == errno.ENXIO:  # open(2) of a UNIX socket
            raise BundleError("is a socket, not a regular file", file=label) from None
        raise BundleError(f"cannot be opened ({exc.strerror})", file=label) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory, " if stat.S_ISDIR(st.st_mode) else "a FIFO, " if stat.S_ISFIFO(st.st_mode) else ""
            raise BundleError(f"is {kind}not a regular file", file=label)
        if st.st_size > limit:
            raise _too_large(limit, label)
        try:
            return read_limited(lambda n: os.read(fd, n), label, limit), stat.S_IMODE(st.st_mode)
        except OSError as exc:
            raise BundleError(f"cannot be read ({exc.strerror})", file=label) from None
    finally:
        os.close(fd)


# The JSON rules. A config must mean one thing to every reader: Go's decoder (runc)
# keeps the last of two equal keys where others keep the first, a number beyond a
# double becomes inf (which json.dumps would write back as the invalid Infinity), and
# a lone UTF-16 surrogate escape decodes to a str that cannot be encoded as UTF-8.
# So these are refused, with the JSON pointer of the first one.

_WHITESPACE = " \t\n\r"  # json's own: what it skips around a document
_INFINITY = float("inf")

try:
    from _json import make_scanner as _make_scanner
except ImportError:  # pragma: no cover - CPython always has _json
    _make_scanner = None


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class _Decoding:
    """One document's decoding: the context the C scanner behind json reads (the
    attributes of json.JSONDecoder), with hooks that note what problems() must report.
    A note is keyed by the id() of the object it is about: the document holds every
    such object, so the ids stay unique while it lives."""

    strict = True
    object_hook = None
    parse_int = int
    parse_constant = staticmethod(_no_constant)

    def __init__(self) -> None:
        self.duplicates: dict[int, str] = {}  # an object -> the first key it had twice
        self.numbers: dict[int, str] = {}  # a float that is infinite -> its text (1e999)

    def object_pairs_hook(self, pairs: list) -> dict:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set = set()
            self.duplicates[id(obj)] = next(k for k, _ in pairs if k in seen or seen.add(k))
        return obj

    def parse_float(self, text: str) -> float:
        value = float(text)
        if value in (_INFINITY, -_INFINITY):
            self.numbers[id(value)] = text
        return value


def decode(text: str) -> tuple[object, _Decoding | None]:
    """json.loads(text) under the rules above: NaN and Infinity are refused, duplicate
    keys and out-of-range numbers noted. Returns the document, and the notes that
    problems() needs, or None when it cannot have any problem.

    Raises ValueError (json.JSONDecodeError for syntax, with json's own message and
    position) or RecursionError. The C scanner is driven directly: json.loads would
    import json.decoder, re and enum, most of the helper's start-up budget."""
    decoding = _Decoding()
    if _make_scanner is not None:
        body = text.strip(_WHITESPACE)
        try:
            doc, end = _make_scanner(decoding)(body, 0)
        except (StopIteration, ValueError, SystemError):
            # SystemError: on malformed input the C scanner wants json.decoder already
            # imported; json below words the error in any case.
            pass
        else:
            if end == len(body):
                # A surrogate can only come from a \\uD800 to \\uDFFF escape: valid UTF-8
                # input cannot hold one.
                clean = not (decoding.duplicates or decoding.numbers or "\\ud" in text or "\\uD" in text)
                return doc, None if clean else decoding
        decoding = _Decoding()
    import json

    doc = json.loads(text, object_pairs_hook=decoding.object_pairs_hook,
                     parse_float=decoding.parse_float, parse_constant=_no_constant)
    return doc, decoding  # pragma: no cover - only without _json: look everywhere


def _escape(token) -> str:
    # RFC 6901 as pointer.py escapes (which imports typing, too slow for the helper):
    # '~' first, since escaping '/' introduces '~1'.
    return str(token).replace("~", "~0").replace("/", "~1")


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def problems(doc, notes: _Decoding):
    """(pointer, kind, message) for each value of a decoded document that JSON cannot
    carry through a round trip, in document order; kind is "duplicate", "number" or
    "surrogate"."""
    stack: list = [("", doc)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            twice = notes.duplicates.get(id(value))
            if twice is not None:
                yield f"{where}/{_escape(twice)}", "duplicate", f"duplicate key {twice!r}"
            for key in reversed(list(value)):
                if _lone_surrogate(key):
                    yield where, "surrogate", f"key {key!r} contains a lone UTF-16 surrogate escape"
                stack.append((f"{where}/{_escape(key)}", value[key]))
        elif isinstance(value, list):
            stack.extend((f"{where}/{i}", item) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, str):
            if _lone_surrogate(value):
                yield where, "surrogate", "contains a lone UTF-16 surrogate escape, which is not a Unicode character"
        elif isinstance(value, float) and id(value) in notes.numbers:
            yield where, "number", f"the number {notes.numbers[id(value)]} is out of range"


def parse_json(data: bytes, file: str):
    """The JSON document in data (already read within its limit), under the rules above."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise ConfigError("starts with a UTF-8 byte-order mark, which JSON forbids", file=file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not UTF-8 (byte {exc.start})", file=file) from None
    if not text.strip():
        raise ConfigError("is empty", file=file)
    try:
        doc, notes = decode(text)
    except RecursionError:
        raise ConfigError("is nested too deeply", file=file) from None
    except ValueError as exc:
        if hasattr(exc, "lineno"):  # json.JSONDecodeError, without importing json for it
            raise ConfigError(f"is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", file=file) from None
        raise ConfigError(f"is not valid JSON: {exc}", file=file) from None
    first = next(problems(doc, notes), None) if notes else None
    if first is not None:
        where, _kind, message = first
        raise ConfigError(message, file=file, pointer=where or "/")
    return doc


# -- the rootfs -------------------------------------------------------------------------


def rootfs_dir(bundle: str, config: dict, file: str, *, required: bool = True) -> str | None:
    """The directory root.path names: relative to the bundle directory unless absolute,
    links followed as the runtime follows them. None when it is not a directory and
    not required (a config on stdin, planned without its image).

    root.path is REQUIRED (runtime-spec config.md, "Root"). A config without any root
    is looked for where `runc spec` puts it, <bundle>/rootfs, so that plan() can report
    the first thing wrong with its shape."""
    root = config.get("root", {"path": "rootfs"})
    if not isinstance(root, dict):
        raise ConfigError("must be an object", file=file, pointer="/root")
    if "path" not in root:
        raise ConfigError("is required", file=file, pointer="/root/path")
    root_path = root["path"]
    if not isinstance(root_path, str) or not root_path or "\0" in root_path:
        raise ConfigError("must be a non-empty string without NUL", file=file, pointer="/root/path")
    path = os.path.join(bundle, root_path)
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:  # missing, a dangling link, EACCES: not a directory we can use
        is_dir = False
    if is_dir:
        return path
    if not required:
        return None
    raise BundleError(f"root.path {root_path!r}: {path} is not a directory", file=file, pointer="/root/path")


# -- walking below a directory fd ------------------------------------------------------

# A trusted starting point (the rootfs, /proc/<pid>/root, a cgroup mount), opened as
# the runtime opens it: its own path may be a link. Nothing below it is followed.
TOP = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
# A step of a walk: O_PATH needs no read permission and opens nothing for I/O.
STEP = TOP | os.O_NOFOLLOW
# A directory to list or read.
LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _why(dir_fd: int, name: str, err: OSError) -> str:
    """Why a component could not be opened as a directory, in words."""
    if err.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return err.strerror or str(err)
        return "is a symlink (not followed)" if stat.S_ISLNK(st.st_mode) else "is not a directory"
    return err.strerror or str(err)


def open_beneath(dir_fd: int, names, flags: int = STEP) -> int:
    """dir_fd/names[0]/.../names[-1] as a new fd: every component opened relative to
    the fd of its parent with O_NOFOLLOW, the last one with flags (STEP or LIST, which
    carry O_NOFOLLOW too), so a link in the tree, or one swapped in, is never followed
    and no path string is resolved from a root. No names: dir_fd itself, opened again
    with flags.

    Raises OSError with the errno, a strerror that says when a link or a non-directory
    was in the way, and as filename where the walk stopped ("/" + the names so far)."""
    parts = list(names) or ["."]
    cur = dir_fd
    try:
        for i, name in enumerate(parts):
            try:
                nxt = os.open(name, flags if i == len(parts) - 1 else STEP, dir_fd=cur)
            except OSError as exc:
                raise OSError(exc.errno, _why(cur, name, exc), "/" + "/".join(parts[: i + 1])) from None
            if cur != dir_fd:
                os.close(cur)
            cur = nxt
    except BaseException:
        if cur != dir_fd:
            os.close(cur)
        raise
    return cur
