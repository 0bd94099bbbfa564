"""Acting as the root of a container that has its own user namespace.

A tmpfs the runtime mounts for such a container belongs to the container's user
namespace. The kernel refuses to create a file there whose owner (the creator's
fsuid/fsgid) that namespace does not map: host root gets EOVERFLOW ("Value too large
for defined data type"). So the copy runs in a child process that has joined the
container's user namespace and become its root (host uid/gid of container 0:0).
There, owners read with fstat are already in the container's terms (host 101234
shows as 1234) and chown takes container ids: every copy lands as its mapped owner.

What stays with the parent (host root): opening and verifying every source and
target fd (target.py's checks, unchanged), and reading the maps. The child only
inherits those fds, so joining the namespace widens nothing: it cannot open a path
the parent did not check, and it holds no capability over the host.

What is guarded against:

- **A copy outliving its hook.** The child asks for SIGKILL when its parent dies
  (PR_SET_PDEATHSIG): a runtime that kills the hook at its timeout kills the copy too.
- **Two printing paths.** The child prints nothing. It sends its result or its error
  (kind, message) through a pipe as JSON and always leaves with os._exit; the parent
  waits for it by PID and raises the same kind of error, which main.py prints.
- **A child that dies without a word** (a signal, an OOM kill): the parent reports
  how it ended, as a failed copy.
"""

from __future__ import annotations

import os

from transformer import errors
from transformer.copyup.state import read_proc
from transformer.errors import CopyUpError, StateError
from transformer.fsguard import decode

CLONE_NEWUSER = 0x10000000  # linux/sched.h (os.CLONE_NEWUSER from Python 3.12)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
SIGKILL = 9  # the same on every Linux ABI; the signal module would import enum


class IdMap:
    """One /proc/<pid>/uid_map or gid_map: (container id, host id, count) ranges."""

    __slots__ = ("ranges", "text")

    def __init__(self, ranges: list[tuple[int, int, int]], text: str = ""):
        self.ranges = ranges
        self.text = text

    @classmethod
    def parse(cls, text: str, *, file: str = "uid_map") -> IdMap:
        ranges = []
        for line in text.splitlines():
            fields = line.split()
            if not fields:
                continue
            try:
                inside, outside, count = (int(x) for x in fields)
            except ValueError:
                raise StateError(f"malformed line {line.strip()!r}", file=file) from None
            ranges.append((inside, outside, count))
        return cls(ranges, " ".join(text.split()))

    def to_host(self, cid: int) -> int | None:
        for inside, outside, count in self.ranges:
            if inside <= cid < inside + count:
                return outside + cid - inside
        return None

    def to_container(self, hid: int) -> int | None:
        for inside, outside, count in self.ranges:
            if outside <= hid < outside + count:
                return inside + hid - outside
        return None


class UserNamespace:
    """The container's user namespace, as the parent sees it."""

    __slots__ = ("pid", "uid_map", "gid_map", "root_uid", "root_gid")

    def __init__(self, pid: int, uid_map: IdMap, gid_map: IdMap):
        self.pid = pid
        self.uid_map = uid_map
        self.gid_map = gid_map
        # The helper acts as the container's root: it needs one.
        for kind, idmap in (("uid", uid_map), ("gid", gid_map)):
            if idmap.to_host(0) is None:
                shown = idmap.text or "empty"
                raise CopyUpError(
                    f"container {kind} 0 is not mapped in /proc/{pid}/{kind}_map ({shown}): "
                    "the helper acts as the container's root and there is none"
                )
        self.root_uid = uid_map.to_host(0)
        self.root_gid = gid_map.to_host(0)

    def maps(self, uid: int, gid: int) -> bool:
        """Whether host uid and gid both have a container id."""
        return self.uid_map.to_container(uid) is not None and self.gid_map.to_container(gid) is not None

    def describe(self) -> str:
        return f"uid_map {self.uid_map.text or 'empty'}; gid_map {self.gid_map.text or 'empty'}"



def user_namespace(pid: int) -> UserNamespace:
    return UserNamespace(
        pid,
        IdMap.parse(read_proc(f"/proc/{pid}/uid_map"), file=f"/proc/{pid}/uid_map"),
        IdMap.parse(read_proc(f"/proc/{pid}/gid_map"), file=f"/proc/{pid}/gid_map"),
    )


# -- the child -----------------------------------------------------------------------------


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _setns_user(fd: int) -> None:
    setns = getattr(os, "setns", None)
    if setns is not None:
        setns(fd, CLONE_NEWUSER)
        return
    ctypes, libc = _libc()
    if libc.setns(fd, CLONE_NEWUSER) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _become_root(ns_fd: int, parent: int) -> None:
    """Join the user namespace behind ns_fd as its root (container 0:0)."""
    ctypes, libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    # setns into a user namespace needs a single-threaded caller: a forked child is.
    _setns_user(ns_fd)
    try:
        os.setgroups([])  # host root's groups mean nothing inside
    except PermissionError:
        pass  # /proc/<pid>/setgroups says "deny" (rootless runtimes): keep going
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


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


def _report(e: BaseException) -> dict:
    if isinstance(e, errors.OciSystemdError):
        return {"error": type(e).__name__, "message": e.message, "file": e.file, "pointer": e.pointer}
    return {"error": None, "message": f"{type(e).__name__}: {e}"}


def _raise(doc: dict) -> None:
    kind = doc.get("error")
    cls = getattr(errors, kind, None) if isinstance(kind, str) else None
    if isinstance(cls, type) and issubclass(cls, errors.OciSystemdError):
        raise cls(str(doc.get("message")), file=doc.get("file"), pointer=doc.get("pointer"))
    # A bug in the child: main.py prints it as an internal error.
    raise RuntimeError(f"in the user-namespace child: {doc.get('message')}")


def run_as_root(ns: UserNamespace, work):
    """Call ``work()`` in a forked child that is the root of ns's user namespace.

    ``work`` returns a JSON-serialisable value, which this returns; an error it raises
    is raised here again (same OciSystemdError subclass and message)."""
    try:
        ns_fd = os.open(f"/proc/{ns.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StateError(f"pid {ns.pid} is gone: the container's process has exited") from None
    parent = os.getpid()
    try:
        r, w = os.pipe()
        try:
            child = os.fork()
        except BaseException:
            os.close(r)
            os.close(w)
            raise
        if child == 0:  # pragma: no cover - runs in another process (the tests measure it)
            _child(ns_fd, parent, r, w, work)
    finally:
        os.close(ns_fd)
    os.close(w)
    chunks = []
    try:
        while True:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(child, 0)
    raw = b"".join(chunks)
    try:
        doc = decode(raw.decode("utf-8", "surrogateescape"))[0] if raw else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        how = (f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exited with status {os.waitstatus_to_exitcode(status)}")
        raise CopyUpError(f"the copy in the container's user namespace {how} without a report")
    if "result" in doc:
        return doc["result"]
    _raise(doc)


def _child(ns_fd: int, parent: int, r: int, w: int, work) -> None:  # pragma: no cover
    """The child's whole life: it never returns and never prints."""
    code = 1
    try:
        os.close(r)
        try:
            _become_root(ns_fd, parent)
            doc = {"result": work()}
            code = 0
        except BaseException as e:  # everything goes back through the pipe
            doc = _report(e)
        data = dumps(doc).encode()
        while data:
            data = data[os.write(w, data):]
    finally:
        os._exit(code)
