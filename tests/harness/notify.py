"""A host-side sd_notify listener, and a runc container driven the way systemd's
container interface asks a manager to drive it.

systemd's readiness protocol (sd_notify(3)) is one AF_UNIX SOCK_DGRAM socket named by
``$NOTIFY_SOCKET``: each datagram is newline-separated ``KEY=VALUE`` fields ("READY=1",
"STATUS=...", "X_SYSTEMD_SIGNALS_LEVEL=2").  ``NotifyListener`` binds such a socket on the
host and collects every datagram, with the monotonic time it arrived, in a thread of its
own; a test waits on a condition until the datagram it wants is in, never sleeps.

    with NotifyListener(bundle / "notify" / "notify.sock") as listener, \\
            NotifyingContainer(bundle, notify_socket=listener.path) as c:
        c.start()                                    # runc run -d, NOTIFY_SOCKET set
        ready = listener.wait_for("READY", timeout=90)

What runc 1.1.5 does with ``NOTIFY_SOCKET`` in its environment (notify_socket.go,
signals.go): it binds its own socket at /run/runc/<id>/notify/notify.sock, bind-mounts that
directory at /run/notify (appended AFTER the config's mounts, so over a tmpfs on /run),
and gives PID 1 ``NOTIFY_SOCKET=/run/notify/notify.sock``.  ``runc run -d`` then stays in
the foreground, reading that socket, until a datagram that begins with ``READY=`` arrives
(or PID 1 is gone); it drops every other datagram, sends the ``READY=`` line, then
``MAINPID=<PID 1's host pid>``, and returns (measured here: those two datagrams and no
more).  Newer runc also sends ``BARRIER=1`` with the write end of a pipe and waits up to
30 s for it to close (sd_notify_barrier(3)), so the listener keeps reading while ``runc
run -d`` runs and closes each file descriptor it receives at once: closing is the barrier's
acknowledgment.

``NotifyingContainer.create()`` and ``start_created()`` split ``runc run`` in two, so that a
test can signal PID 1 while it is still runc's own init (a SIGRTMIN+3 sent then is lost).

``direct_notify`` is the other way, the one systemd-nspawn takes (/run/host/notify): the
host socket's directory bound into the container and ``NOTIFY_SOCKET`` set in the config,
so that PID 1 talks to the listener itself and every datagram arrives (STATUS=,
X_SYSTEMD_SIGNALS_LEVEL=2, ...), not only READY=.
"""

from __future__ import annotations

import array
import json
import os
import select
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness import runc_harness

# sun_path is 108 bytes with its terminating NUL: a longer path cannot be bound at all.
SUN_PATH_MAX = 107
MAX_FDS = 16  # file descriptors taken from one datagram (BARRIER=1 sends one)
DATAGRAM_MAX = 65536


@dataclass(frozen=True)
class Datagram:
    """One sd_notify message as it arrived: its fields in order, the raw bytes, how many
    file descriptors came with it (closed on receipt), and ``time.monotonic()`` then."""

    received: float
    fields: tuple[tuple[str, str], ...]
    raw: bytes
    fds: int = 0

    @classmethod
    def parse(cls, raw: bytes, received: float, fds: int = 0) -> "Datagram":
        fields = []
        for line in raw.decode(errors="replace").split("\n"):
            key, sep, value = line.partition("=")
            if sep:
                fields.append((key, value))
        return cls(received, tuple(fields), raw, fds)

    def get(self, key: str) -> str | None:
        """The value of the last ``key`` field, or None."""
        values = [v for k, v in self.fields if k == key]
        return values[-1] if values else None

    def __str__(self) -> str:
        return self.raw.decode(errors="replace").replace("\n", "\\n")


class NotifyListener:
    """An AF_UNIX datagram socket bound at ``path`` and a thread that receives on it until
    ``close()``.  The socket is mode 0777: the sender is runc (root) or, with
    ``direct_notify``, the container's PID 1, which a user namespace makes an unmapped
    stranger to the host (connect(2) on a socket needs write permission)."""

    def __init__(self, path: os.PathLike | str) -> None:
        self.path = Path(path).resolve()
        if len(os.fsencode(self.path)) > SUN_PATH_MAX:
            raise ValueError(f"{self.path}: longer than the {SUN_PATH_MAX} bytes a socket address holds")
        self._datagrams: list[Datagram] = []
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(os.fspath(self.path))
            os.chmod(self.path, 0o777)
        except BaseException:
            self._sock.close()
            raise
        # a self-pipe wakes the thread for close(): no time-out polls while nothing comes
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._receive, name=f"notify {self.path.name}", daemon=True)
        self._thread.start()

    # ---- the receiving thread ------------------------------------------------------------
    def _receive(self) -> None:
        try:
            while True:
                ready, _, _ = select.select([self._sock, self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                self._take_one()
        except BaseException as e:  # reported by wait_for and datagrams(), not lost in a thread
            with self._changed:
                self._error = e
                self._changed.notify_all()

    def _take_one(self) -> None:
        fds = array.array("i")
        msg, ancdata, flags, _ = self._sock.recvmsg(DATAGRAM_MAX, socket.CMSG_SPACE(MAX_FDS * fds.itemsize),
                                                     socket.MSG_CMSG_CLOEXEC)
        received = time.monotonic()
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        # BARRIER=1 (runc after READY=, sd_notify_barrier): the sender waits until every
        # copy of the pipe's write end is closed; ours is the last one.
        for fd in fds:
            os.close(fd)
        if flags & socket.MSG_TRUNC:
            msg += b"\n(truncated)"
        with self._changed:
            self._datagrams.append(Datagram.parse(msg, received, len(fds)))
            self._changed.notify_all()

    # ---- what the tests use --------------------------------------------------------------
    def datagrams(self) -> list[Datagram]:
        """Every datagram received so far, in order of arrival."""
        with self._changed:
            self._raise_error()
            return list(self._datagrams)

    def wait_for(self, key: str, value: str | None = None, timeout: float = 90) -> Datagram | None:
        """The first datagram with field ``key`` (equal to ``value`` if given), waiting at
        most ``timeout`` seconds for it; None if none came."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._raise_error()
                for d in self._datagrams:
                    got = d.get(key)
                    if got is not None and (value is None or got == value):
                        return d
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def before(self, datagram: Datagram) -> list[Datagram]:
        """The datagrams that arrived before ``datagram``."""
        with self._changed:
            return self._datagrams[:self._datagrams.index(datagram)]

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the notify listener on {self.path} failed") from self._error

    def close(self) -> None:
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._sock.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "NotifyListener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NotifyingContainer(runc_harness.RuncContainer):
    """A RuncContainer as a manager that speaks systemd's container interface drives it.

    ``notify_socket``: ``runc run`` (and no other runc command: runc only acts on it when
    it creates a container) gets ``NOTIFY_SOCKET=notify_socket`` in its environment.
    Beware that ``start()`` then returns once READY= has been relayed (or PID 1 is gone),
    not once the container has been created: give it a boot's time-out.

    ``create()`` and ``start_created()`` are ``runc create`` and ``runc start``: between
    the two, PID 1 is runc's own init, waiting to exec the config's process, and a signal
    sent then reaches runc, not systemd."""

    def __init__(self, bundle: os.PathLike | str, *, notify_socket: os.PathLike | str | None = None,
                 **kwargs) -> None:
        super().__init__(bundle, **kwargs)
        self.notify_socket = Path(notify_socket) if notify_socket is not None else None

    def _argv(self, *args: str, cgroup_view: bool = True) -> list[str]:
        argv = super()._argv(*args, cgroup_view=cgroup_view)
        if self.notify_socket is None or args[:1] != ("run",):
            return argv
        # env(1) first: the variable then crosses unshare and the sandbox's sh -c into runc
        return ["env", f"NOTIFY_SOCKET={self.notify_socket}", *argv]

    def create(self, timeout: float = 60) -> None:
        """``runc create``; raises RuncError on failure."""
        if self.monitor:
            raise runc_harness.RuncError("create() records no exit status: use monitor=False")
        self.started = True  # set before: a half-created container must still be deleted
        # stdio to a file, as start() does: the created container inherits it
        with tempfile.TemporaryFile("w+") as out:
            argv = self._argv("create", "--bundle", str(self.bundle), self.id)
            rc = subprocess.run(argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, timeout=timeout).returncode
            out.seek(0)
            if rc != 0:
                raise runc_harness.RuncError(f"runc create {self.id} -> rc={rc}\n{out.read()}")

    def send_signal(self, signal: int | str) -> None:
        """``runc kill ID SIGNAL``, and no wait: RuncContainer.kill waits for the stop."""
        self._run("kill", self.id, str(signal), cgroup_view=False)

    def start_created(self, timeout: float = 60) -> None:
        """``runc start``: runc's init execs the config's process (systemd)."""
        self._run("start", self.id, timeout=timeout)


# Where direct_notify binds the listener's directory in the container.  Not /run/host/notify
# (systemd-nspawn's): /run/host is the transformer's to fill (issue 12).
DIRECT_DIR = "/run/oci-systemd-e2e-notify"


def direct_notify(bundle: Path, socket_path: Path) -> dict:
    """Make the bundle's PID 1 send its sd_notify datagrams straight to ``socket_path`` on
    the host: the socket's directory bound read-only at DIRECT_DIR (after every other
    mount, so that it lands on the /run tmpfs) and ``NOTIFY_SOCKET`` set.  A test tool's
    edit of an already transformed config; returns the new config."""
    path = bundle / "config.json"
    cfg = json.loads(path.read_text())
    cfg["mounts"].append({"destination": DIRECT_DIR, "type": "bind", "source": str(socket_path.parent),
                          "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
    env = [e for e in cfg["process"].get("env", []) if not e.startswith("NOTIFY_SOCKET=")]
    cfg["process"]["env"] = [*env, f"NOTIFY_SOCKET={DIRECT_DIR}/{socket_path.name}"]
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return cfg
