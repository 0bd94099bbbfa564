"""make bench, batch part: what one call over many bundles saves.

1. `oci-systemd apply` over N bundles in ONE call against N separate invocations of
   `oci-systemd apply BUNDLE` (ratio of wall times; each process pays Python's start-up,
   the imports and the policy load once).
2. Bundles per second of that one call (--jobs 1 and --jobs 2) against the cost of
   json.load + json.dump of the same config.json files alone (ratio).

Each measurement restores the bundles first. These machines are noisy: quote ratios
from one run, never absolute times.  Usage: bench_batch.py [N] (default 1000).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = (ROOT / "golden" / "runc-spec-init" / "config.json").read_bytes()
ARGS = ("--cgroup", "v1", "--hook-path", "/usr/local/bin/oci-systemd-copyup")


def make_bundles(base: Path, n: int) -> list[Path]:
    bundles = []
    for i in range(n):
        b = base / f"b{i:05d}"
        (b / "rootfs" / "sbin").mkdir(parents=True)
        os.symlink("/lib/systemd/systemd", b / "rootfs" / "sbin" / "init")
        bundles.append(b)
    return bundles


def reset(bundles: list[Path]) -> None:
    for b in bundles:
        shutil.rmtree(b / "oci-systemd", ignore_errors=True)
        (b / "config.json").write_bytes(CONFIG)


def oci_systemd() -> list[str]:
    exe = Path(sys.executable).with_name("oci-systemd")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "transformer"]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    cmd = oci_systemd()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="oci-systemd-bench-") as tmp:
        bundles = make_bundles(Path(tmp), n)
        paths = [str(b) for b in bundles]

        def one_call(jobs: int):
            def run():
                p = subprocess.run([*cmd, "apply", *paths, *ARGS, "--jobs", str(jobs)], capture_output=True, env=env)
                assert p.returncode == 0, p.stderr[-500:]
            return run

        def separate():
            for path in paths:
                p = subprocess.run([*cmd, "apply", path, *ARGS], capture_output=True, env=env)
                assert p.returncode == 0, p.stderr[-500:]

        def json_only():
            for b in bundles:
                with open(b / "config.json", "rb") as f:
                    doc = json.load(f)
                with open(b / "config.json.out", "w") as f:
                    json.dump(doc, f, indent=2)
                    f.write("\n")

        results = {}
        for name, fn in (("one call, --jobs 1", one_call(1)), ("one call, --jobs 2", one_call(2)),
                         (f"{n} separate invocations", separate), ("json load+dump alone", json_only)):
            reset(bundles)
            results[name] = timed(fn)
        t1 = results["one call, --jobs 1"]
        t2 = results["one call, --jobs 2"]
        ts = results[f"{n} separate invocations"]
        tj = results["json load+dump alone"]
        print(f"bench_batch: {n} bundles (apply, runc spec config, cgroup v1)")
        for name, t in results.items():
            print(f"  {name:28} {t:8.2f} s   {n / t:9.0f} bundles/s")
        print(f"  separate invocations / one call (--jobs 1): {ts / t1:6.1f}x")
        print(f"  one call (--jobs 1) / json load+dump alone:  {t1 / tj:6.1f}x")
        print(f"  one call (--jobs 2) / json load+dump alone:  {t2 / tj:6.1f}x")


if __name__ == "__main__":
    main()
