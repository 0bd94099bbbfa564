#!/usr/bin/env python3
"""make bench: does the transformed bundle boot as fast as a hand-written one?

Figures (issue 4), measured side by side in one run on bookworm (systemd 252), cgroup v1:
- time from ``runc run -d`` to ``systemctl is-system-running`` = running, median of 5 runs,
  as a ratio to the same image booted with a hand-written reference configuration built
  here (tmpfs on /run, /run/lock, /tmp, /var/log/journal, the v1 cgroup mount read-only
  plus the container's own name=systemd directory read-write, the 13 capabilities,
  container=oci; no hook).  Goals: native copy-up <= 1.05, hook copy-up <= 1.15;
- the peak memory (max RSS) of the copy-up helper during a hook-mode boot, measured by
  running the registered hook command under a wrapper that reads getrusage(RUSAGE_CHILDREN).

Runs are interleaved (reference, native, hook, reference, ...) after one warm-up each, so
a drift of the machine touches all three alike.  Every bundle has its own rootfs copy.
Needs root and runc; exits 0 with a "skipped:" line when it cannot run.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import bundles, rootfs_cache, runc_harness  # noqa: E402

RELEASE = "bookworm"
RUNS = 5
GOALS = {"native": 1.05, "hook": 1.15}
CAPS = ["CAP_" + c for c in (
    "KILL NET_BIND_SERVICE MKNOD CHOWN DAC_OVERRIDE FSETID FOWNER "
    "NET_RAW SETGID SETUID SETFCAP SETPCAP SYS_CHROOT").split()]


def reference_config(bundle: Path) -> None:
    """The hand-written reference: what systemd needs, nothing the tool adds beyond it."""
    cfg = bundles.runc_spec(bundle, ["/sbin/init"], readonly=False)
    cfg["process"]["env"].append("container=oci")
    cfg["process"]["capabilities"] = {k: list(CAPS) for k in ("bounding", "effective", "permitted")}
    cgroups_path = runc_harness.new_cgroups_path()
    cfg["linux"]["cgroupsPath"] = cgroups_path
    mounts = cfg["mounts"]
    i = next(n for n, m in enumerate(mounts) if m["destination"] == "/sys/fs/cgroup")
    mounts.insert(i + 1, {"destination": "/sys/fs/cgroup/systemd", "type": "bind",
                          "source": f"/sys/fs/cgroup/systemd{cgroups_path}",
                          "options": ["rbind", "rw", "nosuid", "nodev", "noexec"]})
    for dest, mode in (("/run", "755"), ("/run/lock", "755"), ("/tmp", "1777"), ("/var/log/journal", "755")):
        mounts.append({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", f"mode={mode}", "size=64m"]})
    (bundle / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def boot_seconds(bundle: Path) -> float:
    """One boot: runc run -d -> running; then runc kill 37 and delete (not timed)."""
    with runc_harness.RuncContainer(bundle) as c:
        c.start()
        state = c.wait_running(timeout=90, poll=0.01)
        if state != "running":
            raise SystemExit(f"bench_boot: {bundle.name} did not reach running: {state}\n{c.diagnostics()}")
        seconds = c.boot_seconds
        c.kill(37, timeout=10)
    return seconds


def measure_hook_rss(bundle: Path, out: Path) -> int:
    """Boot once with the registered prestart hook run under an RSS-recording wrapper;
    return the helper's max RSS in KiB."""
    path = bundle / "config.json"
    original = path.read_text()
    cfg = json.loads(original)
    hook = cfg["hooks"]["prestart"][0]
    wrapped = dict(hook, path=sys.executable,
                   args=[sys.executable, "-I", "-c", bundles._RSS_WRAPPER, str(out),
                         hook["path"], *hook.get("args", [hook["path"]])[1:]])
    cfg["hooks"]["prestart"][0] = wrapped
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    try:
        boot_seconds(bundle)
    finally:
        path.write_text(original)
    return int(out.read_text())


def main() -> int:
    why = None
    if os.geteuid() != 0:
        why = "needs root (runc)"
    else:
        why = runc_harness.runc_available() or rootfs_cache.availability(rootfs_cache.RootfsSpec(RELEASE))
    if why is None and runc_harness.host_cgroup_mode() != "v1":
        why = "the reference configuration is written for a cgroup v1 host"
    if why:
        print(f"bench_boot: skipped: {why}")
        return 0

    work = Path(tempfile.mkdtemp(prefix="oci-systemd-bench-boot-", dir="/var/tmp"))
    try:
        image = rootfs_cache.unpack(rootfs_cache.ensure_tarball(rootfs_cache.RootfsSpec(RELEASE)), work / "image")
        arms: dict[str, Path] = {}
        for arm in ("reference", "native", "hook"):
            bundle = work / arm
            bundle.mkdir()
            subprocess.run(["cp", "-a", str(image), str(bundle / "rootfs")], check=True)
            if arm == "reference":
                reference_config(bundle)
            else:
                bundles.runc_spec(bundle, ["/sbin/init"], readonly=False)
                bundles.apply(bundle, cgroup="v1", copy_up=arm)
            arms[arm] = bundle

        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for arm, bundle in arms.items():
            boot_seconds(bundle)  # warm-up: page cache, first-boot work in the writable rootfs
        for _ in range(RUNS):
            for arm, bundle in arms.items():
                times[arm].append(boot_seconds(bundle))
        rss_kib = measure_hook_rss(arms["hook"], work / "hook-rss")

        ref = statistics.median(times["reference"])
        for arm in ("native", "hook"):
            med = statistics.median(times[arm])
            ratio = med / ref
            verdict = "met" if ratio <= GOALS[arm] else "MISSED"
            print(f"boot to running, {arm} copy-up: ratio {ratio:.2f} "
                  f"(median {med:.3f} s vs reference {ref:.3f} s, {RUNS} runs each, {RELEASE}, cgroup v1; "
                  f"goal <= {GOALS[arm]:.2f}: {verdict})")
        print(f"copy-up helper peak memory: {rss_kib / 1024:.1f} MiB max RSS "
              f"(the registered prestart hook during a hook-mode {RELEASE} boot)")
        return 0
    finally:
        rootfs_cache.remove_rootfs(work)


if __name__ == "__main__":
    sys.exit(main())
