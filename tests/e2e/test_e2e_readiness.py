"""Issue 12: boot readiness through NOTIFY_SOCKET, and when SIGRTMIN+3 may be sent.

Cells (bundles made with ``oci-systemd apply BUNDLE`` and the default options, each
container started with a HostSandbox, and but for ``lost`` with a monitor, so that what is
left on the host and PID 1's exit status are seen):

- ``relay``: runc's own readiness relay.  ``NOTIFY_SOCKET=<listener> runc run -d``: runc
  binds /run/notify into the container (after the config's mounts, so over our /run
  tmpfs) and does not return before it has relayed READY=1 (see notify.py).  READY=1
  reaches the host; ``systemctl is-system-running`` then says ``running`` (not
  ``starting``) with no failed unit; runc also sends MAINPID= with PID 1's host pid; and
  SIGRTMIN+3 sent once READY=1 is in stops the container cleanly (exit status 0).  For
  bullseye, bookworm, trixie and sid on this hybrid host; bookworm and sid on the v2
  namespace; bookworm with a user namespace.
- ``direct``: what systemd itself sends, with the listener's directory bound into the
  container and NOTIFY_SOCKET set in the config (nspawn's way; runc's relay drops every
  datagram but READY=).  systemd >= 256 sends X_SYSTEMD_SIGNALS_LEVEL=2 once it handles
  SIGRTMIN+3, and SIGRTMIN+3 sent the moment it arrives stops the container cleanly;
  older ones send nothing before ``READY=1\\nSTATUS=...``, so READY=1 is their signal.
- ``lost``: the hazard that CONTAINER_INTERFACE.md warns about, made deterministic.
  ``runc create``, ``runc kill ID 37`` while PID 1 is still runc's init, ``runc start``:
  the signal is gone, and systemd boots on to ``running``.  The same loss happens at
  random to a SIGRTMIN+3 sent right after a plain ``runc run -d`` returns (measured on
  every release of the matrix): runc's init catches it, or the kernel drops it because
  systemd has not blocked it yet (a namespace's init gets no signal it neither handles
  nor blocks).  Hence the relay and direct cells: wait for READY=1 or
  X_SYSTEMD_SIGNALS_LEVEL=2, then stop.

The READY=1 latencies (from ``runc run -d``) are printed with the boot figures.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import bundles, checks, notify, parallel, runc_harness, userns
from tests.harness.figures import BOOT_FIGURES

pytestmark = pytest.mark.e2e

RELEASES = ("bullseye", "bookworm", "trixie", "sid")
SIGNALS_LEVEL_SINCE = 256  # the first systemd that sends X_SYSTEMD_* to its manager
WORKERS = 3  # containers booting at once: a minimal boot mostly waits, on 2 cores
SOCKET = "notify/notify.sock"  # in the bundle: bound back in by HostSandbox, short enough for sun_path
RUNC_NOTIFY_SOCKET = "/run/notify/notify.sock"  # what runc 1.1.5 gives PID 1


@dataclass(frozen=True)
class Cell:
    kind: str  # "relay", "direct" or "lost" (see the module's docstring)
    release: str
    host: str = "hybrid"  # "hybrid": this host as it is; "v2": the v2 namespace
    user_namespace: bool = False

    def __str__(self) -> str:
        return f"{self.kind}-{self.release}-{self.host}" + ("-userns" if self.user_namespace else "")


CELLS = [
    *(Cell("relay", release) for release in RELEASES),
    Cell("relay", "bookworm", "v2"),
    Cell("relay", "sid", "v2"),
    Cell("relay", "bookworm", user_namespace=True),
    *(Cell("direct", release) for release in RELEASES),
    *(Cell("lost", release) for release in RELEASES),
]


def _bundle(cell: Cell, images, workdir: Path) -> tuple[bundles.Image, Path, dict]:
    if cell.host == "hybrid":
        checks.require_hybrid_host()
    else:
        checks.require_cgroup_mode("v2")
    image = images.get(cell.release, "minimal", userns.HOST_ID if cell.user_namespace else 0)
    bundle = bundles.make_bundle(image, workdir / "bundle", ["/sbin/init"])
    if cell.user_namespace:
        userns.map_users(bundle)
    cfg = bundles.apply(bundle, cgroup=None, copy_up=None, cgroup_v2_namespace=(cell.host == "v2"))
    return image, bundle, cfg


def _check_running_now(c: runc_harness.RuncContainer, when: str) -> None:
    """``systemctl is-system-running`` (no --wait: the state at this moment) says running."""
    p = c.exec("systemctl", "is-system-running")
    assert p.stdout.strip() == "running", f"{when}: is-system-running says {p.stdout.strip()!r}\n{c.diagnostics()}"
    assert c.failed_units() == [], c.diagnostics()


def run_relay(cell: Cell, images, workdir: Path) -> dict:
    image, bundle, cfg = _bundle(cell, images, workdir)
    try:
        cid = runc_harness.new_container_id()
        cgroups_path = cfg["linux"].get("cgroupsPath") or f"/{cid}"
        sandbox = runc_harness.HostSandbox(workdir / "sandbox", bundle)
        figures = {"case": f"readiness {cell}"}
        with notify.NotifyListener(bundle / SOCKET) as listener, \
                notify.NotifyingContainer(bundle, notify_socket=listener.path, cgroup_v2=(cell.host == "v2"),
                                          container_id=cid, monitor=True, sandbox=sandbox) as c:
            t0 = time.monotonic()
            c.start(timeout=checks.BOOT_TIMEOUT)  # returns once runc has relayed READY=1
            returned = time.monotonic() - t0
            # runc sent it before returning; the listener's thread may still be taking it in
            ready = listener.wait_for("READY", "1", timeout=checks.STOP_TIMEOUT)
            assert ready is not None, (f"runc run -d returned after {returned:.1f}s without relaying READY=1; "
                                       f"got {[str(d) for d in listener.datagrams()]}\n{c.diagnostics()}")
            _check_running_now(c, "when READY=1 reached the host")
            figures["boot1"] = ready.received - t0
            assert f"NOTIFY_SOCKET={RUNC_NOTIFY_SOCKET}" in checks.pid1_env(c), checks.pid1_env(c)
            # runc's socket directory is mounted over our /run tmpfs, not hidden under it
            mounts = bundles.mountinfo_fstypes(c.exec("cat", "/proc/self/mountinfo").stdout)
            assert mounts.get("/run", ("none",))[0] == "tmpfs", mounts.get("/run")
            assert "/run/notify" in mounts, "runc's /run/notify is not a mount point inside"
            # runc relays READY= and names PID 1 (its host pid) as the main pid; nothing else
            # that systemd sends (STATUS=, X_SYSTEMD_*) reaches the host
            mainpid = listener.wait_for("MAINPID", timeout=checks.STOP_TIMEOUT)
            assert mainpid is not None and mainpid.get("MAINPID") == str(c.pid()), (str(mainpid), c.pid())
            keys = [k for d in listener.datagrams() for k, _ in d.fields]
            assert keys[:2] == ["READY", "MAINPID"] and set(keys) <= {"READY", "MAINPID", "BARRIER"}, keys
            # READY=1 comes long after systemd handles SIGRTMIN+3: a manager may stop it now
            figures["stop1"] = checks.stop_cleanly(c)
        checks.check_nothing_left(sandbox, cid, cgroups_path)
        BOOT_FIGURES.append(figures)
        return figures
    finally:
        bundles.remove_bundle(bundle)


def run_direct(cell: Cell, images, workdir: Path) -> dict:
    image, bundle, cfg = _bundle(cell, images, workdir)
    try:
        version = bundles.image_systemd_version(image.rootfs)
        cid = runc_harness.new_container_id()
        cgroups_path = cfg["linux"].get("cgroupsPath") or f"/{cid}"
        sandbox = runc_harness.HostSandbox(workdir / "sandbox", bundle)
        figures = {"case": f"readiness {cell} (systemd {version})"}
        with notify.NotifyListener(bundle / SOCKET) as listener:
            notify.direct_notify(bundle, listener.path)
            with runc_harness.RuncContainer(bundle, container_id=cid, monitor=True, sandbox=sandbox) as c:
                t0 = time.monotonic()
                c.start()
                if version >= SIGNALS_LEVEL_SINCE:
                    level = listener.wait_for("X_SYSTEMD_SIGNALS_LEVEL", timeout=checks.BOOT_TIMEOUT)
                    assert level is not None and level.get("X_SYSTEMD_SIGNALS_LEVEL") == "2", (
                        f"systemd {version}: no X_SYSTEMD_SIGNALS_LEVEL=2; got "
                        f"{[str(d) for d in listener.datagrams()]}\n{c.diagnostics()}")
                    # the earliest moment CONTAINER_INTERFACE.md allows SIGRTMIN+3: right now
                    figures["stop1"] = checks.stop_cleanly(c)
                    seen = [str(d) for d in listener.datagrams()]
                    assert not any(d.get("READY") for d in listener.before(level)), seen
                    # a clean stop says so: systemd reports its exit status to the manager
                    assert listener.wait_for("EXIT_STATUS", "0", timeout=checks.STOP_TIMEOUT) is not None, seen
                else:
                    ready = listener.wait_for("READY", "1", timeout=checks.BOOT_TIMEOUT)
                    assert ready is not None, f"no READY=1: {[str(d) for d in listener.datagrams()]}\n{c.diagnostics()}"
                    figures["boot1"] = ready.received - t0
                    _check_running_now(c, "when READY=1 reached the host")
                    # nothing before READY=1 tells a manager when SIGRTMIN+3 would be handled
                    before = [str(d) for d in listener.before(ready)]
                    assert before == [], f"systemd {version} sent {before} before READY=1"
                    assert ready.get("STATUS"), str(ready)  # READY=1\nSTATUS=... in one datagram
                    figures["stop1"] = checks.stop_cleanly(c)
        checks.check_nothing_left(sandbox, cid, cgroups_path)
        BOOT_FIGURES.append(figures)
        return figures
    finally:
        bundles.remove_bundle(bundle)


def run_lost(cell: Cell, images, workdir: Path) -> dict:
    image, bundle, cfg = _bundle(cell, images, workdir)
    try:
        cid = runc_harness.new_container_id()
        cgroups_path = cfg["linux"].get("cgroupsPath") or f"/{cid}"
        sandbox = runc_harness.HostSandbox(workdir / "sandbox", bundle)
        with notify.NotifyingContainer(bundle, container_id=cid, sandbox=sandbox) as c:
            c.create()
            c.send_signal(37)  # PID 1 is still runc's init
            c.start_created()
            state = c.wait_running(checks.BOOT_TIMEOUT)
            assert state == "running", f"is-system-running: {state}\n{c.diagnostics()}"
            assert c.status() == "running", "the SIGRTMIN+3 sent to runc's init reached systemd after all"
            c.kill(37, timeout=checks.STOP_TIMEOUT)  # sent now, it stops the container
        checks.check_nothing_left(sandbox, cid, cgroups_path)
        return {}
    finally:
        bundles.remove_bundle(bundle)


RUN = {"relay": run_relay, "direct": run_direct, "lost": run_lost}


@pytest.fixture(scope="module")
def cells(request, images, tmp_path_factory):
    base = tmp_path_factory.mktemp("ready")
    selected = parallel.selected_params(request, "cell")
    with parallel.CellPool(lambda cell: RUN[cell.kind](cell, images, base / str(cell)), selected,
                           workers=WORKERS) as pool:
        yield pool


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_readiness(cells, cell):
    cells.result(cell)


def test_listener_collects_datagrams_and_closes_barrier_fds(tmp_path):
    """The listener without a container: fields parsed in order, every datagram kept, a
    file descriptor sent with BARRIER=1 closed at once (the sender sees EOF on its pipe),
    and a wait for a datagram that never comes returns None at its deadline."""
    with notify.NotifyListener(tmp_path / "n" / "notify.sock") as listener:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(str(listener.path))
            s.send(b"X_SYSTEMD_SIGNALS_LEVEL=2")
            s.send(b"READY=1\nSTATUS=Ready.")
            r, w = os.pipe()
            socket.send_fds(s, [b"BARRIER=1"], [w])
            os.close(w)
        ready = listener.wait_for("READY", "1", timeout=10)
        assert ready is not None and ready.get("STATUS") == "Ready."
        assert [str(d) for d in listener.before(ready)] == ["X_SYSTEMD_SIGNALS_LEVEL=2"]
        barrier = listener.wait_for("BARRIER", "1", timeout=10)
        assert barrier is not None and barrier.fds == 1
        assert os.read(r, 1) == b"", "the pipe's write end is still open: the barrier was not acknowledged"
        os.close(r)
        assert listener.wait_for("EXIT_STATUS", timeout=0.05) is None
        path = listener.path
    assert not path.exists(), "close() left the socket file"
