"""Drive real runc containers that boot systemd, for the end-to-end suite.

    with RuncContainer(bundle_dir) as c:          # unique id ocisd-<12 hex>
        c.start()
        assert c.wait_running(60) == "running", c.diagnostics()
        c.exec("systemctl", "--failed")
        c.kill(37)                                 # SIGRTMIN+3: clean systemd shutdown
    # leaving the block always runs `runc delete -f`, even after a failed assertion

cgroup v2 mode (``cgroup_v2=True``): this host is cgroup v1 hybrid; a v2 view is had by
running EVERY runc command that touches cgroups (run, exec, delete) inside its own
short-lived private mount namespace where cgroup2 is mounted on /sys/fs/cgroup.  Measured
with runc 1.1.5: a plain ``runc exec`` from the host namespace fails ("openat2
/sys/fs/cgroup/<path>/cgroup.procs: no such file"), and a plain ``runc delete`` succeeds but
leaves the container's cgroup behind in the cgroup2 hierarchy (host view:
/sys/fs/cgroup/unified/<path>).  ``runc state`` and ``runc kill`` work from either view.
A fresh namespace per command needs no long-lived holder process and leaves nothing to
clean up: the namespace dies with the command.

No process is ever killed by name; the only signals sent go through ``runc kill`` to the
container this object created, and subprocess time-outs only kill the child we spawned.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

RUNC = os.environ.get("OCI_SYSTEMD_RUNC", "runc")

# Shell run by `unshare -m` for cgroup v2 mode; "$@" is the runc command line.
_V2_SCRIPT = (
    "set -e; mount --make-rprivate /; umount -l /sys/fs/cgroup; "
    "mount -t cgroup2 none /sys/fs/cgroup; exec \"$@\""
)

_BUS_NOT_READY = ("Failed to connect to bus",)


def new_container_id() -> str:
    return f"ocisd-{uuid.uuid4().hex[:12]}"


def new_cgroups_path() -> str:
    """A unique ``linux.cgroupsPath``.  Must differ per container: runc 1.1.5 only WARNS
    when it is asked to run in a non-empty cgroup, and two systemd instances then share a tree."""
    return f"/oci-systemd-{uuid.uuid4().hex}"


def runc_available() -> str | None:
    """None if runc can be used here, else a reason to skip."""
    if os.geteuid() != 0:
        return "runc containers need root"
    if not shutil.which(RUNC):
        return f"{RUNC} not found"
    return None


def host_cgroup_mode() -> str:
    """'v2' if /sys/fs/cgroup is a cgroup2 mount, 'v1' (legacy or hybrid) otherwise."""
    return "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"


def leftover_cgroups(cgroups_path: str) -> list[str]:
    """Host cgroup directories still named after ``cgroups_path`` (v1 controllers, the
    hybrid unified hierarchy, or a pure v2 host)."""
    name = cgroups_path.strip("/")
    root = Path("/sys/fs/cgroup")
    if not root.is_dir():
        return []
    hits = [root / name] + [d / name for d in root.iterdir() if d.is_dir()]
    return sorted({str(p) for p in hits if p.is_dir()})


class RuncError(RuntimeError):
    pass


class RuncContainer:
    def __init__(self, bundle: str | os.PathLike, *, cgroup_v2: bool = False,
                 container_id: str | None = None, runc: str = RUNC,
                 cwd: str | os.PathLike = "/") -> None:
        self.bundle = Path(bundle).resolve()
        self.cgroup_v2 = cgroup_v2
        self.id = container_id or new_container_id()
        self.runc = runc
        self.cwd = str(cwd)  # runc resolves relative bind sources against the bundle, not cwd
        self.started = False
        self.boot_seconds: float | None = None  # start() -> first non-"starting" answer
        self.stop_seconds: float | None = None
        self._t_start: float | None = None

    # ---- plumbing -------------------------------------------------------------------
    def _argv(self, *args: str, cgroup_view: bool = True) -> list[str]:
        argv = [self.runc, *args]
        if self.cgroup_v2 and cgroup_view:
            return ["unshare", "-m", "sh", "-c", _V2_SCRIPT, "sh", *argv]
        return argv

    def _run(self, *args: str, timeout: float = 60, check: bool = True,
             cgroup_view: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(self._argv(*args, cgroup_view=cgroup_view), cwd=self.cwd,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise RuncError(f"runc {' '.join(args)} -> rc={p.returncode}\n{p.stdout}{p.stderr}")
        return p

    # ---- lifecycle ------------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        self._t_start = time.monotonic()
        self.started = True  # set before: a half-created container must still be deleted
        self._run("run", "-d", "--bundle", str(self.bundle), self.id, timeout=timeout)

    def state(self) -> dict | None:
        p = self._run("state", self.id, check=False, cgroup_view=False)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout)

    def status(self) -> str | None:
        st = self.state()
        return st["status"] if st else None

    def pid(self) -> int | None:
        st = self.state()
        return st.get("pid") if st else None

    def exec(self, *cmd: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        return self._run("exec", self.id, *cmd, timeout=timeout, check=check)

    def wait_running(self, timeout: float = 60) -> str:
        """Poll ``systemctl is-system-running --wait`` until systemd answers; return its
        output ('running', 'degraded', ...).  Right after start the bus socket does not
        exist yet and --wait fails at once, so bus errors are retried until ``timeout``."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"timeout after {timeout}s (last: {last.strip()!r})"
            try:
                p = self.exec("systemctl", "is-system-running", "--wait", timeout=left)
            except subprocess.TimeoutExpired:
                return f"timeout after {timeout}s (still starting)"
            out = (p.stdout + p.stderr).strip()
            last = out
            if out and not any(s in out for s in _BUS_NOT_READY):
                if self._t_start is not None and self.boot_seconds is None:
                    self.boot_seconds = time.monotonic() - self._t_start
                return out.splitlines()[-1].strip()
            st = self.status()
            if st != "running":
                return f"container is {st!r} (last: {out!r})"
            time.sleep(0.1)

    def failed_units(self) -> list[str]:
        p = self.exec("systemctl", "--failed", "--no-legend", "--plain", "--no-pager")
        return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]

    def diagnostics(self, lines: int = 60) -> str:
        parts = [f"container {self.id} bundle {self.bundle} status={self.status()!r}"]
        for title, cmd in (
            ("systemctl --failed", ["systemctl", "--failed", "--no-pager"]),
            (f"journalctl -b (last {lines})", ["sh", "-c", f"journalctl -b --no-pager | tail -n {lines}"]),
        ):
            try:
                p = self.exec(*cmd, timeout=20)
                parts.append(f"--- {title} (rc={p.returncode})\n{p.stdout}{p.stderr}")
            except subprocess.TimeoutExpired:
                parts.append(f"--- {title}: timed out")
        return "\n".join(parts)

    def kill(self, signal: int | str = 37, timeout: float = 10) -> float:
        """Send ``signal`` (37 = SIGRTMIN+3; runc 1.1.5 rejects the name) and wait until
        runc reports the container stopped.  Returns seconds taken; raises on timeout.
        (The host's reaper may leave systemd a zombie for a second or more; runc already
        reports a zombie as stopped, which is what matters.)"""
        t0 = time.monotonic()
        self._run("kill", self.id, str(signal), cgroup_view=False)
        while self.status() not in ("stopped", None):
            if time.monotonic() - t0 > timeout:
                raise RuncError(f"{self.id} still {self.status()!r} {timeout}s after signal {signal}")
            time.sleep(0.05)
        self.stop_seconds = time.monotonic() - t0
        return self.stop_seconds

    def delete(self) -> None:
        if self.state() is not None:
            self._run("delete", "-f", self.id, check=False)

    # ---- context manager ------------------------------------------------------------
    def __enter__(self) -> "RuncContainer":
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            try:
                self.delete()
            finally:
                self.started = False
