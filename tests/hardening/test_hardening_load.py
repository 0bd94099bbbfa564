"""20 systemd containers created at once with the copy-up helper: all reach `running`,
no helper fails, each has its own machine-id (bookworm, real runc)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import load
from tests.harness.skips import require_root, skip_or_fail

pytestmark = [pytest.mark.root, pytest.mark.e2e]

N = 20


def test_twenty_systemd_containers_at_once(tmp_path: Path):
    require_root()
    why = load.why_not()
    if why:
        skip_or_fail(f"load test: {why}")
    work = tmp_path / "load"
    try:
        result = load.run_load(work, N)
        bad = [c for c in result["containers"] if c["start_error"] or c["state"] != "running" or c["failed_units"]]
        assert not bad, "\n\n".join(f"{c['id']}: {c['start_error'] or c['state']} failed={c['failed_units']}\n"
                                    f"{c['diagnostics']}" for c in bad)
        assert result["left_running"] == [], "containers left behind"
        assert result["hook_exit_codes"] == [0] * N, result["hook_exit_codes"]
        ids = [c["machine_id"] for c in result["containers"]]
        assert all(re.fullmatch(r"[0-9a-f]{32}", i or "") for i in ids), ids
        assert len(set(ids)) == N, "two containers share a machine-id"
        print(load.summary(result))
    finally:
        load.cleanup(work)
