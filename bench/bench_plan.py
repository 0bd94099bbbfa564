"""make bench, transformer part: ratios measured side by side in one run.

1. In-process plan() + apply of runc's default config against json.loads + json.dumps
   of the same file (goal: at most 3x).
2. A cold `oci-systemd plan` process against `python3 -c 'import json'` (goal: at most
   1.5x): the CLI must not import deepdiff or jsonschema to print a patch.

These machines are noisy: each figure is a median over interleaved runs, and only the
ratio is meant to be compared.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transformer.config import parse_config  # noqa: E402
from transformer.options import Options  # noqa: E402
from transformer.plan import plan  # noqa: E402
from transformer.policy import load_policy  # noqa: E402
from transformer.rootfs import HostRootfs  # noqa: E402


def _median_ns(fn, rounds: int, inner: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter_ns() - start) / inner)
    return statistics.median(samples)


def bench_in_process(bundle: Path) -> None:
    data = (bundle / "config.json").read_bytes()
    rootfs_path = bundle / "rootfs"
    options = Options(policy=load_policy(), container_id="bench", cgroup="v1", hook_command=("/usr/bin/oci-systemd-copyup",))

    def baseline():
        json.dumps(json.loads(data), indent=2)

    def ours():
        # What `oci-systemd apply` does in-process: parse, plan, serialise the result.
        config = parse_config(data, "config.json")
        result = plan(config, HostRootfs(rootfs_path), options)
        json.dumps(result.config, indent=2)

    # Interleave the two so drift in machine load hits both alike.
    base, mine = [], []
    for _ in range(15):
        base.append(_median_ns(baseline, 3, 50))
        mine.append(_median_ns(ours, 3, 50))
    b, m = statistics.median(base), statistics.median(mine)
    print(
        f"plan()+apply in-process vs json.loads+json.dumps (runc default config): "
        f"ratio {m / b:.2f}x (goal <= 3x; medians {m / 1000:.0f} us vs {b / 1000:.0f} us)"
    )


def _wall(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def bench_cold_cli(bundle: Path) -> None:
    exe = shutil.which("oci-systemd", path=os.path.dirname(sys.executable)) or shutil.which("oci-systemd")
    cli = [exe] if exe else [sys.executable, "-m", "transformer"]
    env = dict(os.environ)
    ours = cli + ["plan", str(bundle), "--cgroup", "v1", "--hook-path", "/usr/bin/oci-systemd-copyup"]
    base = [sys.executable, "-c", "import json"]
    for argv in (ours, base):  # warm the page cache once
        _wall(argv, env)
    mine, theirs = [], []
    for _ in range(21):
        mine.append(_wall(ours, env))
        theirs.append(_wall(base, env))
    m, b = statistics.median(mine), statistics.median(theirs)
    print(
        f"cold `oci-systemd plan` vs `python3 -c 'import json'`: ratio {m / b:.2f}x "
        f"(goal <= 1.5x; medians {m * 1000:.0f} ms vs {b * 1000:.0f} ms, 21 interleaved runs)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        shutil.copytree(ROOT / "examples" / "demo-bundle", bundle, symlinks=True)
        shutil.copy(ROOT / "golden" / "runc-spec-init" / "config.json", bundle / "config.json")
        bench_in_process(bundle)
        bench_cold_cli(bundle)


if __name__ == "__main__":
    main()
