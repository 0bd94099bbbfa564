#!/usr/bin/env python3
"""make bench: does a transformed bundle boot a real services image as fast as the peers do?

Figure, measured side by side in one run on the bookworm services image (systemd 252 plus
Debian's openssh-server, postgresql, mariadb, redis, memcached, bind9, postfix, nginx-light,
cron, rsyslog, systemd-resolved, systemd-timesyncd), cgroup as the host has it:
time to ``systemctl is-system-running`` = running, median of N runs (``--runs``, default 5),
for three ways of booting the same tree:

- ours: ``runc spec`` (args /sbin/init, no terminal, writable root) plus ``oci-systemd apply
  BUNDLE`` with the default options, timed from ``runc run -d``; also reported with the
  ``apply`` call included (each round starts again from the pristine ``runc spec`` config);
- podman 4.3.1 ``--systemd=always`` on the same tree (``podman import`` once), timed from
  ``podman start``.  ``podman create`` is not timed: with the vfs driver it copies the whole
  tree, which is storage, not boot;
- ``systemd-nspawn --boot`` (systemd's reference implementation of its container interface)
  on its own copy of the tree, timed from the start of nspawn.

Goal: ours <= 1.0x podman.  "running" is the bar, so each boot also counts its failed units;
a peer that ends ``degraded`` is shown as such, with the units that failed, not as a time.

Rounds are interleaved (ours, podman, nspawn, ours, ...) after one warm-up each, so a drift
of the machine touches all three alike.  Every container is removed at the end of its round,
also on error: runc by ID, podman by name, nspawn by the PID of the process started here.
Nothing is ever killed by name.  Needs root, runc, podman, systemd-nspawn and nsenter; exits 0
with a "skipped:" line when it cannot run.

    .venv/bin/python bench/bench_services.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import bundles, nspawn, rootfs_cache, runc_harness  # noqa: E402
from tests.harness import integrations as integ_env  # noqa: E402

RELEASE = "bookworm"
SPEC = rootfs_cache.RootfsSpec(RELEASE, packages=rootfs_cache.services_packages(RELEASE))
RUNS = 5
GOAL = 1.0  # ours / podman
TIMEOUT = 180.0  # seconds to an answer from is-system-running --wait; postgresql and mariadb are slow on 2 cores
POLL = 0.02  # the same retry interval for every peer while its bus is not up yet
FAILED = ("systemctl", "--failed", "--no-legend", "--plain", "--no-pager")
WAIT = ("systemctl", "is-system-running", "--wait")


@dataclass
class Boot:
    """One boot: the state systemd settled in, how long from start to that answer, and the
    units that had failed by then."""

    state: str
    seconds: float
    failed: list[str] = field(default_factory=list)
    apply_seconds: float | None = None  # ours only: the `oci-systemd apply` call before it


def settle() -> None:
    """Write back dirty pages before a timed boot, for every peer alike: podman's create
    writes a whole tree copy and its rm deletes one, and that writeback would otherwise
    land in whichever boot comes next."""
    os.sync()


def failed_units(p: subprocess.CompletedProcess) -> list[str]:
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


# ---- ours: runc spec + oci-systemd apply + runc run -d ------------------------------------

class Ours:
    name = "ours (oci-systemd apply + runc)"

    def __init__(self, work: Path, tarball: Path) -> None:
        self.bundle = work / "ours"
        self.bundle.mkdir()
        rootfs_cache.unpack(tarball, self.bundle / "rootfs")
        bundles.runc_spec(self.bundle, ["/sbin/init"], readonly=False)
        self.pristine = (self.bundle / "config.json").read_text()

    def _reset(self) -> None:
        """Back to what `runc spec` wrote: apply then does its whole job every round, side
        files included, as it does on a new bundle."""
        for entry in self.bundle.iterdir():
            if entry.name == "rootfs":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        (self.bundle / "config.json").write_text(self.pristine)

    def boot(self) -> Boot:
        self._reset()
        settle()
        t0 = time.monotonic()
        bundles.cli("apply", str(self.bundle))  # the default options
        apply_seconds = time.monotonic() - t0
        with runc_harness.RuncContainer(self.bundle) as c:  # runc delete -f by ID on leaving
            t0 = time.monotonic()
            c.start()
            state = runc_harness.poll_system_running(
                lambda left: c.exec(*WAIT, timeout=left), TIMEOUT, POLL,
                alive=lambda: None if c.status() == "running" else f"container is {c.status()!r}")
            seconds = time.monotonic() - t0
            if c.status() == "running":
                failed = c.failed_units()
                c.kill(37, timeout=30)  # SIGRTMIN+3: systemd's clean halt
            else:
                failed = []
        return Boot(state, seconds, failed, apply_seconds)

    def close(self) -> None:
        pass


# ---- podman 4.3.1 --systemd=always ------------------------------------------------------

class PodmanPeer:
    name = "podman 4.3.1 --systemd=always"

    def __init__(self, work: Path, tarball: Path) -> None:
        # private --root/--runroot, vfs, runc, cgroupfs: integ_env.Podman, the one harness
        self.podman = integ_env.Podman(work / "podman")
        try:
            self.image = self.podman.import_tarball(tarball)
        except BaseException:
            self.podman.cleanup()
            raise

    def _exec(self, name: str, *cmd: str, timeout: float) -> subprocess.CompletedProcess:
        return self.podman.run("exec", name, *cmd, check=False, timeout=timeout)

    def boot(self) -> Boot:
        name = integ_env.unique("ocisd-bench-services")
        self.podman.containers.append(name)  # cleanup() removes it too, should rm fail here
        try:
            # vfs copies the image's whole tree here: storage, not boot, so not timed
            self.podman.run("create", "--name", name, "--systemd=always", *integ_env.Podman.RUN_FLAGS,
                            self.image, "/sbin/init", timeout=900)
            settle()  # the copy's writeback must not fall in the timed boot
            t0 = time.monotonic()
            self.podman.run("start", name, timeout=120)

            def alive() -> str | None:
                # `podman exec` into a dead container says "can only create exec sessions",
                # the same words as while it starts; ask podman only once a boot is late,
                # so that the normal path pays no extra podman call
                if time.monotonic() - t0 < 10:
                    return None
                p = self.podman.run("inspect", "--format", "{{.State.Status}}", name, check=False)
                status = p.stdout.strip()
                return None if status == "running" else f"container is {status!r}"

            state = runc_harness.poll_system_running(
                lambda left: self._exec(name, *WAIT, timeout=left), TIMEOUT, POLL,
                transient=("can only create exec sessions",), alive=alive)
            seconds = time.monotonic() - t0
            failed = failed_units(self._exec(name, *FAILED, timeout=60))
            return Boot(state, seconds, failed)
        finally:
            # podman stops it with its StopSignal (SIGRTMIN+3 in systemd mode), then removes it
            self.podman.run("rm", "-f", "-t", "10", name, check=False, timeout=120)

    def close(self) -> None:
        self.podman.cleanup()


# ---- systemd-nspawn --boot --------------------------------------------------------------

class Nspawn:
    name = "systemd-nspawn --boot"

    def __init__(self, work: Path, tarball: Path) -> None:
        self.tree = rootfs_cache.unpack(tarball, work / "nspawn")
        self.log = work / "nspawn.log"

    def argv(self, cgroups: list[Path]) -> list[str]:
        # in a cgroup of its own (tests/harness/nspawn.py says why). --private-network:
        # runc's default spec and podman's --network none give the container its own
        # network namespace too; sharing the host's would put nginx, bind9, postfix, sshd,
        # postgresql, ... on the host's ports, next to other containers'
        return nspawn.started_in(cgroups, ["systemd-nspawn", "-q", "-D", str(self.tree), "--boot", "--register=no",
                                           "--keep-unit", "--console=passive", "--private-network"])

    @staticmethod
    def _container_init(nspawn_pid: int) -> int | None:
        """The container's PID 1: a child of nspawn (it is the subreaper of its inner child)
        that is PID 1 of its own PID namespace and has exec'd systemd.  Before the exec the
        child is still nspawn's code, perhaps before pivot_root, and a systemctl entered
        there would not be talking to the container's systemd."""
        children: list[int] = []
        for task in Path(f"/proc/{nspawn_pid}/task").glob("*"):
            try:
                children += [int(p) for p in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
        for pid in children:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
            if len(nspid) >= 2 and nspid[-1] == "1" and comm == "systemd":
                return pid
        return None

    def boot(self) -> Boot:
        name = integ_env.unique("ocisd-bench-nspawn")  # one path in every hierarchy, as nspawn mirrors it
        cgroups: list[Path] = []
        try:
            cgroups = nspawn.own_cgroups(name)
            settle()
            with open(self.log, "ab") as log:
                t0 = time.monotonic()
                proc = subprocess.Popen(self.argv(cgroups), stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            container = _NspawnContainer(proc)
            try:
                return self._wait(container, t0)
            finally:
                container.stop()
        finally:
            for c in cgroups:
                nspawn.remove_cgroup(c)

    def _wait(self, container: "_NspawnContainer", t0: float) -> Boot:
        proc = container.proc
        while container.pid1 is None:
            if proc.poll() is not None:
                return Boot(f"nspawn exited rc={proc.returncode} (see {self.log})", float("nan"))
            if time.monotonic() - t0 > TIMEOUT:
                return Boot(f"timeout: no container PID 1 after {TIMEOUT}s", float("nan"))
            pid = self._container_init(proc.pid)
            if pid is None:
                time.sleep(POLL)
                continue
            container.adopt(pid)
            if self._container_init(proc.pid) != pid:  # the pidfd must be of nspawn's child
                raise RuntimeError(f"nspawn {proc.pid}: its PID 1 {pid} went away while being found")

        def nsenter(*cmd: str, timeout: float) -> subprocess.CompletedProcess:
            return subprocess.run(["nsenter", "-t", str(container.pid1), "-a", *cmd],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

        state = runc_harness.poll_system_running(
            lambda left: nsenter(*WAIT, timeout=left), TIMEOUT, POLL,
            alive=lambda: None if proc.poll() is None else f"nspawn exited rc={proc.returncode}")
        seconds = time.monotonic() - t0
        failed = failed_units(nsenter(*FAILED, timeout=60)) if proc.poll() is None else []
        return Boot(state, seconds, failed)

    def close(self) -> None:
        pass


class _NspawnContainer:
    """One nspawn process started here, and its container's PID 1 once found."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.pid1: int | None = None
        self._pidfd: int | None = None

    def adopt(self, pid1: int) -> None:
        # a pidfd: every later signal reaches this process, never a PID reused since
        self._pidfd = os.pidfd_open(pid1)
        self.pid1 = pid1

    def _signal_pid1(self, sig: int) -> None:
        if self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass  # already gone

    def stop(self) -> None:
        """SIGRTMIN+3 to the container's systemd (a clean halt, after which nspawn exits);
        if that does not end it, SIGTERM then SIGKILL to nspawn by its PID, and SIGKILL to
        the container's PID 1, which takes its whole PID namespace with it."""
        try:
            if self._pidfd is not None:
                self._signal_pid1(signal.SIGRTMIN + 3)
            else:
                self.proc.terminate()  # nspawn asks the container to power off
            try:
                self.proc.wait(60)
                return
            except subprocess.TimeoutExpired:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._signal_pid1(signal.SIGKILL)
        finally:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None


# ---- report -----------------------------------------------------------------------------

def unit_counts(boots: list[Boot]) -> str:
    counts = Counter(u for b in boots for u in b.failed)
    return ", ".join(f"{u} ({n}/{len(boots)})" for u, n in sorted(counts.items())) or "none"


def describe(boots: list[Boot]) -> tuple[float | None, str]:
    """(median seconds if every run reached running, else None; the cell to print)."""
    states = Counter(b.state for b in boots)
    if states["running"] == len(boots):
        med = statistics.median(b.seconds for b in boots)
        return med, f"{med:.2f} s ({min(b.seconds for b in boots):.2f}-{max(b.seconds for b in boots):.2f})"
    other = ", ".join(f"{s} {n}/{len(boots)}" for s, n in states.most_common() if s != "running")
    return None, other


def report(results: dict[str, list[Boot]], peers: dict[str, object], runs: int, tree_mb: int) -> bool:
    """Print the table and the goal; True if the goal is met."""
    ours_boots, podman_boots = results["ours"], results["podman"]
    podman_med, _ = describe(podman_boots)
    rows: list[tuple[str, str, str, str, str]] = []
    for key, boots in results.items():
        med, cell = describe(boots)
        ratio = f"{med / podman_med:.2f}" if med is not None and podman_med else "-"
        failed_runs = sum(1 for b in boots if b.failed)
        most = max(len(b.failed) for b in boots)
        rows.append((peers[key].name, cell, ratio, f"{sum(b.state == 'running' for b in boots)}/{len(boots)}",
                     f"{most} (in {failed_runs}/{len(boots)} runs)" if most else "0"))
        if key == "ours":
            with_apply = [b.seconds + b.apply_seconds for b in boots]
            amed = statistics.median(with_apply) if med is not None else None
            apply_med = statistics.median(b.apply_seconds for b in boots)
            rows.append(("ours, including the apply call",
                         f"{amed:.2f} s ({min(with_apply):.2f}-{max(with_apply):.2f})" if amed is not None else cell,
                         f"{amed / podman_med:.2f}" if amed is not None and podman_med else "-",
                         "", f"(apply alone: {apply_med * 1000:.0f} ms)"))
    header = ("boot to running", "median (min-max)", "x podman", "running", "failed units")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    print(f"boot to `systemctl is-system-running` = running, {RELEASE} services image "
          f"(systemd 252 + 12 Debian services), median of {runs} interleaved runs after one warm-up each, "
          f"cgroup {runc_harness.host_cgroup_mode()} host:")
    for r in [header] + rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"  timed from: ours `runc run -d`; podman `podman start` (not `podman create`: with vfs it copies "
          f"the whole {tree_mb} MB tree, which is storage, not boot); nspawn the start of systemd-nspawn")
    for key, boots in results.items():
        if any(b.failed for b in boots) or any(b.state != "running" for b in boots):
            print(f"  {peers[key].name}: failed units: {unit_counts(boots)}")
            late = [b for b in boots if b.state != "running" and b.seconds == b.seconds]
            if late:
                print(f"    (time to its final answer: median {statistics.median(b.seconds for b in late):.2f} s)")

    ours_med, _ = describe(ours_boots)
    if ours_med is None:
        met, why = False, f"ours did not reach running in every run ({describe(ours_boots)[1]})"
    elif podman_med is None:
        met, why = True, f"ours reached running; podman did not ({describe(podman_boots)[1]})"
    else:
        ratio = ours_med / podman_med
        met, why = ratio <= GOAL, f"{ratio:.3f}x"
    print(f"goal: ours <= {GOAL:.1f}x podman: {'met' if met else 'missed'} ({why})")
    return met


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (runc, podman, systemd-nspawn)"
    why = runc_harness.runc_available()
    if why:
        return why
    for tool, package in (("podman", "podman"), ("systemd-nspawn", "systemd-container"),
                          ("nsenter", "util-linux"), ("zstd", "zstd")):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install -y {package})"
    why = rootfs_cache.availability(SPEC)
    if why:
        return f"no {RELEASE} services rootfs: {why}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS, help=f"timed runs per peer (default {RUNS})")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")

    why = why_not()
    if why:
        print(f"bench_services: skipped: {why}")
        return 0

    tarball = rootfs_cache.ensure_tarball(SPEC)
    # short: podman 4.3.1 refuses a --runroot longer than 50 characters (work/podman/runroot)
    work = Path(tempfile.mkdtemp(prefix="ocisd-bsvc-", dir="/var/tmp"))
    peers: dict[str, Ours | PodmanPeer | Nspawn] = {}
    try:
        peers["ours"] = Ours(work, tarball)
        peers["podman"] = PodmanPeer(work, tarball)
        peers["nspawn"] = Nspawn(work, tarball)
        tree_mb = int(subprocess.run(["du", "-sm", "--one-file-system", str(work / "nspawn")], check=True,
                                     capture_output=True, text=True).stdout.split()[0])

        results: dict[str, list[Boot]] = {key: [] for key in peers}
        for peer in peers.values():
            peer.boot()  # warm-up: page cache, first-boot work in the writable trees
        for _ in range(args.runs):
            for key, peer in peers.items():
                results[key].append(peer.boot())
        report(results, peers, args.runs, tree_mb)
        # ours not booting is a bug of this project, as in bench_boot; a peer's is a finding
        if any(b.state != "running" for b in results["ours"]):
            return 1
        return 0
    finally:
        for peer in peers.values():
            peer.close()
        rootfs_cache.remove_rootfs(work)


if __name__ == "__main__":
    sys.exit(main())
