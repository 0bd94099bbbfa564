"""For tests of the shell (cli.py, batch.py, podman.py): main() in this process with
pytest's fd capture (the filter writes podman's unchanged bytes to fd 1 directly), and
the harness's systemd bundle with another of the golden configs."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

from tests.harness.bundles import make_systemd_bundle
from tests.harness.paths import GOLDEN
from transformer.cli import main

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
    """bundles.make_systemd_bundle, with the bytes of ``config`` as its config.json."""
    make_systemd_bundle(path)
    shutil.copy(config, path / "config.json")
    return path
