"""The batch runner: typed per-bundle results, their messages and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.paths import GOLDEN
from tests.harness.shell import HOOK, run, systemd_bundle
from transformer import batch
from transformer.errors import internal_error_line
from transformer.job import Failure, Job, call_options
from transformer.job import run as run_job

USERNS_NOTE = "a user namespace: the copy-up helper gives the container's name=systemd directory to its mapped root"
UUID_WARNING = "container_uuid=not-an-id kept, but it does not match /etc/machine-id"


def noisy_bundle(path: Path) -> Path:
    """A v1 bundle with uidMappings (the chown note) and a container_uuid that is not a
    machine-id (a warning)."""
    bundle = systemd_bundle(path, GOLDEN / "uid-gid-mappings" / "config.json")
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["env"].append("container_uuid=not-an-id")
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("command", ["plan", "apply", "review"])
def test_every_bundle_says_its_warnings_once(tmp_path, capfdbinary, monkeypatch, command, jobs):
    """Bug 1: one bundle printed its notes, two printed none of them."""
    bundles = [noisy_bundle(tmp_path / name) for name in ("a", "b")]
    code, _, err = run(capfdbinary, monkeypatch, command, *map(str, bundles), *HOOK, "-j", jobs)
    assert code == 0, err
    lines = err.splitlines()
    for bundle in bundles:
        label = f"oci-systemd: {bundle / 'config.json'}: "
        assert sum(line.startswith(label) and USERNS_NOTE in line for line in lines) == 1, err
        assert lines.count(label + UUID_WARNING) == 1, err
    assert lines[-1].startswith("oci-systemd: 2 bundles: 2 changed"), err
    assert len(lines) == 5, "two notes a bundle, then the summary"


def test_one_bundle_says_its_warnings(tmp_path, capfdbinary, monkeypatch):
    bundle = noisy_bundle(tmp_path / "a")
    code, _, err = run(capfdbinary, monkeypatch, "apply", str(bundle), *HOOK)
    assert code == 0, err
    label = f"oci-systemd: {bundle / 'config.json'}: "
    assert err.splitlines() == [
        label + USERNS_NOTE + " before systemd starts",
        label + UUID_WARNING,
        label + "applied 64 changes",
    ], err


@pytest.fixture
def three(tmp_path) -> list[str]:
    """A systemd bundle, one that is not systemd, and one that is not JSON."""
    ok = systemd_bundle(tmp_path / "ok")
    sh = systemd_bundle(tmp_path / "sh", GOLDEN / "runc-spec-sh" / "config.json")
    bad = systemd_bundle(tmp_path / "bad")
    (bad / "config.json").write_text("{nope")
    return [str(ok), str(sh), str(bad)]


def job(command: str = "apply", **kw) -> Job:
    options = call_options(policy_dir=None, cgroup="v1", copy_up="hook", hook_path=HOOK[1], container_id=None,
                           tmpfs_size=None, capabilities=None, force=False, runtime="runc", journal="tmpfs")
    return Job(command, options, False, **kw)


def test_results_are_typed_and_in_order_with_workers(three):
    alone = list(batch.results(job(check=True), three, 1))
    pooled = list(batch.results(job(check=True), three, 3))
    assert pooled == alone
    assert [r.status for r in alone] == ["changed", "skipped", "failed"]
    ok, sh, bad = alone
    assert ok.written is False and ok.changes > 0 and len(ok.machine_id) == 32
    assert sh.notes[0].kind == "info" and sh.machine_id is None
    assert bad.failure is not None and bad.failure.exit_code == 2 and not bad.failure.internal
    assert bad.failure.line == f"error: {three[2]}/config.json: is not JSON: Expecting property name enclosed in " \
                               "double quotes at line 1 column 2"
    # The job reached the workers through the pool's initializer: this process never had it.
    assert batch._worker_job is None


def test_report_counts_and_exit_status(three):
    report = batch.Report("apply", check=True, many=True)
    for result in batch.results(job(check=True), three, 1):
        report.done(result)
    assert str(report) == ("3 bundles: 1 changed (pending: --check wrote nothing), 0 unchanged, "
                           "1 skipped (not systemd), 1 failed")
    assert report.return_code == 2, "the worst bundle's"
    lines = [json.loads(line) for line in report.report_lines().splitlines()]
    assert [list(line) for line in lines] == [
        ["bundle", "status", "changes", "written", "machineId"],
        ["bundle", "status", "changes", "written", "machineId"],
        ["bundle", "status", "changes", "exit", "error"],
    ]
    report.results.pop()
    assert report.return_code == 1, "apply --check with changes pending"


def test_an_internal_error_is_one_bundles_failure(three, monkeypatch):
    import transformer.plan

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(transformer.plan, "plan", boom)
    monkeypatch.delenv("OCI_SYSTEMD_DEBUG", raising=False)
    result = run_job(job("plan"), three[0])
    assert result.failure == Failure(123, internal_error_line(RuntimeError("simulated bug\nsecond line")), True)
    assert result.failure.line == ("internal error: RuntimeError: simulated bug second line "
                                   "(set OCI_SYSTEMD_DEBUG=1 for a traceback)")
