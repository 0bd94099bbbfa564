"""Copy-up helper latency under load: 20 bookworm systemd containers created at once
(real runc, root). Prints the helper's p50 and p99 wall time over the 20 hook runs, and
the same helper run alone on the same bundle layout, as a ratio.

    python3 bench/bench_load.py [N]        (root; the e2e rootfs cache must be available)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import load as hardening_load  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    why = hardening_load.why_not()
    if why:
        print(f"bench_load: skipped ({why})")
        return 0
    with tempfile.TemporaryDirectory(prefix="oci-systemd-bench-load-") as tmp:
        work = Path(tmp) / "load"
        try:
            alone = hardening_load.run_load(Path(tmp) / "alone", 1)
            hardening_load.cleanup(Path(tmp) / "alone")
            loaded = hardening_load.run_load(work, n)
        finally:
            hardening_load.cleanup(work)
    failed = [c["id"] for c in loaded["containers"] if c["state"] != "running"]
    lat = loaded["latencies_ms"]
    p50, p99 = hardening_load.percentile(lat, 50), hardening_load.percentile(lat, 99)
    one = alone["latencies_ms"][0]
    print(hardening_load.summary(loaded))
    print(f"copy-up helper alone: {one:.1f} ms; under load p50 {p50 / one:.2f}x, p99 {p99 / one:.2f}x of that"
          " (2 cores: 20 helpers and 20 systemd boots share them)")
    if failed or any(loaded["hook_exit_codes"]):
        print(f"bench_load: {len(failed)} containers not running, hook exit codes {loaded['hook_exit_codes']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
