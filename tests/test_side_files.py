"""Side files go through one guarded writer, for apply and for the podman filter: a
symlinked side directory is refused before anything is created through it, and the
filter prints exactly its plan's patch applied, with the side files where that plan
says they are."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import jsonpatch
import pytest

from planhelp import GOLDEN

from transformer.cli import main
from transformer.concerns.machine_id import machine_id_for

ROOT = Path(__file__).resolve().parent.parent
HOOK = ("--hook-path", "/usr/local/bin/oci-systemd-copyup", "--cgroup", "v1")
ENGINE_ID = "7fe469f72410a0f2568e085b9f8f6d33" + "7050f0a6827283dfc034d057c0bfd58a"


def run(capfdbinary, monkeypatch, *argv: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
    """main() in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    monkeypatch.delenv("OCI_SYSTEMD_DEBUG", raising=False)
    code = main(list(argv))
    out, err = capfdbinary.readouterr()
    return code, out, err.decode()


def tree(root: Path) -> dict[str, str]:
    """Every path below root, with what it is (a link's target, a file's bytes)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            found[str(p.relative_to(root))] = (
                f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else p.read_text()
            )
    return found


def systemd_bundle(path: Path) -> Path:
    (path / "rootfs" / "sbin").mkdir(parents=True)
    os.symlink("/lib/systemd/systemd", path / "rootfs" / "sbin" / "init")
    shutil.copy(GOLDEN / "runc-spec-init" / "config.json", path / "config.json")
    return path


def policy_with_side_directory(tmp_path: Path, side: str) -> Path:
    policy = tmp_path / "policy"
    shutil.copytree(ROOT / "patches", policy)
    doc = json.loads((policy / "machine-id.json").read_text())
    doc["sideDirectory"] = side
    (policy / "machine-id.json").write_text(json.dumps(doc))
    return policy


def test_apply_refuses_a_nested_side_directory_below_a_link_before_creating_anything(tmp_path, capfdbinary,
                                                                                      monkeypatch):
    """Bug 5: the side directory state/oci-systemd with state a link out of the bundle."""
    bundle = systemd_bundle(tmp_path / "bundle")
    outside = tmp_path / "outside"
    outside.mkdir()
    (bundle / "state").symlink_to(outside)
    policy = policy_with_side_directory(tmp_path, "state/oci-systemd")
    before = tree(tmp_path)
    code, out, err = run(capfdbinary, monkeypatch, "apply", str(bundle), *HOOK, "--policy", str(policy))
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("oci-systemd: error: ") and "symbolic link" in err, err
    assert str(bundle / "state") in err
    assert list(outside.iterdir()) == [], "apply created directories through the link"
    assert tree(tmp_path) == before


def test_apply_writes_a_nested_side_directory(tmp_path, capfdbinary, monkeypatch):
    bundle = systemd_bundle(tmp_path / "bundle")
    policy = policy_with_side_directory(tmp_path, "state/oci-systemd")
    code, _, err = run(capfdbinary, monkeypatch, "apply", str(bundle), *HOOK, "--policy", str(policy))
    assert code == 0, err
    assert (bundle / "state" / "oci-systemd" / "machine-id").read_text().endswith("\n")
    config = json.loads((bundle / "config.json").read_text())
    assert {"destination": "/etc/machine-id", "type": "bind", "source": "state/oci-systemd/machine-id",
            "options": ["bind", "ro", "nosuid", "nodev", "noexec"]} in config["mounts"]
