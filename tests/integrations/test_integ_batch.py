"""Batch runs, the precreate filter's contract and packaging conventions, without root."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.bundles import make_systemd_bundle
from tests.harness.integrations import policy_with
from tests.harness.paths import GOLDEN, REFERENCE, REPO
from tests.harness.runner import CLI_ARGV, HOOK_OPTS, child_env, cli
from tests.harness.skips import skip_or_fail
from tests.harness.trees import manifest

HOOK = (*HOOK_OPTS, "--cgroup", "v1")


@pytest.fixture
def bundles(tmp_path: Path) -> dict[str, Path]:
    b = {f"ok{i}": make_systemd_bundle(tmp_path / f"ok{i}") for i in range(4)}
    bad = tmp_path / "bad"
    (bad / "rootfs").mkdir(parents=True)
    (bad / "config.json").write_text('{"ociVersion": "1.0.2", "process": {"args": "/sbin/init"}}')
    b["bad"] = bad
    sh = tmp_path / "sh"
    (sh / "rootfs").mkdir(parents=True)
    shutil.copy(GOLDEN / "runc-spec-sh" / "config.json", sh / "config.json")
    b["sh"] = sh
    b["missing"] = tmp_path / "missing"
    return b


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_apply_many_one_bad_bundle_stops_nothing(bundles: dict[str, Path], tmp_path: Path, jobs: str):
    order = ["ok0", "bad", "ok1", "sh", "missing", "ok2", "ok3"]
    bad_before = manifest(bundles["bad"])
    report = tmp_path / "report.jsonl"
    r = cli("apply", *[str(bundles[k]) for k in order], *HOOK, "--jobs", jobs, "--report", str(report))
    assert r.returncode == 2, r.stderr  # some failed: the worst bundle's status
    err = r.stderr.decode().splitlines()
    assert err[-1] == "oci-systemd: 7 bundles: 4 changed, 0 unchanged, 1 skipped (not systemd), 2 failed", err
    assert sum(line.startswith("oci-systemd: error: ") for line in err) == 2
    assert "\r" not in r.stderr.decode(), "no progress bar when stderr is not a terminal"
    assert r.stdout == b""
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert [rec["bundle"] for rec in records] == [str(bundles[k]) for k in order]
    status = {Path(rec["bundle"]).name: rec["status"] for rec in records}
    assert status == {"ok0": "changed", "bad": "failed", "ok1": "changed", "sh": "skipped", "missing": "failed",
                      "ok2": "changed", "ok3": "changed"}
    assert "/process/args" in next(rec["error"] for rec in records if rec["status"] == "failed")
    assert manifest(bundles["bad"]) == bad_before, "the bad bundle was touched"
    # Every good bundle is exactly what a single apply makes.
    single = make_systemd_bundle(tmp_path / "single")
    for k in ("ok0", "ok1", "ok2", "ok3"):
        one = cli("plan", str(bundles[k]), *HOOK)
        assert one.stdout == b"[]\n", f"{k} is not fully applied"
    assert cli("apply", str(single), *HOOK).returncode == 0
    machine_ids = {(bundles[k] / "oci-systemd" / "machine-id").read_text() for k in ("ok0", "ok1", "ok2", "ok3")}
    assert len(machine_ids) == 4, "each bundle must get its own machine-id"
    # A second run: unchanged; --check exits 0.
    again = cli("apply", "--check", *[str(bundles[k]) for k in ("ok0", "ok1", "sh")], *HOOK)
    assert again.returncode == 0 and b"0 changed" in again.stderr and b"2 unchanged" in again.stderr


def test_apply_check_many_exits_1_and_writes_nothing(bundles: dict[str, Path]):
    before = {k: manifest(bundles[k]) for k in ("ok0", "ok1")}
    r = cli("apply", "--check", str(bundles["ok0"]), str(bundles["ok1"]), *HOOK, "-j", "2")
    assert r.returncode == 1, r.stderr
    assert {k: manifest(bundles[k]) for k in ("ok0", "ok1")} == before


def test_plan_and_review_many_are_ordered_json_lines(bundles: dict[str, Path]):
    names = ["ok0", "sh", "ok1"]
    r = cli("plan", *[str(bundles[k]) for k in names], *HOOK, "-j", "2")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [line["bundle"] for line in lines] == [str(bundles[k]) for k in names]
    single = json.loads(cli("plan", str(bundles["ok1"]), *HOOK).stdout)
    assert lines[2]["patch"] == single and lines[1]["patch"] == []
    rv = cli("review", *[str(bundles[k]) for k in names], *HOOK, "--format", "json")
    docs = [json.loads(line) for line in rv.stdout.splitlines()]
    assert [d["bundle"] for d in docs] == [str(bundles[k] / "config.json") for k in names]
    assert [d["systemd"] for d in docs] == [True, False, True]


def test_batch_refuses_mixing_stdin_and_one_container_id(bundles: dict[str, Path]):
    r = cli("plan", "-", str(bundles["ok0"]), *HOOK, stdin=b"{}")
    assert r.returncode == 2 and b"stdin" in r.stderr
    r = cli("apply", str(bundles["ok0"]), str(bundles["ok1"]), "--container-id", "x", *HOOK)
    assert r.returncode == 2 and b"--container-id" in r.stderr
    assert not (bundles["ok0"] / "oci-systemd").exists()


def test_progress_bar_on_a_terminal(bundles: dict[str, Path]):
    """stderr a TTY: a progress bar is drawn; the summary still ends the output."""
    master, slave = pty.openpty()
    p = subprocess.Popen([*CLI_ARGV, "plan", str(bundles["ok0"]), str(bundles["ok1"]), str(bundles["sh"]), *HOOK],
                         stdout=subprocess.DEVNULL, stderr=slave, env=child_env({"COLUMNS": "100"}), cwd=REPO)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(60) == 0
    out = b"".join(chunks).decode()
    assert "plan" in out and "100%" in out, out
    assert "3 bundles: 2 changed, 0 unchanged, 1 skipped (not systemd), 0 failed" in out


# ---- filter: podman's precreate contract -----------------------------------------------

PODMAN = REFERENCE / "podman-4.3.1-systemd-false-init.json"


def _podman_config(tmp_path: Path) -> dict:
    source = PODMAN if PODMAN.is_file() else GOLDEN / "podman-init" / "config.json"
    config = json.loads(source.read_text())
    rootfs = make_systemd_bundle(tmp_path / "ctr") / "rootfs"
    config["root"] = {"path": str(rootfs)}
    config["linux"]["cgroupsPath"] = "/libpod_parent/libpod-" + "7fe469f72410a0f2568e085b9f8f6d33" + "7050f0a6827283dfc034d057c0bfd58a"
    return config


def test_filter_transforms_stdin_with_absolute_side_files(tmp_path: Path):
    config = _podman_config(tmp_path)
    side = tmp_path / "side"
    r = cli("filter", *HOOK, "--side-dir", str(side), stdin=json.dumps(config).encode(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    new = json.loads(r.stdout)
    mid = "7fe469f72410a0f2568e085b9f8f6d33"  # podman's container ID, first 32
    assert f"container_uuid={mid}" in new["process"]["env"]
    (machine_id_mount,) = [m for m in new["mounts"] if m["destination"] == "/etc/machine-id"]
    assert machine_id_mount["source"] == str(side / "oci-systemd" / "machine-id")
    assert (side / "oci-systemd" / "machine-id").read_text() == mid + "\n"
    dests = [m["destination"] for m in new["mounts"]]
    assert dests.index("/run") < dests.index("/run/.containerenv")
    # The same result as `plan` on that config: the filter is the plan, applied.
    again = cli("filter", *HOOK, "--side-dir", str(side), stdin=r.stdout, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == r.stdout, "filtering the result again must change nothing"


def test_filter_returns_non_systemd_config_byte_for_byte(tmp_path: Path):
    config = _podman_config(tmp_path)
    config["process"]["args"] = ["/bin/sh", "-c", "echo hi"]
    data = json.dumps(config, indent=3).encode() + b"\n"
    side = tmp_path / "side"
    r = cli("filter", *HOOK, "--side-dir", str(side), stdin=data, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == data
    assert not side.exists()


def test_filter_bad_input_is_one_line(tmp_path: Path):
    r = cli("filter", *HOOK, stdin=b"{nope", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == b""
    assert r.stderr.decode().count("\n") == 1 and "oci-systemd: error: -: is not JSON" in r.stderr.decode()


def test_journal_host_through_filter_creates_and_registers(tmp_path: Path):
    policy = policy_with(tmp_path, hostDirectory=str(tmp_path / "j"), registryDirectory=str(tmp_path / "reg"))
    config = _podman_config(tmp_path)
    r = cli("filter", *HOOK, "--journal", "host", "--policy", str(policy), "--side-dir",
                      str(tmp_path / "side"), stdin=json.dumps(config).encode(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    mid = "7fe469f72410a0f2568e085b9f8f6d33"
    new = json.loads(r.stdout)
    assert {"destination": f"/var/log/journal/{mid}", "type": "bind", "source": str(tmp_path / "j" / mid),
            "options": ["bind", "rw", "nosuid", "nodev", "noexec"]} in new["mounts"]
    assert (tmp_path / "j" / mid).is_dir() and (tmp_path / "reg" / mid).is_file()


# ---- packaging and conventions -------------------------------------------------------

def test_output_dash_and_stdin_dash(tmp_path: Path):
    b = make_systemd_bundle(tmp_path / "b")
    to_stdout = cli("plan", str(b), *HOOK, "--output", "-")
    from_stdin = cli("plan", "-", *HOOK, "--container-id", str(b.resolve()),
                               stdin=(b / "config.json").read_bytes(), cwd=b)
    assert to_stdout.returncode == 0 and json.loads(to_stdout.stdout)
    assert from_stdin.stdout == to_stdout.stdout
    rv = cli("review", "-", *HOOK, "--format", "json", "-o", "-", stdin=(b / "config.json").read_bytes(), cwd=b)
    assert json.loads(rv.stdout)["systemd"] is True
    v = cli("validate", "-", "--format", "json", stdin=(b / "config.json").read_bytes())
    assert v.returncode in (0, 1, 2) and (v.returncode == 2 or "valid" in json.loads(v.stdout))


def test_pip_install_into_a_fresh_venv(tmp_path: Path):
    """`pip install .` into a fresh venv: both console scripts work from any directory.
    The venv gets no pip of its own (ensurepip would spend seconds installing one this
    test does not need): this process's pip installs into it (pip --python)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info",
                                                               ".pytest_cache", ".hypothesis", "__pycache__"))
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                          "--quiet", str(src)], capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        skip_or_fail(f"pip install . failed (no package registry?): {pip.stderr[-500:]}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    b = make_systemd_bundle(tmp_path / "b")
    version = subprocess.run([str(venv / "bin" / "oci-systemd"), "--version"], capture_output=True, text=True,
                             cwd=elsewhere, env=env, timeout=60)
    assert version.returncode == 0 and "0.1.0" in version.stdout
    planned = subprocess.run([str(venv / "bin" / "oci-systemd"), "plan", str(b), "--cgroup", "v1"],
                             capture_output=True, cwd=elsewhere, env=env, timeout=60)
    assert planned.returncode == 0, planned.stderr
    patch = json.loads(planned.stdout)
    (hook,) = [op["value"] for op in patch if op["path"] == "/hooks/prestart/-"]
    assert hook["args"][3].startswith(str(venv)), "the default hook must be the installed helper"
    module = subprocess.run([str(venv / "bin" / "python"), "-m", "transformer", "--version"], capture_output=True,
                            text=True, cwd=elsewhere, env=env, timeout=60)
    assert module.returncode == 0 and "oci-systemd" in module.stdout
    copyup = subprocess.run([str(venv / "bin" / "oci-systemd-copyup"), "--stage", "prestart"], input=b"",
                            capture_output=True, cwd=elsewhere, env=env, timeout=60)
    # No state on stdin: the installed helper runs and refuses in one line (exit 2).
    assert copyup.returncode == 2 and copyup.stderr.count(b"\n") == 1 and b"Traceback" not in copyup.stderr
    hooks = tmp_path / "hooks.d"
    hc = subprocess.run([str(venv / "bin" / "oci-systemd"), "hooks-config", "--podman", str(hooks)],
                        capture_output=True, cwd=elsewhere, env=env, timeout=60)
    assert hc.returncode == 0, hc.stderr
    filt = json.loads((hooks / "50-oci-systemd-filter.json").read_text())["hook"]
    # The filter entry runs as a hook would: empty environment, another working directory.
    data = (b / "config.json").read_bytes()
    side = tmp_path / "side"
    run = subprocess.run([*filt["args"], "--cgroup", "v1", "--side-dir", str(side)], executable=filt["path"],
                         input=data, capture_output=True, cwd=b, env={}, timeout=60)
    assert run.returncode == 0, run.stderr
    assert any(m["destination"] == "/etc/machine-id" for m in json.loads(run.stdout)["mounts"])
    assert (side / "oci-systemd" / "machine-id").is_file()
