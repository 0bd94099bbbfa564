"""runc_harness.poll_system_running, driven by scripted answers (no container): what it
retries and what it returns. Every runtime's boot wait goes through it."""

from __future__ import annotations

import subprocess

from tests.harness import runc_harness


def _scripted(*answers: str):
    calls = []

    def exec_systemctl(_left: float) -> subprocess.CompletedProcess:
        calls.append(_left)
        out = answers[min(len(calls), len(answers)) - 1]
        return subprocess.CompletedProcess(["systemctl"], 1, out, "")

    return exec_systemctl, calls


def test_offline_and_bus_errors_are_retried_until_systemd_answers():
    run, calls = _scripted("Failed to connect to bus: No such file or directory\n", "offline\n", "running\n")
    assert runc_harness.poll_system_running(run, timeout=30, poll=0) == "running"
    assert len(calls) == 3


def test_a_real_answer_is_returned_at_once():
    run, calls = _scripted("degraded\n")
    assert runc_harness.poll_system_running(run, timeout=30, poll=0) == "degraded"
    assert len(calls) == 1


def test_offline_forever_ends_in_a_timeout_not_a_state():
    run, _ = _scripted("offline\n")
    answer = runc_harness.poll_system_running(run, timeout=0.05, poll=0)
    assert answer.startswith("timeout after 0.05s") and "offline" in answer


def test_a_dead_container_stops_the_wait():
    run, calls = _scripted("offline\n")
    answer = runc_harness.poll_system_running(run, timeout=30, poll=0, alive=lambda: "PID 1 exited")
    assert answer.startswith("PID 1 exited") and len(calls) == 1
