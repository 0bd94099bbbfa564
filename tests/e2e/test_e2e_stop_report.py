"""RuncContainer.stop_report, on a real pid namespace (no runc): what a container that does
not stop is still doing must list exactly its own processes, so that a stop timeout in
a guest says which unit or process held systemd up."""

from __future__ import annotations

import subprocess
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
    # PID 1 of a new pid namespace (sh), and a child of it that would hold a stop up
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sh", "-c",
                             "sleep 1001 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "2"  # the sleep, seen from inside: the sh is 1
        inner = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(inner) == 1, inner  # unshare's forked child: the namespace's PID 1
        report = _Namespace(int(inner[0]), "JOB UNIT\n1 halt.target start running\n").stop_report()
        rows = report.split("--- systemctl list-jobs")[0].splitlines()[1:]
        assert [r.split(None, 2)[2] for r in rows] == ["sh -c sleep 1001 & echo $!; wait", "sleep 1001"], report
        assert "halt.target start running" in report
    finally:
        proc.kill()  # unshare, by its PID; --kill-child takes the namespace with it
        proc.wait()
