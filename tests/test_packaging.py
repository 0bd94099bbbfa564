"""The wheel ships the policy (patches/) and works away from the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "oci-systemd"
    # Build from a clean copy so build/ and *.egg-info never land in the checkout.
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", ".pytest_cache", ".hypothesis", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("oci_systemd-*.whl")
    return found


def test_wheel_ships_patches_and_both_scripts(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = z.read(entry_points).decode()
    for doc in (ROOT / "patches").glob("*.json"):
        assert f"transformer/patches/{doc.name}" in names
    assert "oci-systemd = transformer.cli:entry" in scripts
    assert "oci-systemd-copyup = transformer.copyup.main:main" in scripts


def test_installed_wheel_plans_from_any_directory(wheel: Path, tmp_path: Path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    shutil.copy(ROOT / "golden" / "runc-spec-init" / "config.json", bundle / "config.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    result = subprocess.run(
        [sys.executable, "-m", "transformer", "plan", str(bundle), "--cgroup", "v1", "--hook-path", "/usr/bin/x"],
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)
    where = subprocess.run(
        [sys.executable, "-c", "import transformer.policy as p; print(p.default_policy_dir())"],
        capture_output=True, cwd=tmp_path, env=env, text=True, check=True,
    ).stdout.strip()
    assert where.startswith(str(target)), f"policy loaded from {where}, not from the installed wheel"
    # The helper, run as its hook is (no site), reads its default DESTs from that policy too.
    helper = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(target)!r});"
         "from transformer.copyup.bundle_view import policy_destinations as d, policy_file as f;"
         "print(f('tmpfs.json')); print(*d())"],
        capture_output=True, cwd=tmp_path, text=True, check=True,
    ).stdout.splitlines()
    assert helper[0] == str(target / "transformer" / "patches" / "tmpfs.json")
    assert "/run" in helper[1].split()
