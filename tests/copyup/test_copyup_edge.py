"""The helper's edge: argv, the state on stdin, bundles, exit codes, one stderr line,
and the import closure."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.copyup import state_json, write_config
from tests.harness.paths import HOOK_MAIN, HOOK_SCRIPT, REPO
from tests.harness.runner import assert_one_line, cli, copyup, isolated_python
from transformer.copyup import main as main_mod
from transformer.copyup.bundle_view import check_destination, default_destinations, policy_destinations, policy_file
from transformer.copyup.main import parse_argv
from transformer.copyup.state import parse_state
from transformer.errors import OptionsError, StateError
from transformer.policy import default_policy_dir

GOOD = {"ociVersion": "1.0.2-dev", "id": "t9", "status": "creating", "pid": 14103, "bundle": "/b"}


def _state(**changes):
    doc = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            doc.pop(k)
        else:
            doc[k] = v
    return json.dumps(doc).encode()


def test_state_runc_and_crun():
    s = parse_state(_state())
    assert (s.id, s.status, s.pid, s.bundle, s.annotations) == ("t9", "creating", 14103, "/b", {})
    crun = parse_state(_state(status="created", root="/b/rootfs", annotations={"a/b": "c"}))
    assert crun.status == "created" and crun.root == "/b/rootfs" and crun.annotations == {"a/b": "c"}


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "empty"),
        (b"{", "malformed JSON"),
        (b"[1]", "must be a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
        (_state(pid=...), "/pid: missing"),
        (_state(pid=0), "positive integer"),
        (_state(pid=True), "positive integer"),
        (_state(pid="14103"), "positive integer"),
        (_state(status="running"), "copy-up runs before the container starts"),
        (_state(status="stopped", pid=...), "/status"),
        (_state(id=""), "/id"),
        (_state(ociVersion=3), "/ociVersion"),
        (_state(bundle="relative/b"), "absolute path"),
        (_state(annotations=[1]), "/annotations"),
        (_state(annotations={"k": 1}), "/annotations"),
        (b'{"pid": NaN}', "malformed JSON"),
        (b" " * (1 << 20) + b"{}", "larger than"),
    ],
)
def test_state_rejected(raw, message):
    with pytest.raises(StateError) as info:
        parse_state(raw)
    assert message in info.value.one_line()
    assert "\n" not in info.value.one_line()


def test_argv():
    assert parse_argv(["--stage", "prestart", "/run", "/run/lock"]) == ("prestart", ["/run", "/run/lock"])
    assert parse_argv(["--stage=createRuntime"]) == ("createRuntime", [])
    assert parse_argv(["--stage", "prestart", "--", "/-odd"]) == ("prestart", ["/-odd"])
    assert parse_argv(["--help"]) == "help"


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "--stage is required"),
        (["--stage"], "needs a value"),
        (["--stage", "poststart"], "unknown stage 'poststart'"),
        (["--stage", "createContainer"], "unknown stage"),
        (["--stage", "prestart", "--stage", "prestart"], "twice"),
        (["--stage", "prestart", "run"], "absolute"),
        (["--stage", "prestart", "/"], "absolute path other than /"),
        (["--stage", "prestart", "/run/../etc"], "normalised"),
        (["--stage", "prestart", "/run/"], "normalised"),
        (["--stage", "prestart", "/run", "/run"], "twice"),
        (["--stage", "prestart", "--bogus"], "unknown option"),
    ],
)
def test_argv_rejected(argv, message):
    with pytest.raises(OptionsError, match=message):
        parse_argv(argv)


def test_check_destination_accepts_plain_paths():
    for dest in policy_destinations():
        assert check_destination(dest) == dest


def test_default_destinations_from_config():
    config = {
        "mounts": [
            {"destination": "/proc", "type": "proc"},
            {"destination": "/run", "type": "tmpfs"},
            {"destination": "/run/systemd/system/x.service", "type": "bind"},
            {"destination": "/run/lock/", "type": "tmpfs"},
            {"destination": "/tmp", "type": "tmpfs", "options": ["tmpcopyup"]},
            {"destination": "/var/tmp", "type": "bind"},
            {"destination": "/srv", "type": "tmpfs"},
            {"destination": "/var/log/journal", "type": "tmpfs"},
        ]
    }
    assert default_destinations(config) == ["/run", "/run/lock", "/var/log/journal"]
    assert default_destinations({}) == []


def test_defaults_are_what_a_plan_copies_up(tmp_path):
    """Without DEST, the helper copies into the destinations patches/tmpfs.json copies
    up into: all that a plan gives the helper (a read-only root gives it the most), in
    the plan's order. Both read the one policy, so a changed tmpfs.json changes both."""
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    config = json.loads((REPO / "golden" / "runc-spec-init" / "config.json").read_text())
    config["root"]["readonly"] = True
    (bundle / "config.json").write_text(json.dumps(config))
    result = cli("apply", str(bundle), "--cgroup", "v2", "--hook-path", "/usr/bin/x")
    assert result.returncode == 0, result.stderr
    (hook,) = json.loads((bundle / "config.json").read_text())["hooks"]["prestart"]
    planned = hook["args"][hook["args"].index("--stage") + 2:]
    assert planned and tuple(planned) == policy_destinations()


def test_helper_reads_the_policy_the_transformer_loads():
    assert Path(policy_file("tmpfs.json")).parent == default_policy_dir()


# -- exit codes and one line on stderr (main() in this process; the first case and the
# last ones run the real process, as runc does) ------------------------------------------


def _assert_one_line(proc, code, fragment):
    assert_one_line(proc, "oci-systemd-copyup", code, fragment)


def test_exit_2_malformed_state():
    _assert_one_line(copyup(["--stage", "prestart"], b"{not json", process=True), 2, "malformed JSON")


def test_exit_2_unknown_stage():
    _assert_one_line(copyup(["--stage", "poststop"], state_json(os.getpid(), REPO)), 2, "unknown stage")


def test_exit_2_gone_pid(tmp_path):
    child = subprocess.Popen(["true"])
    child.wait()
    proc = copyup(["--stage", "prestart", "/run"], state_json(child.pid, tmp_path))
    _assert_one_line(proc, 2, f"pid {child.pid} is gone")


def test_exit_2_missing_bundle(tmp_path):
    proc = copyup(["--stage", "prestart"], state_json(os.getpid(), tmp_path / "nope"))
    _assert_one_line(proc, 2, "bundle directory does not exist")


def test_exit_2_bad_config(tmp_path):
    (tmp_path / "config.json").write_text('{"root": ')
    proc = copyup(["--stage", "prestart"], state_json(os.getpid(), tmp_path))
    _assert_one_line(proc, 2, "config.json: is not JSON")
    (tmp_path / "config.json").write_text('{"root": {"path": 7}}')
    _assert_one_line(copyup(["--stage", "prestart", "/run"], state_json(os.getpid(), tmp_path)), 2, "/root")


def test_exit_0_nothing_to_copy(tmp_path):
    (tmp_path / "rootfs" / "tmp").mkdir(parents=True)  # empty, as runc leaves a mount point
    write_config(tmp_path, [{"destination": "/run", "type": "tmpfs"}, {"destination": "/tmp", "type": "tmpfs"}])
    for argv in (["--stage", "prestart"], ["--stage", "createRuntime", "/run", "/tmp", "/var/log/journal"]):
        proc = copyup(argv, state_json(os.getpid(), tmp_path))
        assert (proc.returncode, proc.stderr, proc.stdout) == (0, b"", b"")


def test_exit_1_target_is_not_a_tmpfs(tmp_path):
    """With our own pid, /proc/<pid>/root/<rootfs>/run is the host's plain directory."""
    (tmp_path / "rootfs" / "run").mkdir(parents=True)
    (tmp_path / "rootfs" / "run" / "f").write_bytes(b"x")
    write_config(tmp_path)
    proc = copyup(["--stage", "prestart", "/run"], state_json(os.getpid(), tmp_path))
    _assert_one_line(proc, 1, "container /run: not a tmpfs")


def test_exit_1_source_top_is_a_symlink(tmp_path):
    (tmp_path / "rootfs").mkdir()
    os.symlink("/etc", tmp_path / "rootfs" / "run")
    write_config(tmp_path)
    proc = copyup(["--stage", "prestart", "/run"], state_json(os.getpid(), tmp_path))
    _assert_one_line(proc, 1, "image path /run: is a symlink (not followed)")
    os.symlink("/", tmp_path / "rootfs" / "var")
    proc = copyup(["--stage", "prestart", "/var/log/journal"], state_json(os.getpid(), tmp_path))
    _assert_one_line(proc, 1, "image path /var: is a symlink")


def test_exit_123_internal_error(monkeypatch, capsys):
    def boom(*_):
        raise RuntimeError("bug\nwith a newline")

    monkeypatch.setattr(main_mod, "run", boom)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{}")))
    assert main_mod.main(["--stage", "prestart"]) == 123
    err = capsys.readouterr().err
    assert err == "oci-systemd-copyup: internal error: RuntimeError: bug\\nwith a newline\n"


def test_unreadable_stdin_is_bad_input(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", None)
    assert main_mod.main(["--stage", "prestart"]) == 2  # empty state
    monkeypatch.setattr(sys, "stdin", io.StringIO("no buffer attribute"))
    assert main_mod.main(["--stage", "prestart"]) == 2
    assert "cannot read the OCI state" in capsys.readouterr().err


def test_help_and_module_invocation():
    out = subprocess.run([sys.executable, "-m", "transformer.copyup.main", "--help"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    assert "exit codes" in out and "--stage" in out


# -- import closure -------------------------------------------------------------------------

_CLOSURE = r"""
import sys
before = set(sys.modules)
import transformer.copyup.main, transformer.copyup.run, transformer.copyup.engine
import transformer.copyup.target, transformer.copyup.hooksconfig, transformer.copyup.state
import transformer.copyup.cgroup, transformer.copyup.userns, transformer.copyup.mounts
import transformer.copyup.target as t
t.fs_magic(0)  # the lazily imported ctypes too
transformer.copyup.userns._libc()
transformer.copyup.userns._report(ValueError()) and transformer.copyup.userns.dumps([1])
new = sorted(set(sys.modules) - before)
print("\n".join(new))
"""


def test_import_closure_is_stdlib_plus_own_modules():
    argv, env = isolated_python(_CLOSURE)
    out = subprocess.run(argv, env=env, capture_output=True, check=True, text=True).stdout.split()
    ours = {m for m in out if m.split(".")[0] == "transformer"}
    assert ours, "nothing imported: the test is broken"
    allowed = {"transformer", "transformer.errors", "transformer.fsguard"}
    bad = [m for m in ours if m not in allowed and not m.startswith("transformer.copyup")]
    assert bad == []
    foreign = [m for m in out if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "transformer"]
    assert foreign == [], f"non-stdlib imports: {foreign}"
    for heavy in ("click", "jsonpatch", "deepdiff", "jsonschema"):
        assert heavy not in out


@pytest.mark.parametrize("dests", [["/run"], []], ids=["dest", "defaults-from-policy"])
def test_nothing_to_copy_imports_stay_small(tmp_path, dests):
    """Start-up is the cost on every container start: no re/enum (json.decoder), no
    ctypes, no argparse, no pathlib when there is nothing to copy, whether the DESTs
    are given or read from patches/tmpfs.json."""
    write_config(tmp_path, [{"destination": "/run", "type": "tmpfs"}])
    (tmp_path / "rootfs").mkdir()
    argv, env = isolated_python(
        f"import sys, runpy; sys.argv = ['x', '--stage', 'prestart', *{dests!r}];"
        "import transformer.copyup.main as m; rc = m.main();"
        "print(rc, ' '.join(sorted(sys.modules)))"
    )
    proc = subprocess.run(argv, env=env, input=state_json(os.getpid(), tmp_path), capture_output=True, check=True)
    rc, modules = proc.stdout.decode().split(" ", 1)
    assert rc == "0"
    loaded = set(modules.split())
    assert "transformer.copyup.state" in loaded
    heavy = {"json.decoder", "re", "enum", "ctypes", "argparse", "dataclasses", "typing", "pathlib",
             "transformer.copyup.target",
             "transformer.copyup.userns", "transformer.copyup.cgroup", "transformer.copyup.mounts"}
    assert not loaded & heavy, loaded & heavy


@pytest.mark.parametrize("script", [HOOK_MAIN, HOOK_SCRIPT])
def test_runs_as_a_file_without_site(script):
    proc = subprocess.run([sys.executable, "-I", "-S", str(script), "--version"], capture_output=True, cwd="/")
    assert proc.returncode == 0 and proc.stdout.startswith(b"oci-systemd-copyup ")
