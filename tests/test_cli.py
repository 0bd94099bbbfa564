"""The command line as users meet it: exit codes, one-line errors, nothing touched."""

from __future__ import annotations

import json
import re
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.harness.bundles import make_systemd_bundle
from tests.harness.paths import GOLDEN
from tests.harness.runner import cli
from tests.harness.skips import skip_or_fail
from tests.harness.trees import manifest as tree_hash
from transformer.schema import DEFAULT_SCHEMA_DIR

ROOT = Path(__file__).resolve().parent.parent
HOOK = ["--hook-path", "/usr/local/bin/oci-systemd-copyup"]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_systemd_bundle(tmp_path / "bundle")


def one_line_error(result, *fragments: str) -> None:
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("oci-systemd: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == b""


def test_help_documents_exit_codes():
    out = cli("--help").stdout.decode()
    for code in ("0 ", "1 ", "2 ", "123"):
        assert f"  {code}" in out
    assert "apply" in out and "validate" in out
    assert cli("apply", "--help").returncode == 0


def test_version():
    result = cli("--version")
    assert result.returncode == 0 and b"oci-systemd" in result.stdout and b"0.1.0" in result.stdout


def test_plan_prints_patch_and_apply_writes_it(bundle: Path):
    before = json.loads((bundle / "config.json").read_text())
    os.chmod(bundle / "config.json", 0o600)
    planned = cli("plan", str(bundle), "--cgroup", "v1", *HOOK)
    assert planned.returncode == 0, planned.stderr
    patch = json.loads(planned.stdout)
    assert patch and all(op["op"] in ("add", "replace") for op in patch)

    check = cli("apply", "--check", str(bundle), "--cgroup", "v1", *HOOK)
    assert check.returncode == 1 and b"pending" in check.stderr
    assert json.loads((bundle / "config.json").read_text()) == before, "--check wrote something"

    applied = cli("apply", str(bundle), "--cgroup", "v1", *HOOK)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == b""
    import jsonpatch

    assert json.loads((bundle / "config.json").read_text()) == jsonpatch.apply_patch(before, patch)
    assert stat.S_IMODE((bundle / "config.json").stat().st_mode) == 0o600, "apply must keep the file's mode"
    mid = (bundle / "oci-systemd" / "machine-id").read_text()
    assert len(mid) == 33 and mid.endswith("\n")
    assert not list(bundle.glob(".config.json.*")), "temporary file left behind"

    again = cli("apply", "--check", str(bundle), "--cgroup", "v1", *HOOK)
    assert again.returncode == 0, again.stderr
    assert cli("plan", str(bundle), "--cgroup", "v1", *HOOK).stdout == b"[]\n"


def test_apply_diff_prints_review(bundle: Path):
    result = cli("apply", "--diff", str(bundle), "--cgroup", "v1", *HOOK)
    assert result.returncode == 0
    out = result.stdout.decode()
    assert "oci-systemd review" in out and "why (tmpfs)" in out and "/etc/machine-id" in out


def test_default_machine_id_differs_per_bundle(bundle: Path, tmp_path: Path):
    other = tmp_path / "other"
    shutil.copytree(bundle, other, symlinks=True)
    for b in (bundle, other):
        assert cli("apply", str(b), "--cgroup", "v1", *HOOK).returncode == 0
    a, b = ((x / "oci-systemd" / "machine-id").read_text() for x in (bundle, other))
    assert a != b


def test_plan_from_stdin_uses_cwd_as_bundle(bundle: Path):
    data = (bundle / "config.json").read_bytes()
    result = cli("plan", "-", "--cgroup", "v1", "--container-id", "x", *HOOK, stdin=data, cwd=bundle)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)
    # Not systemd when read from stdin either: same rules.
    sh = json.loads(data)
    sh["process"]["args"] = ["/bin/sh"]
    result = cli("plan", "-", "--cgroup", "v1", stdin=json.dumps(sh).encode(), cwd=bundle)
    assert result.stdout == b"[]\n" and b"not a systemd container" in result.stderr


def test_plan_output_file(bundle: Path, tmp_path: Path):
    out = tmp_path / "patch.json"
    result = cli("plan", str(bundle), "--cgroup", "v2", *HOOK, "-o", str(out))
    assert result.returncode == 0 and result.stdout == b""
    assert any(op["path"] == "/linux/namespaces/-" for op in json.loads(out.read_text()))


def test_review_json(bundle: Path):
    result = cli("review", str(bundle), "--cgroup", "v1", *HOOK, "--format", "json")
    data = json.loads(result.stdout)
    assert data["systemd"] is True and data["changes"]
    assert all(c["concern"] != "unexplained" for c in data["changes"])


def test_python_dash_m_and_cgroup_auto(bundle: Path):
    result = cli("review", str(bundle), *HOOK, process=True)  # --cgroup auto probes this host
    assert result.returncode == 0, result.stderr
    out = result.stdout if isinstance(result.stdout, str) else result.stdout.decode()
    host = re.search(r"^  cgroup host: +(.*)$", out, re.M).group(1)
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        assert host.startswith("a cgroup v2 host"), host
    elif Path("/sys/fs/cgroup/unified/cgroup.controllers").exists():
        assert host.startswith("a hybrid host"), host
    else:
        assert host.startswith("a legacy cgroup v1 host"), host


def test_native_mode_refused_when_runtime_lacks_tmpcopyup(bundle: Path, tmp_path: Path):
    fake = tmp_path / "fakerun"
    fake.write_text('#!/bin/sh\necho \'{"mountOptions": ["ro", "rw"]}\'\n')
    fake.chmod(0o755)
    result = cli("apply", str(bundle), "--copy-up", "native", "--runtime", str(fake), "--cgroup", "v1")
    assert result.returncode == 2
    one_line_error(result, "tmpcopyup")


def test_validate(bundle: Path):
    if not (DEFAULT_SCHEMA_DIR / "config-schema.json").is_file():
        skip_or_fail("OCI schema not installed (golang-github-opencontainers-specs-dev)")
    assert cli("validate", str(bundle)).returncode == 0
    config = json.loads((bundle / "config.json").read_text())
    config["mounts"][0]["options"] = "nosuid"
    config["hostname"] = 7
    (bundle / "config.json").write_text(json.dumps(config))
    result = cli("validate", str(bundle))
    assert result.returncode == 1
    out = result.stdout.decode()
    assert "/mounts/0/options" in out and "/hostname" in out and "runtime-spec config.md#mounts" in out
    data = json.loads(cli("validate", str(bundle), "--format", "json").stdout)
    assert data["valid"] is False and {p["pointer"] for p in data["problems"]} >= {"/hostname", "/mounts/0/options"}


def test_validate_missing_schema_is_bad_input(bundle: Path, tmp_path: Path):
    result = cli("validate", str(bundle), "--schema-dir", str(tmp_path))
    assert result.returncode == 2
    one_line_error(result, "config-schema.json")


def _config_with(bundle: Path, mutate) -> None:
    config = json.loads((bundle / "config.json").read_text())
    mutate(config)
    (bundle / "config.json").write_text(json.dumps(config))


def _set(path, value):
    def mutate(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


BAD_CONFIGS = {
    "not-json": (b"{not json", ["is not JSON"]),
    "empty": (b"", ["is empty"]),
    "not-object": (b"[1, 2]", ["must be an object"]),
    "bom": (b"\xef\xbb\xbf{}", ["byte-order mark"]),
    "non-utf8": (b'{"ociVersion": "\xff"}', ["not UTF-8"]),
    "nan": (b'{"ociVersion": "1.0.2", "x": NaN}', ["NaN"]),
    "duplicate-keys": (b'{"ociVersion": "1.0.2", "ociVersion": "1.0.2"}', ["duplicate key"]),
    "deep": (b"[" * 100_000 + b"]" * 100_000, ["nested too deeply"]),
    "no-version": (b'{"process": {}}', ["/ociVersion", "required"]),
    "unknown-version": (b'{"ociVersion": "2.0.0"}', ["/ociVersion", "2.0.0"]),
}

BAD_FIELDS = {
    "args-not-list": (("process", "args"), "/sbin/init", ["/process/args", "list"]),
    "args-empty": (("process", "args"), [], ["/process/args", "must not be empty"]),
    "args-number": (("process", "args"), [1], ["/process/args/0", "string"]),
    "mounts-not-list": (("mounts",), {"a": 1}, ["/mounts", "list"]),
    "env-null": (("process", "env"), None, ["/process/env", "null"]),
    "mount-no-destination": (("mounts", 0), {"type": "proc"}, ["/mounts/0/destination", "required"]),
    "mount-relative": (("mounts", 0, "destination"), "proc", ["/mounts/0/destination", "absolute"]),
    "mount-dotdot": (("mounts", 0, "destination"), "/run/../etc", ["/mounts/0/destination", ".."]),
    "caps-not-list": (("process", "capabilities", "bounding"), "CAP_KILL", ["/process/capabilities/bounding"]),
    "annotation-number": (("annotations",), {"a/b": 1}, ["/annotations/a~1b", "string"]),
    "cgroups-path-number": (("linux", "cgroupsPath"), 3, ["/linux/cgroupsPath"]),
    "readonly-string": (("root", "readonly"), "yes", ["/root/readonly"]),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_bytes(bundle: Path, name: str):
    data, fragments = BAD_CONFIGS[name]
    (bundle / "config.json").write_bytes(data)
    before = tree_hash(bundle)
    for command in ("plan", "apply", "review"):
        result = cli(command, str(bundle), "--cgroup", "v1", *HOOK)
        assert result.returncode == 2, (command, result.stderr)
        one_line_error(result, str(bundle / "config.json"), *fragments)
    assert tree_hash(bundle) == before


@pytest.mark.parametrize("name", sorted(BAD_FIELDS))
def test_bad_config_fields(bundle: Path, name: str):
    path, value, fragments = BAD_FIELDS[name]
    _config_with(bundle, _set(path, value))
    before = tree_hash(bundle)
    result = cli("apply", str(bundle), "--cgroup", "v1", *HOOK)
    assert result.returncode == 2, result.stderr
    one_line_error(result, "config.json", *fragments)
    assert tree_hash(bundle) == before


def test_huge_config_refused_without_reading(bundle: Path):
    with open(bundle / "config.json", "r+b") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: 200 MB that costs nothing to make
    result = cli("plan", str(bundle))
    assert result.returncode == 2
    one_line_error(result, "larger than")


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "missing"])
def test_config_json_must_be_a_regular_file(bundle: Path, kind: str):
    cfg = bundle / "config.json"
    real = bundle / "real.json"
    cfg.rename(real)
    if kind == "symlink":
        cfg.symlink_to(real)
    elif kind == "fifo":
        os.mkfifo(cfg)
    elif kind == "directory":
        cfg.mkdir()
    before = tree_hash(bundle)
    result = cli("apply", str(bundle), "--cgroup", "v1", *HOOK)
    assert result.returncode == 2
    one_line_error(result, str(cfg), {"symlink": "symbolic link", "fifo": "FIFO", "directory": "directory", "missing": "does not exist"}[kind])
    assert tree_hash(bundle) == before


def test_unreadable_config(bundle: Path):
    os.chmod(bundle / "config.json", 0o600)
    prefix: tuple = ()
    if os.geteuid() == 0:
        # root reads everything: give the file to nobody and run the CLI as a root
        # without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, which the kernel then refuses.
        if not shutil.which("setpriv"):
            skip_or_fail("setpriv (util-linux) is needed to drop root's DAC capabilities")
        os.chown(bundle / "config.json", 65534, 65534)
        prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")
    else:
        os.chmod(bundle / "config.json", 0)
    result = cli("plan", str(bundle), prefix=prefix)
    assert result.returncode == 2
    one_line_error(result, "config.json", "cannot be opened")


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_bundle_must_be_a_directory(tmp_path: Path, kind: str):
    target = tmp_path / "b"
    if kind == "file":
        target.write_text("{}")
    result = cli("plan", str(target))
    assert result.returncode == 2
    one_line_error(result, str(target), "bundle")


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_rootfs_must_be_a_directory(bundle: Path, kind: str):
    shutil.rmtree(bundle / "rootfs")
    if kind == "file":
        (bundle / "rootfs").write_text("")
    before = tree_hash(bundle)
    result = cli("apply", str(bundle), "--cgroup", "v1", *HOOK)
    assert result.returncode == 2
    one_line_error(result, "/root/path", "not a directory")
    assert tree_hash(bundle) == before


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--tmpfs-size", "lots"], "--tmpfs-size"),
        (["--capabilities", "CAP_SYS_ADMIN"], "CAP_SYS_ADMIN"),
        (["--hook-path", "relative/copyup"], "--hook-path"),
        (["--container-id", ""], "container ID"),
    ],
)
def test_bad_options(bundle: Path, args, fragment):
    before = tree_hash(bundle)
    result = cli("apply", str(bundle), "--cgroup", "v1", *HOOK[:0], *args) if "--hook-path" in args else cli(
        "apply", str(bundle), "--cgroup", "v1", *HOOK, *args
    )
    assert result.returncode == 2
    one_line_error(result, fragment)
    assert tree_hash(bundle) == before


def test_usage_errors_exit_2_without_traceback():
    result = cli("plan")
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    result = cli("plan", "x", "--cgroup", "v3")
    assert result.returncode == 2 and b"Traceback" not in result.stderr


def test_policy_dir(bundle: Path, tmp_path: Path):
    policy = tmp_path / "policy"
    shutil.copytree(ROOT / "patches", policy)
    doc = json.loads((policy / "tmpfs.json").read_text())
    doc["defaultSize"] = "8m"
    (policy / "tmpfs.json").write_text(json.dumps(doc))
    result = cli("plan", str(bundle), "--cgroup", "v1", *HOOK, "--policy", str(policy))
    assert result.returncode == 0 and b"size=8m" in result.stdout
    doc["mounts"][0]["options"] = "nosuid"
    (policy / "tmpfs.json").write_text(json.dumps(doc))
    result = cli("plan", str(bundle), "--cgroup", "v1", *HOOK, "--policy", str(policy))
    assert result.returncode == 2
    one_line_error(result, "tmpfs.json", "/mounts/0/options")


def test_golden_cli(tmp_path: Path):
    case = tmp_path / "cases" / "podman-init"
    shutil.copytree(GOLDEN / "podman-init", case)
    assert cli("golden", "check", str(tmp_path / "cases")).returncode == 0
    (case / "review.txt").write_text("stale\n")
    result = cli("golden", "check", str(tmp_path / "cases"))
    assert result.returncode == 1 and b"podman-init/review.txt (expected)" in result.stdout
    assert cli("golden", "update", str(tmp_path / "cases")).returncode == 0
    assert cli("golden", "check", str(case)).returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("golden", "check", str(empty))
    assert result.returncode == 2
    one_line_error(result, "no golden case")


def test_internal_error_is_one_line_and_exit_123(bundle: Path, monkeypatch, capsys):
    import transformer.plan
    from transformer.cli import main

    def boom(*a, **k):
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(transformer.plan, "plan", boom)
    monkeypatch.delenv("OCI_SYSTEMD_DEBUG", raising=False)
    assert main(["plan", str(bundle), "--cgroup", "v1", *HOOK]) == 123
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: simulated bug second line" in err


def test_hooks_config_cli(tmp_path: Path):
    doc = json.loads(cli("hooks-config", "--hook-path", "/usr/local/bin/oci-systemd-copyup").stdout)
    assert doc["version"] == "1.0.0" and doc["stages"] == ["prestart"]
    assert doc["hook"]["path"] == "/usr/local/bin/oci-systemd-copyup"
    default = json.loads(cli("hooks-config").stdout)
    assert default["hook"]["path"].startswith("/") and "-I" in default["hook"]["args"]
    assert default["hook"]["args"][3].endswith("transformer/copyup/hook.py")
    out = tmp_path / "hooks.d" / "oci-systemd.json"
    out.parent.mkdir()
    assert cli("hooks-config", "-o", str(out)).returncode == 0 and json.loads(out.read_text()) == default


def test_default_hook_runs_isolated_interpreter(bundle: Path):
    patch = json.loads(cli("plan", str(bundle), "--cgroup", "v1").stdout)
    (hook_op,) = [op for op in patch if op["path"] == "/hooks/prestart/-"]
    hook = hook_op["value"]
    assert hook["args"][1:3] == ["-I", "-S"] and Path(hook["args"][3]).is_file()
    # The registered command really runs: with no state on stdin it must refuse cleanly.
    result = subprocess.run([hook["path"], *hook["args"][1:]], input=b"", capture_output=True, timeout=30)
    assert result.returncode == 2 and b"Traceback" not in result.stderr and result.stderr.count(b"\n") == 1


def test_symlinked_side_directory_is_refused(bundle: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (bundle / "oci-systemd").symlink_to(outside)
    result = cli("apply", str(bundle), "--cgroup", "v1", *HOOK)
    assert result.returncode == 2
    one_line_error(result, "oci-systemd", "symbolic link")
    assert list(outside.iterdir()) == [], "apply wrote through the symlink"
