"""Edge: what the host can tell us. Results are passed into Options as values."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import OptionsError


def cgroup_version(mountinfo: str = "/proc/self/mountinfo") -> str:
    """v2 when /sys/fs/cgroup itself is cgroup2; v1 for legacy and hybrid hosts
    (tmpfs on /sys/fs/cgroup with v1 controllers below it)."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError as exc:
        raise OptionsError(f"cannot read {mountinfo} to probe cgroups ({exc.strerror}); pass --cgroup v1|v2") from None
    fstype = None
    for line in lines:
        fields = line.split()
        if len(fields) < 7 or "-" not in fields:
            continue
        sep = fields.index("-")
        if fields[4] == "/sys/fs/cgroup" and sep + 1 < len(fields):
            fstype = fields[sep + 1]  # the last mount there wins
    if fstype is None:
        raise OptionsError("nothing is mounted on /sys/fs/cgroup; pass --cgroup v1|v2")
    return "v2" if fstype == "cgroup2" else "v1"


def copyup_helper_path(name: str = "oci-systemd-copyup") -> str | None:
    """The helper installed beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside.absolute())
    found = shutil.which(name)
    return str(Path(found).absolute()) if found else None


def runtime_mount_options(runtime: str) -> set[str] | None:
    """`RUNTIME features` mountOptions, or None when the runtime cannot say."""
    path = shutil.which(runtime)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "features"], capture_output=True, timeout=10, check=True).stdout
        return set(json.loads(out).get("mountOptions") or [])
    except (OSError, subprocess.SubprocessError, ValueError, AttributeError):
        return None
