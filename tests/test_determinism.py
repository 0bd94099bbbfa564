"""A plan is a function of its input alone, whatever the interpreter's hash seed.

str hashing is randomised per process (PYTHONHASHSEED), so the iteration order of a set
of strings differs between two runs: an op order or a review line that depended on one
(jsonpatch's make_patch walks sets) would pass every test of one process and still differ
between two runs.  Here an interpreter with another seed than this one's renders every
golden case; its patches, configs, reviews and refusals must be the stored files byte for
byte, which test_golden.py compares with this process's own renders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.harness.paths import GOLDEN
from tests.harness.runner import CLI_ARGV, child_env
from transformer import golden

RENDERED = (*golden.EXPECTED, golden.ERRORS)


def _files(cases: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cases)): p.read_bytes() for p in sorted(cases.rglob("*")) if p.name in RENDERED}


def test_plans_are_byte_identical_across_hash_seeds(tmp_path: Path):
    # Unset, this process's seed is random; set, the child's must differ from it.
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    cases = tmp_path / "cases"
    shutil.copytree(GOLDEN, cases, ignore=shutil.ignore_patterns(*RENDERED))
    r = subprocess.run([*CLI_ARGV, "golden", "update", str(cases)], capture_output=True, timeout=300,
                       env=child_env({"PYTHONHASHSEED": seed}))
    assert r.returncode == 0, r.stderr.decode()
    rendered, stored = _files(cases), _files(GOLDEN)
    assert sorted(rendered) == sorted(stored), "the render must cover every golden case, and only those"
    differ = sorted(name for name in stored if rendered[name] != stored[name])
    assert differ == [], f"rendered with PYTHONHASHSEED={seed}, these differ from golden/: {differ}"
