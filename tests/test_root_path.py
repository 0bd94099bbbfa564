"""Bug: a config whose root has no path was accepted. The runtime spec makes root.path
REQUIRED on Linux (config.md, "Root"), so it is bad input on both sides, named by the
file and the pointer /root/path, and nothing is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transformer.config import check_config
from transformer.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "transformer" / "copyup" / "hook.py"
GOOD = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["/sbin/init"]}}


def _bundle(tmp_path: Path, config: dict) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def _files(top: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(top)): p.read_bytes() if p.is_file() else None for p in sorted(top.rglob("*"))}


def _one_line(result: subprocess.CompletedProcess, code: int) -> str:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_root_without_path_is_bad_input(tmp_path: Path, command: str):
    """root.path is REQUIRED on Linux; plan and apply took <bundle>/rootfs instead,
    exited 0 and (apply) wrote."""
    bundle = _bundle(tmp_path, {**GOOD, "root": {"readonly": True}})
    before = _files(bundle)
    result = subprocess.run(
        [sys.executable, "-m", "transformer", command, str(bundle), "--cgroup", "v2", "--hook-path", "/usr/bin/x"],
        capture_output=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )
    err = _one_line(result, 2)
    assert f"{bundle / 'config.json'}: /root/path: is required" in err
    assert _files(bundle) == before


def test_helper_refuses_a_root_without_path(tmp_path: Path):
    bundle = _bundle(tmp_path, {**GOOD, "root": {}, "mounts": [{"destination": "/run", "type": "tmpfs"}]})
    state = {"ociVersion": "1.0.2", "id": "t", "status": "creating", "pid": os.getpid(), "bundle": str(bundle)}
    result = subprocess.run([sys.executable, "-I", "-S", str(HOOK), "--stage", "prestart", "/run"],
                            input=json.dumps(state).encode(), capture_output=True, timeout=60)
    err = _one_line(result, 2)
    assert err == f"oci-systemd-copyup: {bundle / 'config.json'}: /root/path: is required\n"


def test_the_core_requires_root_path_too():
    with pytest.raises(ConfigError) as info:
        check_config({**GOOD, "root": {"readonly": True}}, "config.json")
    assert info.value.pointer == "/root/path"
    check_config({"ociVersion": "1.0.2"}, "config.json")  # no root at all: the edge looks in <bundle>/rootfs
