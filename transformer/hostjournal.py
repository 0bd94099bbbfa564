"""Edge: the host directories of `--journal host`, and pruning them.

The core only names the directories a plan needs (Plan.host_directories); creating,
registering and removing them is host I/O, so it lives here. Only directories that
oci-systemd registered are ever removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from .bundle import write_atomic
from .errors import BundleError
from .concerns.journal import JournalPolicy


def create_directories(result, label: str, policy) -> None:
    """Edge: create the host directories a plan names (--journal host) and register
    them for `oci-systemd journal prune`. Only ever below the policy's hostDirectory."""
    if not result.host_directories:
        return
    journal = policy.journal
    for entry in result.host_directories:
        directory = entry.path
        path = Path(directory)
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            try:
                path.mkdir(mode=0o755)
            except FileExistsError:
                pass
            if path.is_symlink() or not path.is_dir():
                raise BundleError("exists and is not a directory; refusing to bind it", file=directory)
            # The container's root (a mapped uid in a user namespace) writes there.
            os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
            registry = Path(journal.registry_directory)
            registry.mkdir(mode=0o755, parents=True, exist_ok=True)
            record = json.dumps({"directory": directory, "bundle": label}) + "\n"
            write_atomic(registry / path.name, record.encode("utf-8"), 0o644)
        except OSError as exc:
            raise BundleError(f"cannot create ({exc.strerror})", file=exc.filename or directory) from None


def prune(policy: JournalPolicy, days: float, dry_run: bool) -> tuple[list[Path], int]:
    """Remove the registered directories whose newest file is older than `days`.
    Returns (the directories removed, or that would be with dry_run; how many kept)."""
    registry = Path(policy.registry_directory)
    host_own = _host_machine_id()
    removed: list[Path] = []
    kept = 0
    now = time.time()
    entries = sorted(registry.iterdir()) if registry.is_dir() else []
    for entry in entries:
        name = entry.name
        if not re.fullmatch(r"[0-9a-f]{32}", name):
            continue
        directory = Path(policy.host_directory) / name
        if name == host_own:
            continue  # never the host's own journal, whatever the registry says
        newest = _newest_mtime(directory)
        if newest is not None and now - newest < days * 86400:
            kept += 1
            continue
        removed.append(directory)
        if dry_run:
            continue
        try:
            if directory.is_symlink():
                directory.unlink()
            elif directory.exists():
                shutil.rmtree(directory)
            entry.unlink()
        except OSError as exc:
            raise BundleError(f"cannot remove ({exc.strerror})", file=exc.filename or str(directory)) from None
    return removed, kept


def _host_machine_id() -> str | None:
    try:
        return Path("/etc/machine-id").read_text().strip() or None
    except OSError:
        return None


def _newest_mtime(directory: Path) -> float | None:
    """The newest mtime of directory and everything in it; None when it is gone."""
    try:
        newest = directory.lstat().st_mtime
    except OSError:
        return None
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except OSError:
                pass
    return newest
