#!/usr/bin/env python3
"""make bench: how soon does a manager know that a systemd container has booted?

Figures (issue 12), measured side by side in one run on bookworm minimal (systemd 252),
the cgroup kind the host has, median of N runs (``--runs``, default 5):

- notify: ``NOTIFY_SOCKET=<host socket> runc run -d`` on a bundle made by ``oci-systemd
  apply`` (default options); the time from ``runc run -d`` to READY=1 on the host socket
  (runc relays systemd's READY=1, see tests/harness/notify.py);
- poll: the same bundle without NOTIFY_SOCKET; the time from ``runc run -d`` to the answer
  ``running`` of ``systemctl is-system-running --wait`` through ``runc exec`` (the harness's
  wait_running, retried every 0.1 s while systemd's bus is not up yet), as a ratio to notify;
- nspawn: ``systemd-nspawn --boot --notify-ready=yes`` (systemd's reference container
  manager) on an overlay of the same image tree, with NOTIFY_SOCKET set for nspawn itself;
  the time from its start to the READY=1 it forwards, as a ratio to notify.

Runs are interleaved (notify, poll, nspawn, notify, ...) after one warm-up each, so a drift
of the machine touches all three alike.  After each timed boot the container is stopped
with SIGRTMIN+3 (runc kill 37; nspawn: SIGTERM to nspawn by its PID, which asks its
container to power off) and removed: runc by ID, nspawn by the PID of the process started
here.  Nothing is ever killed by name.  Needs root and runc (else one "skipped:" line and
exit 0); without systemd-nspawn the nspawn arm prints its own "skipped:" line.

    .venv/bin/python bench/bench_ready.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import bundles, notify, nspawn, rootfs_cache, runc_harness  # noqa: E402

RELEASE = "bookworm"
RUNS = 5
TIMEOUT = 90.0  # seconds to READY=1 or to is-system-running's answer
STOP_TIMEOUT = 30.0


class Failed(RuntimeError):
    """A boot that did not end in READY=1 or ``running``: the bench stops and says why."""


def notify_boot(bundle: Path) -> float:
    """runc run -d with NOTIFY_SOCKET -> READY=1 on the host socket."""
    with notify.NotifyListener(bundle / "notify" / "notify.sock") as listener, \
            notify.NotifyingContainer(bundle, notify_socket=listener.path) as c:
        t0 = time.monotonic()
        c.start(timeout=TIMEOUT)  # runc returns once it has relayed READY=1
        ready = listener.wait_for("READY", "1", timeout=TIMEOUT)
        if ready is None:
            raise Failed(f"notify: no READY=1 ({[str(d) for d in listener.datagrams()]})\n{c.diagnostics()}")
        seconds = ready.received - t0
        c.kill(37, timeout=STOP_TIMEOUT)
    return seconds


def poll_boot(bundle: Path) -> float:
    """runc run -d -> ``running`` from is-system-running --wait through runc exec."""
    with runc_harness.RuncContainer(bundle) as c:
        c.start()
        state = c.wait_running(TIMEOUT)
        if state != "running":
            raise Failed(f"poll: is-system-running said {state!r}\n{c.diagnostics()}")
        seconds = c.boot_seconds
        c.kill(37, timeout=STOP_TIMEOUT)
    return seconds


class Nspawn:
    """systemd-nspawn --boot --notify-ready=yes on an overlay of the image tree."""

    def __init__(self, image: bundles.Image, work: Path) -> None:
        self.tree = image.layer_to(work / "nspawn-tree", work / "nspawn-layer")
        self.socket = work / "nspawn-notify" / "notify.sock"
        self.log = work / "nspawn.log"

    def boot(self) -> float:
        # in a cgroup of its own (tests/harness/nspawn.py says why)
        name = f"ocisd-bench-ready-{uuid.uuid4().hex[:12]}"
        argv = ["systemd-nspawn", "-q", "-D", str(self.tree), "--boot", "--register=no", "--keep-unit",
                "--console=passive", "--private-network", "--notify-ready=yes"]
        cgroups: list[Path] = []
        try:
            cgroups = nspawn.own_cgroups(name)
            argv = nspawn.started_in(cgroups, argv)
            with notify.NotifyListener(self.socket) as listener, open(self.log, "ab") as log:
                # nspawn forwards READY=1 to its own NOTIFY_SOCKET once its container sent it
                env = dict(os.environ, NOTIFY_SOCKET=str(listener.path))
                t0 = time.monotonic()
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)
                try:
                    ready = listener.wait_for("READY", "1", timeout=TIMEOUT)
                    if ready is None:
                        raise Failed(f"nspawn: no READY=1 within {TIMEOUT}s (exit {proc.poll()}); its output ends:\n"
                                     f"{self._log_tail()}")
                    return ready.received - t0
                finally:
                    self._stop(proc)
        finally:
            for c in cgroups:
                nspawn.remove_cgroup(c)

    def _stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM to nspawn (it asks its container to power off, then exits 0); if that does
        not end it, SIGKILL to nspawn by its PID (its container's PID 1 dies with it)."""
        proc.terminate()
        try:
            rc = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise Failed(f"nspawn did not stop within {STOP_TIMEOUT}s of SIGTERM; its output ends:\n"
                         f"{self._log_tail()}") from None
        if rc != 0:
            raise Failed(f"nspawn exited {rc} after SIGTERM; its output ends:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        # the work directory, log included, is removed before the message is printed
        return "".join(self.log.read_text(errors="replace").splitlines(keepends=True)[-lines:])

    def close(self) -> None:
        bundles.unmount_layer(self.tree)


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (runc)"
    return runc_harness.runc_available() or rootfs_cache.availability(rootfs_cache.image_spec(RELEASE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS, help=f"timed runs per arm (default {RUNS})")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    why = why_not()
    if why:
        print(f"bench_ready: skipped: {why}")
        return 0
    nspawn_missing = None if shutil.which("systemd-nspawn") else \
        "systemd-nspawn not found (apt-get install -y systemd-container)"

    image = bundles.Image.cached(RELEASE)
    work = Path(tempfile.mkdtemp(prefix="ocisd-bready-", dir="/var/tmp"))
    nspawn: Nspawn | None = None
    made: list[Path] = []
    try:
        arms = {}
        for name, boot in (("notify", notify_boot), ("poll", poll_boot)):
            bundle = bundles.make_bundle(image, work / name, ["/sbin/init"])
            made.append(bundle)
            bundles.apply(bundle, cgroup=None, copy_up=None)
            arms[name] = (lambda b=bundle, f=boot: f(b))
        if nspawn_missing is None:
            nspawn = Nspawn(image, work)
            arms["nspawn"] = nspawn.boot

        times: dict[str, list[float]] = {name: [] for name in arms}
        for boot in arms.values():
            boot()  # warm-up: page cache, first-boot work in the writable trees
        for _ in range(args.runs):
            for name, boot in arms.items():
                times[name].append(boot())
    except Failed as e:
        print(f"bench_ready: {e}")
        return 1
    finally:
        if nspawn is not None:
            nspawn.close()
        for bundle in made:
            bundles.remove_bundle(bundle)
        rootfs_cache.remove_rootfs(work)

    base = statistics.median(times["notify"])
    where = f"{args.runs} interleaved runs each after one warm-up, {RELEASE} minimal, cgroup {runc_harness.host_cgroup_mode()} host"
    print(f"boot to READY=1 on the host, runc's NOTIFY_SOCKET relay: median {base:.3f} s "
          f"({min(times['notify']):.3f}-{max(times['notify']):.3f}; {where})")
    poll = statistics.median(times["poll"])
    print(f"polling `systemctl is-system-running --wait` through runc exec: ratio {poll / base:.2f} "
          f"(median {poll:.3f} s vs {base:.3f} s)")
    if nspawn_missing:
        print(f"systemd-nspawn --boot --notify-ready=yes: skipped: {nspawn_missing}")
    else:
        ns = statistics.median(times["nspawn"])
        print(f"systemd-nspawn --boot --notify-ready=yes, READY=1 it forwards: ratio {ns / base:.2f} "
              f"(median {ns:.3f} s vs {base:.3f} s, same image tree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
