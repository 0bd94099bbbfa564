"""A typo in a policy document stops the command line: exit 2, one line naming the
file and the JSON pointer, nothing written. Run in process through main()."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.harness.paths import GOLDEN
from transformer.cli import main
from transformer.errors import EXIT_BAD_INPUT
from transformer.policy import default_policy_dir

# --force: PID 1 counts as systemd whatever the (empty) rootfs holds.
ARGS = ("--force", "--hook-path", "/usr/local/bin/oci-systemd-copyup")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    b = tmp_path / "bundle"
    (b / "rootfs").mkdir(parents=True)
    shutil.copy(GOLDEN / "runc-spec-init" / "config.json", b / "config.json")
    return b


def _policy_dir(tmp_path: Path, name: str, mutate) -> Path:
    """A --policy DIR holding one changed copy of a shipped document."""
    directory = tmp_path / "policy"
    directory.mkdir()
    doc = json.loads((default_policy_dir() / f"{name}.json").read_text())
    mutate(doc)
    (directory / f"{name}.json").write_text(json.dumps(doc))
    return directory


def test_the_same_policy_dir_without_a_typo_is_accepted(bundle, tmp_path, capsys):
    policy = _policy_dir(tmp_path, "tmpfs", lambda d: d["mounts"][0].__setitem__("$comment", "documentation"))
    assert main(["apply", "--policy", str(policy), *ARGS, str(bundle)]) == 0
    assert "error" not in capsys.readouterr().err
    assert (bundle / "oci-systemd" / "machine-id").is_file()


@pytest.mark.parametrize(
    "name,mutate,pointer",
    [
        ("tmpfs", lambda d: d["mounts"][0].__setitem__("copyup", d["mounts"][0].pop("copyUp")), "/mounts/0/copyup"),
        ("tmpfs", lambda d: d.__setitem__("readOnlyRoot", d.pop("readonlyRoot")), "/readOnlyRoot"),
        ("tmpfs", lambda d: d["mounts"][1].__setitem__("destination", "/run//lock"), "/mounts/1/destination"),
        ("tmpfs", lambda d: d["mounts"][0].__setitem__("destination", "/run/./x"), "/mounts/0/destination"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "apply"])
def test_policy_typo_is_exit_2_naming_file_and_pointer(bundle, tmp_path, capsys, command, name, mutate, pointer):
    policy = _policy_dir(tmp_path, name, mutate)
    before = (bundle / "config.json").read_bytes()
    code = main([command, "--policy", str(policy), *ARGS, str(bundle)])
    out, err = capsys.readouterr()
    assert code == EXIT_BAD_INPUT, err
    (line,) = err.splitlines()
    assert line.startswith("oci-systemd: error: ") and f"{policy / (name + '.json')}: {pointer}: " in line, line
    assert out == ""
    assert (bundle / "config.json").read_bytes() == before
    assert not (bundle / "oci-systemd").exists()


def test_typo_in_the_builtin_patches_is_exit_2(bundle, tmp_path, capsys, monkeypatch):
    """The shipped documents go through the same reader: an edited patches/ is checked too."""
    import transformer.policy

    builtin = tmp_path / "patches"
    shutil.copytree(default_policy_dir(), builtin)
    doc = json.loads((builtin / "machine-id.json").read_text())
    doc["maskUnit"] = doc.pop("maskUnits")
    (builtin / "machine-id.json").write_text(json.dumps(doc))
    monkeypatch.setattr(transformer.policy, "default_policy_dir", lambda: builtin)
    assert main(["plan", *ARGS, str(bundle)]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"oci-systemd: error: {builtin}/machine-id.json: /maskUnit: unknown field"
