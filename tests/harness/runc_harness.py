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
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

from tests.harness.paths import REPO, SOURCE
from tests.harness.skips import skip_or_fail

RUNC = os.environ.get("OCI_SYSTEMD_RUNC", "runc")
MONITOR = Path(__file__).resolve().with_name("runc_monitor.py")

# Run a command line ("$@") in a private mount namespace with cgroup2 on /sys/fs/cgroup:
# the host as the v2 containers see it (the CLI's ``--cgroup auto`` probes a v2 host there).
CGROUP2_NAMESPACE = (
    "unshare", "-m", "sh", "-c",
    "set -e; mount --make-rprivate /; umount -l /sys/fs/cgroup; mount -t cgroup2 none /sys/fs/cgroup; exec \"$@\"",
    "sh",
)


def in_cgroup2_namespace(argv: list[str]) -> list[str]:
    return [*CGROUP2_NAMESPACE, *argv]


# systemd 247/252: "Failed to connect to bus: ..."; 257: "Failed to connect to system
# scope bus via local transport: ..."
_BUS_NOT_READY = ("Failed to connect to bus", "Failed to connect to system scope bus")
# What systemctl answers when PID 1 has exec'd systemd but not yet made
# /run/systemd/system (sd_booted() is false): a fast start can be asked that early.
_NOT_BOOTED_YET = "offline"


def poll_system_running(
    exec_systemctl: Callable[[float], subprocess.CompletedProcess],
    timeout: float = 60,
    poll: float = 0.2,
    transient: tuple[str, ...] = (),
    alive: Callable[[], str | None] | None = None,
) -> str:
    """Poll ``systemctl is-system-running --wait`` (run by ``exec_systemctl(seconds_left)``
    in whatever runtime) until systemd answers; return its last line ('running',
    'degraded', ...). Right after start the bus socket does not exist yet and --wait
    fails at once, so bus errors, ``offline`` (systemd has not made /run/systemd/system
    yet) and the runtime's own ``transient`` "not ready yet" messages are retried until
    ``timeout``. ``alive`` returns None while the container
    runs, else a reason to stop waiting."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"timeout after {timeout}s (last: {last.strip()!r})"
        try:
            p = exec_systemctl(max(1.0, left))
        except subprocess.TimeoutExpired:
            return f"timeout after {timeout}s (still starting)"
        last = (p.stdout + p.stderr).strip()
        answer = last.splitlines()[-1].strip() if last else ""
        if answer and answer != _NOT_BOOTED_YET and not any(s in last for s in _BUS_NOT_READY + transient):
            return answer
        gone = alive() if alive is not None else None
        if gone is not None:
            return f"{gone} (last: {last!r})"
        time.sleep(poll)


class HostSandbox:
    """Fresh directories seen as /tmp and /run by every runc command of one container
    (and so by its hooks, which runc runs in its own mount namespace), to tell exactly
    what the runtime stack leaves in the host's /tmp and /run, undisturbed by other
    programs writing there at the same time.  runc's state directory /run/runc and the
    bundle (which may live under /tmp) are bound back in at their usual paths; a
    ``/proc/<pid>/root/run`` written by a hook before pivot_root lands here too.

    ``leftovers()`` lists what is in the sandbox beyond those bound-back paths."""

    def __init__(self, base: Path, bundle: Path, keep: tuple[Path, ...] = ()) -> None:
        """``keep``: more paths that runc must see where they are (a hook under /tmp)."""
        self.tmp = Path(base) / "host-tmp"
        self.run = Path(base) / "host-run"
        self.bundle = Path(bundle).resolve()
        self.binds: list[tuple[Path, Path]] = [(Path("/run/runc"), self.run / "runc")]
        # The code the hooks run must stay visible too: the checkout (hook.py) and the
        # interpreter's prefixes, which CI may well have cloned under /tmp.
        keep = (*keep, REPO, SOURCE, Path(sys.prefix), Path(sys.base_prefix))
        for top, root in ((Path("/tmp"), self.tmp), (Path("/run"), self.run)):
            root.mkdir(parents=True, exist_ok=True)
            root.chmod(0o1777 if top.name == "tmp" else 0o755)
            for path in _outermost([self.bundle, *(Path(k).resolve() for k in keep)]):
                if path.is_relative_to(top):
                    self.binds.append((path, root / path.relative_to(top)))
        Path("/run/runc").mkdir(mode=0o700, exist_ok=True)
        for _, target in self.binds:
            target.mkdir(parents=True, exist_ok=True)

    def script(self) -> str:
        # mount -n: libmount would otherwise write /run/mount/utab, into the sandbox.
        # --rbind: a layered bundle's rootfs is an overlay mounted inside the bundle.
        lines = [f"mount -n --rbind {_q(src)} {_q(dst)}" for src, dst in self.binds]
        # /run first: both sources may live under /tmp, which the second mount hides
        lines += [f"mount -n --rbind {_q(self.run)} /run", f"mount -n --rbind {_q(self.tmp)} /tmp"]
        return "; ".join(lines)

    def leftovers(self) -> list[str]:
        targets = {t for _, t in self.binds}
        # the directories made to hold the bind-mount points
        skeleton = set(targets)
        for t in targets:
            skeleton.update(a for a in t.parents if a not in (self.tmp, self.run) and
                            any(r in a.parents for r in (self.tmp, self.run)))
        found = []
        for top, root in (("/tmp", self.tmp), ("/run", self.run)):
            for dirpath, dirnames, filenames in os.walk(root):
                d = Path(dirpath)
                if d in targets:
                    dirnames[:] = []  # under a bind-mount point: the real thing, not ours here
                    continue
                for name in dirnames + filenames:
                    if d / name not in skeleton:
                        found.append(f"{top}/{(d / name).relative_to(root)}")
        return sorted(found)


def _outermost(paths: list[Path]) -> list[Path]:
    """Each path once, and none inside another (one bind covers both)."""
    unique = sorted(set(paths), key=lambda p: len(p.parts))
    return [p for i, p in enumerate(unique) if not any(p.is_relative_to(q) for q in unique[:i])]


def _q(p: os.PathLike | str) -> str:
    return "'" + str(p).replace("'", "'\\''") + "'"


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


def require_runc() -> None:
    why = runc_available()
    if why:
        skip_or_fail(why)


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
                 cwd: str | os.PathLike = "/", monitor: bool = False,
                 sandbox: HostSandbox | None = None, owner: tuple[int, int] | None = None) -> None:
        self.bundle = Path(bundle).resolve()
        self.cgroup_v2 = cgroup_v2
        self.id = container_id or new_container_id()
        self.runc = runc
        self.cwd = str(cwd)  # runc resolves relative bind sources against the bundle, not cwd
        # monitor=True: start through runc_monitor.py, which records PID 1's exit status
        # (see exit_status()); runc run -d alone loses it to the host's reaper.
        self.monitor = monitor
        self.sandbox = sandbox  # see HostSandbox: /tmp and /run of the runc commands
        # owner: the uid and gid that ``runc`` runs as (a rootless runc behind a wrapper):
        # the monitor's directory, where runc writes its pid file, is made theirs
        self.owner = owner
        self.started = False
        self.boot_seconds: float | None = None  # start() -> first non-"starting" answer
        self.stop_seconds: float | None = None
        self._t_start: float | None = None
        self._monitor: subprocess.Popen | None = None
        self._monitor_dir: str | None = None

    # ---- plumbing -------------------------------------------------------------------
    def _argv(self, *args: str, cgroup_view: bool = True) -> list[str]:
        argv = [self.runc, *args]
        if not cgroup_view:
            return argv  # state, kill: they only read /run/runc, which the sandbox shares
        if self.sandbox is not None:
            script = "set -e; mount --make-rprivate /; " + self.sandbox.script()
            if self.cgroup_v2:
                script += "; umount -n -l /sys/fs/cgroup; mount -n -t cgroup2 none /sys/fs/cgroup"
            return ["unshare", "-m", "sh", "-c", script + '; exec "$@"', "sh", *argv]
        if self.cgroup_v2:
            return in_cgroup2_namespace(argv)
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
    def start(self, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """``runc run -d``: its exit code and output (stdout and stderr, where a failed
        hook's one line is); raises RuncError on failure when ``check``."""
        if self.monitor:
            p = self._start_monitored(timeout)
        else:
            self._t_start = time.monotonic()
            self.started = True  # set before: a half-created container must still be deleted
            # runc's stdio goes to a file, not a pipe: a detached container without a terminal
            # inherits it, and a process that keeps it open (sh -c 'sleep ...') would make
            # reading a pipe wait for the container's end
            with tempfile.TemporaryFile("w+") as out:
                argv = self._argv("run", "-d", "--bundle", str(self.bundle), self.id)
                rc = subprocess.run(argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=timeout).returncode
                out.seek(0)
                p = subprocess.CompletedProcess(argv, rc, out.read())
        if check and p.returncode != 0:
            raise RuncError(f"runc run -d {self.id} -> rc={p.returncode}\n{p.stdout}")
        return p

    def _start_monitored(self, timeout: float) -> subprocess.CompletedProcess:
        # the pid file is written by runc, in the sandbox when there is one: keep it in the
        # bundle directory then, which is the same path on both sides
        self._monitor_dir = tempfile.mkdtemp(prefix=f".{self.id}-monitor-",
                                             dir=self.bundle if self.sandbox or self.owner else None)
        if self.owner:
            os.chown(self._monitor_dir, *self.owner)
        status = os.path.join(self._monitor_dir, "status.json")
        pid_file = os.path.join(self._monitor_dir, "pid")
        argv = self._argv("run", "-d", "--pid-file", pid_file, "--bundle", str(self.bundle), self.id)
        self._t_start = time.monotonic()
        self.started = True
        self._monitor = subprocess.Popen(
            [sys.executable, "-I", str(MONITOR), status, pid_file, "--", *argv],
            cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        try:
            # the monitor closes stdout right after runc returns, so this read ends then
            line = _read_line(self._monitor, timeout)
        except subprocess.TimeoutExpired:
            raise RuncError(f"runc run -d {self.id}: no answer within {timeout}s") from None
        if not line:
            raise RuncError(f"runc run -d {self.id}: the monitor died (rc={self._monitor.poll()})")
        answer = json.loads(line)
        return subprocess.CompletedProcess(argv, answer["rc"], answer["output"])

    def exit_status(self, timeout: float = 10) -> int | None:
        """PID 1's exit code once the container has stopped (negative: killed by that
        signal); needs monitor=True.  None if it did not exit within ``timeout``."""
        if self._monitor is None:
            raise RuncError("exit_status() needs RuncContainer(..., monitor=True)")
        try:
            self._monitor.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        path = os.path.join(self._monitor_dir, "status.json")
        try:
            with open(path) as f:
                record = json.load(f)
        except OSError:
            raise RuncError(f"monitor of {self.id} exited rc={self._monitor.returncode} without a status") from None
        if "exit" not in record:
            raise RuncError(f"monitor of {self.id}: {record}")
        return record["exit"]

    def run_foreground(self, timeout: float = 60) -> subprocess.CompletedProcess:
        """``runc run ID`` attached (for short non-systemd commands): waits for the
        container's process to exit and returns its output and exit code."""
        self.started = True
        return self._run("run", "--bundle", str(self.bundle), self.id, timeout=timeout, check=False)

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

    def root(self) -> Path:
        """The container's root directory, seen from the host."""
        return Path(f"/proc/{self.pid()}/root")

    def exec(self, *cmd: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        return self._run("exec", self.id, *cmd, timeout=timeout, check=check)

    def wait_running(self, timeout: float = 60, poll: float = 0.1) -> str:
        """Poll ``systemctl is-system-running --wait`` until systemd answers; return its
        output ('running', 'degraded', ...).  Right after start the bus socket does not
        exist yet and --wait fails at once, so bus errors are retried until ``timeout``."""
        def alive() -> str | None:
            st = self.status()
            return None if st == "running" else f"container is {st!r}"

        answer = poll_system_running(
            lambda left: self.exec("systemctl", "is-system-running", "--wait", timeout=left),
            timeout,
            poll,
            alive=alive,
        )
        answered = not answer.startswith(("timeout after", "container is"))
        if answered and self._t_start is not None and self.boot_seconds is None:
            self.boot_seconds = time.monotonic() - self._t_start
        return answer

    def failed_units(self) -> list[str]:
        p = self.exec("systemctl", "--failed", "--no-legend", "--plain", "--no-pager")
        return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]

    def diagnostics(self, lines: int = 60) -> str:
        parts = [f"container {self.id} bundle {self.bundle} status={self.status()!r}"]
        if self._monitor is not None and self._monitor.poll() is not None:
            try:
                parts.append(f"PID 1 exit status: {self.exit_status(timeout=0)}")
            except RuncError as e:
                parts.append(f"PID 1 exit status unknown: {e}")
            try:  # what PID 1 wrote to its stdout and stderr (runc_monitor.STDIO)
                with open(os.path.join(self._monitor_dir, "stdio.log"), errors="replace") as f:
                    parts.append("--- its stdout and stderr (last 40 lines)\n" + "".join(f.readlines()[-40:]))
            except OSError:
                pass
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

    def stop_report(self) -> str:
        """What a container that does not stop is still doing: its processes as the host
        sees them (every process in PID 1's pid namespace, with its state), and systemd's
        jobs if it still answers.  A stop timeout says nothing without it."""
        pid = self.pid()
        if not pid:
            return "(no PID 1 left)"
        try:
            ns = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError as e:
            return f"(cannot read PID 1's pid namespace: {e})"
        rows = []
        for entry in sorted(Path("/proc").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1):
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns/pid") != ns:
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                cmdline = cmdline or f"[{(entry / 'comm').read_text().strip()}]"  # a zombie or a kernel thread
            except OSError:
                continue  # gone meanwhile
            rows.append(f"{entry.name:>8} {fields[0]} {cmdline}")
        parts = ["--- its processes (host pid, state, command line)", *rows]
        try:
            p = self.exec("systemctl", "list-jobs", "--no-pager", timeout=20)
            parts.append(f"--- systemctl list-jobs (rc={p.returncode})\n{p.stdout}{p.stderr}")
        except subprocess.TimeoutExpired:
            parts.append("--- systemctl list-jobs: timed out")
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
                raise RuncError(f"{self.id} still {self.status()!r} {timeout}s after signal {signal}\n"
                                + self.stop_report())
            time.sleep(0.05)
        self.stop_seconds = time.monotonic() - t0
        return self.stop_seconds

    def delete(self, attempts: int = 20) -> None:
        """`runc delete -f` by ID until runc no longer knows the container. One failed
        `runc state` (a loaded machine) must not leak a running container."""
        for _ in range(attempts):
            self._run("delete", "-f", self.id, check=False)
            if self.state() is None:
                return
            time.sleep(0.1)
        raise RuncError(f"{self.id}: still listed by runc after {attempts} deletes")

    # ---- context manager ------------------------------------------------------------
    def __enter__(self) -> "RuncContainer":
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.started:
                self.delete()
        finally:
            self.started = False
            self._reap_monitor()

    def _reap_monitor(self) -> None:
        """The monitor exits once PID 1 is gone (delete -f kills it).  If it does not, it
        is ended by ITS pid (a process this object started), never by name."""
        if self._monitor is not None:
            try:
                self._monitor.wait(15)
            except subprocess.TimeoutExpired:
                self._monitor.kill()
                self._monitor.wait()
            if self._monitor.stdout:
                self._monitor.stdout.close()
        if self._monitor_dir:
            shutil.rmtree(self._monitor_dir, ignore_errors=True)
            self._monitor_dir = None


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.stdout.readline()
