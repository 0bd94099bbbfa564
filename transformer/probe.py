"""Edge: what the host can tell us. Results are passed into Options as values."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import OptionsError


def cgroup_host(mountinfo: str = "/proc/self/mountinfo") -> str:
    """The host's kind of cgroups, from the mount table of the namespace runc will use:
    "v2" when /sys/fs/cgroup itself is cgroup2; "hybrid" when it is a tmpfs of v1
    hierarchies with the unified one mounted below it (/sys/fs/cgroup/unified, as
    systemd does it); "legacy" when there are v1 hierarchies only."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError as exc:
        raise OptionsError(f"cannot read {mountinfo} to probe cgroups ({exc.strerror}); pass --cgroup") from None
    top = None
    unified_below = False
    for line in lines:
        fields = line.split()
        if len(fields) < 7 or "-" not in fields:
            continue
        sep = fields.index("-")
        if sep + 1 >= len(fields):
            continue
        mount_point, fstype = fields[4], fields[sep + 1]
        if mount_point == "/sys/fs/cgroup":
            top = fstype  # the last mount there wins, and hides what was below it
            unified_below = False
        elif mount_point.startswith("/sys/fs/cgroup/") and fstype == "cgroup2":
            unified_below = True
    if top is None:
        raise OptionsError("nothing is mounted on /sys/fs/cgroup; pass --cgroup v2|hybrid|legacy")
    if top == "cgroup2":
        return "v2"
    return "hybrid" if unified_below else "legacy"


# os-release(5): /etc/os-release, and /usr/lib/os-release where that is missing
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


def os_release_fields(path: str | None) -> tuple[tuple[str, str], ...]:
    """The fields of the host's os-release (--host-os-release: a FILE, 'none', or None for
    this machine's). A file named by the user must be readable; this machine's may be
    missing (no fields then), as it is in some minimal build containers."""
    from .concerns.run_host import parse_os_release

    if path == "none":
        return ()
    for candidate in (path,) if path is not None else OS_RELEASE:
        try:
            with open(candidate, "rb") as f:
                data = f.read(64 * 1024)  # os-release is a few hundred bytes: bound what a wrong path costs
        except OSError as exc:
            if path is not None:
                raise OptionsError(f"--host-os-release {path}: cannot read it ({exc.strerror})") from None
            continue
        return parse_os_release(data.decode("utf-8", "replace"))
    return ()


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
