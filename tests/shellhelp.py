"""Small runners and builders for tests of the shell: main() in this process, and
systemd bundles on disk."""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

from planhelp import GOLDEN
from transformer.cli import main

ROOT = Path(__file__).resolve().parent.parent
HOOK = ("--hook-path", "/usr/local/bin/oci-systemd-copyup", "--cgroup", "v1")


def run(capfdbinary, monkeypatch, *argv: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
    """main() in this process, stdin from bytes: (exit code, stdout, stderr). capfd
    rather than capsys: the filter writes podman's unchanged bytes to fd 1 directly."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    monkeypatch.delenv("OCI_SYSTEMD_DEBUG", raising=False)
    code = main(list(argv))
    out, err = capfdbinary.readouterr()
    return code, out, err.decode()


def systemd_bundle(path: Path, config: Path = GOLDEN / "runc-spec-init" / "config.json") -> Path:
    """A bundle whose /sbin/init is systemd, with the given config."""
    (path / "rootfs" / "sbin").mkdir(parents=True)
    os.symlink("/lib/systemd/systemd", path / "rootfs" / "sbin" / "init")
    shutil.copy(config, path / "config.json")
    return path


def tree(root: Path) -> dict[str, str]:
    """Every path below root, with what it is (a link's target, a file's text)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            found[str(p.relative_to(root))] = (
                f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else p.read_text()
            )
    return found
