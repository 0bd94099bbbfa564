"""Edge: what the host can tell us. Results are passed into Options as values."""

from __future__ import annotations

import json
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


def copyup_hook_command(script: str) -> tuple[str, ...] | None:
    """How a runtime should run the installed helper: this interpreter, isolated and
    without site (-I -S), on the helper's hook.py. That skips the console-script
    wrapper and site-packages, which cost several times the helper's own work on
    every container start (bench/bench_copyup.py)."""
    package = Path(__file__).resolve().parent
    hook = package.parent / script
    if not hook.is_file() or not sys.executable:
        return None
    return (str(Path(sys.executable).absolute()), "-I", "-S", str(hook))


def runtime_mount_options(runtime: str) -> set[str] | None:
    """`RUNTIME features` mountOptions, or None when the runtime cannot say."""
    import shutil
    import subprocess

    path = shutil.which(runtime)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "features"], capture_output=True, timeout=10, check=True).stdout
        return set(json.loads(out).get("mountOptions") or [])
    except (OSError, subprocess.SubprocessError, ValueError, AttributeError):
        return None
