"""podman's precreate hook: the `filter` job, and the hooks.d files that install it.

podman >= 4 runs a precreate hook with the container's config.json on stdin and
runs the config the hook prints. The filter is the one-bundle job on that config:
the same reader finds the rootfs, the core plans, and the same guarded writer puts
the side files down. Only where they go differs: a precreate hook cannot know the
bundle directory the runtime will get (podman 4.3 runs it in podman's own working
directory), so the plan binds them by absolute path from a directory of their own,
named after the machine-id that very plan gives the container.

The hooks.d document of the filter lives here, beside the code it runs; the copy-up
helper's own document is copyup/hooksconfig.py, which the helper must be able to
import without the transformer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

from .bundle import read_bundle, write_atomic, write_side_files
from .draft import Plan
from .errors import BundleError, OptionsError
from .job import plan_bundle
from .options import Options

SIDE_ROOT = "/run/oci-systemd"
HOOKS_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")
FILTER_FILE = "50-oci-systemd-filter.json"
COPYUP_FILE = "50-oci-systemd-copyup.json"

_HEX64 = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


def runtime_container_id(config: dict[str, Any]) -> str | None:
    """The engine's container ID, when the config shows it: podman and CRI-O put the
    64-hex ID in linux.cgroupsPath (/libpod_parent/libpod-ID, machine.slice:libpod:ID,
    crio-ID.scope). Else the container's own root.path, unique per container."""
    linux = config.get("linux") if isinstance(config.get("linux"), dict) else {}
    found = _HEX64.search(str(linux.get("cgroupsPath") or ""))
    if found:
        return found.group(0)
    root = config.get("root") if isinstance(config.get("root"), dict) else {}
    path = root.get("path")
    return path if isinstance(path, str) and os.path.isabs(path) else None


class Filtered(NamedTuple):
    output: bytes  # what podman runs: the new config, or the very bytes it sent
    plan: Plan


def filter_config(options: Options, container_id_given: bool, side_dir: str | None) -> Filtered:
    """Read a config on stdin and plan it; write its side files and host directories.
    Without side_dir the side files go to SIDE_ROOT/<machine-id>."""
    from . import hostjournal
    from .concerns.machine_id import choose

    bundle = read_bundle("-")
    if not container_id_given:
        options = dataclasses.replace(options, container_id=runtime_container_id(bundle.config) or str(Path.cwd()))
    side = Path(side_dir) if side_dir else Path(SIDE_ROOT) / choose(bundle.config, options)[0]
    if not side.is_absolute():
        raise OptionsError(f"--side-dir must be absolute, not {str(side)!r}")
    # The side directory a bundle would have (the policy's), below the filter's own.
    options = dataclasses.replace(options, side_dir=str(side / options.policy.machine_id.side_directory))
    plan = plan_bundle(bundle, options)
    if not plan.ops:
        assert bundle.config_bytes is not None
        return Filtered(bundle.config_bytes, plan)
    # From side.parent down: a link at the side directory itself is refused too.
    write_side_files(side.parent, plan.side_files)
    hostjournal.create_directories(plan, f"container {options.container_id}", options.policy)
    return Filtered((json.dumps(plan.config, ensure_ascii=False) + "\n").encode("utf-8"), plan)


def copyup_hook_config(hook_path: str | None) -> dict[str, Any]:
    """The prestart copy-up document: the helper at hook_path, else this install's."""
    from .copyup.hooksconfig import hooks_config
    from .policy import load_policy
    from .probe import copyup_hook_command

    command = (hook_path,) if hook_path else copyup_hook_command(load_policy().copy_up.hook_script)
    if command is None:
        raise OptionsError("cannot find the copy-up helper; pass --hook-path")
    return hooks_config(command)


def filter_hook_config(command: tuple[str, ...], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The oci-hooks(5) 1.0.0 document that runs `oci-systemd filter` at podman's
    precreate stage, for every container: the filter's own detection decides (it
    resolves symlinks in the rootfs and looks through sh -c), and it returns a
    non-systemd config byte for byte."""
    path = command[0]
    if not path.startswith("/"):
        raise OptionsError(f"filter path {path!r}: must be an absolute path")
    return {
        "version": "1.0.0",
        # args[0] is the absolute path: a venv's python finds its pyvenv.cfg from argv[0],
        # and hooks run with an empty environment (no PATH to search for "python3").
        "hook": {"path": path, "args": [path, *command[1:], "filter", *extra], "timeout": 30},
        "when": {"always": True},
        "stages": ["precreate"],
    }


def default_filter_command() -> tuple[str, ...]:
    # -I: podman runs the hook in its own working directory, which must not end up
    # on sys.path (-m would put it there); site-packages, where we live, stays.
    return (str(Path(sys.executable).absolute()), "-I", "-m", "transformer")


def write_hooks_dir(directory: Path, copyup: dict[str, Any], filter_path: str | None, journal: str) -> None:
    """The two hooks.d files podman needs: the precreate filter and the prestart copy-up."""
    extra = ("--journal", journal) if journal != "tmpfs" else ()
    filt = filter_hook_config((filter_path,) if filter_path else default_filter_command(), extra)
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name, doc in ((FILTER_FILE, filt), (COPYUP_FILE, copyup)):
            write_atomic(directory / name, (json.dumps(doc, indent=2) + "\n").encode("utf-8"), 0o644)
    except OSError as exc:
        raise BundleError(f"cannot write ({exc.strerror})", file=exc.filename or str(directory)) from None
