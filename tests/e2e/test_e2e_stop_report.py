"""RuncContainer.stop_report, on a real pid namespace (no runc): what a container that does
not stop is still doing must list exactly its own processes, so that a stop timeout in
a guest says which unit or process held systemd up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness import runc_harness
from tests.harness.skips import require_root


class _Namespace(runc_harness.RuncContainer):
    """A container whose PID 1 is ``pid`` and whose systemd answers ``jobs``."""

    def __init__(self, pid: int, jobs: str) -> None:
        super().__init__("/")
        self._pid, self._jobs = pid, jobs

    def pid(self) -> int | None:
        return self._pid

    def exec(self, *cmd: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(list(cmd), 0, self._jobs, "")


def test_the_report_lists_the_namespace_processes_and_the_jobs():
    require_root()
    # PID 1 of a new pid namespace (sh), and a child of it that would hold a stop up; the
    # child prints only once it runs as itself, so both command lines are settled then
    child = f"{sys.executable} -c 'import time; print(1, flush=True); time.sleep(1001)'"
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", f"{child} & wait"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"
        inner = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(inner) == 1, inner  # unshare's forked child: the namespace's PID 1
        report = _Namespace(int(inner[0]), "JOB UNIT\n1 halt.target start running\n").stop_report()
        rows = report.split("--- systemctl list-jobs")[0].splitlines()[1:]
        commands = [r.split(None, 2)[2] for r in rows]
        assert commands[0].startswith("sh -c ") and len(commands) == 2, report
        assert commands[1].startswith(f"{sys.executable} -c import time") and "time.sleep(1001)" in commands[1], report
        assert "halt.target start running" in report
    finally:
        proc.kill()  # unshare, by its PID; --kill-child takes the namespace with it
        proc.wait()
