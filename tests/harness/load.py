"""N systemd containers created at once, each with the copy-up helper: shared by the load
test (tests/hardening/test_hardening_load.py) and `make bench` (bench/bench_load.py).

All bundles share one bookworm tree, read-only (root.readonly: true; the policy adds
tmpfs on /var/lib/systemd and /var/tmp): an overlay on the kept image (bundles.Image.cached),
so that 20 containers cost no unpack, and whatever runc creates stays out of the image. Each
bundle is made by `oci-systemd apply` with its own --container-id, so each gets its own
machine-id and cgroupsPath. The hook registered is a wrapper around this checkout's
`python -I -S hook.py` that records the helper's wall time (two `date` calls, about a
millisecond, are included).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.harness import bundles, rootfs_cache, runc_harness, runner
from tests.harness.paths import HOOK_SCRIPT


def why_not() -> str | None:
    """None if the load can run here, else the reason."""
    why = runc_harness.runc_available()
    if why:
        return why
    return rootfs_cache.availability(rootfs_cache.RootfsSpec("bookworm"))


def _timing_hook(path: Path, out_dir: Path) -> Path:
    path.write_text(
        "#!/bin/sh\n"
        "# oci-systemd load test: the copy-up helper, timed\n"
        "s=$(date +%s%N)\n"
        f"{sys.executable} -I -S {HOOK_SCRIPT} \"$@\"\n"
        "rc=$?\n"
        "e=$(date +%s%N)\n"
        f"echo \"$rc $((e - s))\" > {out_dir}/$$.hook\n"
        "exit $rc\n")
    path.chmod(0o755)
    return path


def _bundle(root: Path, rootfs: Path, hook: Path, cgroup: str) -> Path:
    b = root / f"load-{uuid.uuid4().hex[:8]}"
    b.mkdir()
    b.chmod(0o755)
    cfg = bundles.runc_spec(b, ["/sbin/init"], readonly=True)
    cfg["root"]["path"] = str(rootfs)
    (b / "config.json").write_text(json.dumps(cfg, indent=2))
    r = runner.cli("apply", str(b), "--cgroup", cgroup, "--copy-up", "hook", "--hook-path", str(hook),
                   "--container-id", uuid.uuid4().hex)
    assert r.returncode == 0, r.stderr.decode()
    return b


def run_load(work: Path, n: int = 20, boot_timeout: float = 240) -> dict:
    """Create n containers at once; return per-container outcomes and helper latencies."""
    work.mkdir(parents=True, exist_ok=True)
    rootfs = bundles.Image.cached("bookworm").layer_to(work / "rootfs", work / "rootfs-layer")
    out_dir = work / "hook-times"
    out_dir.mkdir()
    hook = _timing_hook(work / "copyup-timed", out_dir)
    cgroup = runc_harness.host_cgroup_mode()
    made = [_bundle(work, rootfs, hook, cgroup) for _ in range(n)]
    containers = [runc_harness.RuncContainer(b) for b in made]
    results: list[dict] = []
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=n) as pool:
            started = list(pool.map(_start, containers))
        with ThreadPoolExecutor(max_workers=n) as pool:
            states = list(pool.map(lambda c: c.wait_running(boot_timeout) if c.started else "not started", containers))
        all_up = time.monotonic() - t0
        for c, start_error, state in zip(containers, started, states):
            mid = c.exec("cat", "/etc/machine-id").stdout.strip() if start_error is None else None
            results.append({"id": c.id, "start_error": start_error, "state": state,
                            "failed_units": c.failed_units() if state in ("running", "degraded") else None,
                            "machine_id": mid,
                            "diagnostics": c.diagnostics(20) if state != "running" and start_error is None else ""})
    finally:
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(_stop, containers))
    left = still_known([c.id for c in containers])
    hooks = [line.split() for f in sorted(out_dir.iterdir()) for line in f.read_text().splitlines()]
    latencies = sorted(int(ns) / 1e6 for _, ns in hooks)
    return {
        "containers": results,
        "hook_exit_codes": [int(rc) for rc, _ in hooks],
        "latencies_ms": latencies,
        "seconds_until_all_running": all_up,
        "left_running": left,
        "rootfs": rootfs,
        "bundles": made,
    }


def _start(c: runc_harness.RuncContainer) -> str | None:
    try:
        c.start(timeout=120)
        return None
    except (runc_harness.RuncError, subprocess.TimeoutExpired) as exc:
        return str(exc)[-2000:]


def _stop(c: runc_harness.RuncContainer) -> None:
    """SIGRTMIN+3, then `runc delete -f` by this container's id, unconditionally and
    until runc no longer knows it: the harness's delete() skips a container whose
    `runc state` fails once, which under this load left containers running."""
    try:
        if c.status() == "running":
            c.kill(37, timeout=30)
    except (runc_harness.RuncError, subprocess.TimeoutExpired):
        pass
    for _ in range(5):
        c._run("delete", "-f", c.id, check=False, timeout=60)
        if not still_known([c.id]):
            break
        time.sleep(0.5)
    c.started = False
    c.__exit__(None, None, None)


def still_known(ids: list[str]) -> list[str]:
    """The ids of `ids` that runc still lists."""
    p = subprocess.run([runc_harness.RUNC, "list", "-q"], capture_output=True, text=True, timeout=60)
    listed = set(p.stdout.split())
    return [i for i in ids if i in listed]


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of an already sorted list."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summary(result: dict) -> str:
    lat = result["latencies_ms"]
    return (f"{len(result['containers'])} systemd containers at once: all running after "
            f"{result['seconds_until_all_running']:.1f} s; copy-up helper p50 {percentile(lat, 50):.1f} ms, "
            f"p99 {percentile(lat, 99):.1f} ms, max {lat[-1]:.1f} ms, median {statistics.median(lat):.1f} ms "
            f"over {len(lat)} runs")


def cleanup(work: Path) -> None:
    bundles.unmount_layer(work / "rootfs")
    rootfs_cache.remove_rootfs(work)
