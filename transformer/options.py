"""The one frozen object that configures the pure core.

Everything the core may depend on is here as a value: the policy, the host's kind of
cgroups (already probed by the CLI), the copy-up mode, the container ID and where the
side files go. The core itself reads no host state, no clock and no environment.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .concerns.capabilities import CAPABILITY_NAME
from .errors import OptionsError

if TYPE_CHECKING:
    from .policy import Policy

# The kind of host the bundle will run on, as the edge probed it (--cgroup auto) or the
# user named it: "v2" (cgroup2 on /sys/fs/cgroup), "hybrid" (v1 controllers plus the
# unified hierarchy at /sys/fs/cgroup/unified), "legacy" (v1 only), or "v1" (a v1 host of
# either kind, where the v1 view is wanted whatever the image's systemd).
CgroupHost = Literal["v2", "hybrid", "legacy", "v1"]
CGROUP_HOSTS = ("v2", "hybrid", "legacy", "v1")
CopyUpMode = Literal["hook", "native"]
JournalMode = Literal["tmpfs", "host"]

_SIZE = re.compile(r"^[0-9]+[kmgKMG%]?$")


@dataclass(frozen=True)
class Options:
    policy: Policy
    container_id: str
    cgroup: CgroupHost = "v1"
    copy_up: CopyUpMode = "hook"
    # How the runtime runs the copy-up helper (hook mode only): the absolute program,
    # then its leading arguments, e.g. ("/usr/bin/python3", "-I", "-S", ".../hook.py")
    # or ("/usr/local/bin/oci-systemd-copyup",).
    hook_command: tuple[str, ...] | None = None
    tmpfs_size: str | None = None
    # Replaces the policy's capability list when set.
    capabilities: tuple[str, ...] | None = None
    force: bool = False
    # tmpfs: the journal stays in the /var/log/journal tmpfs; host: a per-container
    # directory of the host is bound at /var/log/journal/<machine-id>.
    journal: JournalMode = "tmpfs"
    # The directory of the side files (machine-id, masked unit, seccomp generator), which
    # the plan's bind mounts name as their sources. None: the policy's sideDirectory
    # (oci-systemd). A relative directory is relative to the bundle directory, as a
    # relative bind source is for the runtime (runtime-spec, runc, crun), so the bundle
    # stays relocatable and the patch host-independent. An absolute one is used as it
    # is, for a caller that does not know the bundle directory (podman's precreate hook).
    side_dir: str | None = None
    # The os-release fields of the host the container will run on, as the edge read them
    # (run_host.parse_os_release): the source of $container_host_*.  Empty: none set.
    host_os_release: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Validate when configured, so applying only applies (the kustomize lesson).
        if self.cgroup not in CGROUP_HOSTS:
            raise OptionsError(f"--cgroup must be one of {', '.join(CGROUP_HOSTS)} or auto, not {self.cgroup!r}")
        if self.copy_up not in ("hook", "native"):
            raise OptionsError(f"--copy-up must be hook or native, not {self.copy_up!r}")
        if self.journal not in ("tmpfs", "host"):
            raise OptionsError(f"--journal must be tmpfs or host, not {self.journal!r}")
        if not self.container_id:
            raise OptionsError("the container ID must not be empty")
        if self.tmpfs_size is not None and not _SIZE.match(self.tmpfs_size):
            raise OptionsError(
                f"--tmpfs-size {self.tmpfs_size!r} is not a tmpfs size (examples: 64m, 1g, 10%)"
            )
        if self.hook_command is not None and (not self.hook_command or not self.hook_command[0].startswith("/")):
            raise OptionsError(f"--hook-path must be absolute, not {(self.hook_command or ('',))[0]!r}")
        if self.capabilities is not None:
            for cap in self.capabilities:
                if not CAPABILITY_NAME.match(cap):
                    raise OptionsError(f"--capabilities: {cap!r} is not a capability name")
                if cap in self.policy.capabilities.forbidden:
                    raise OptionsError(f"--capabilities: {cap} is never granted by oci-systemd")
        if self.side_dir is not None:
            _check_side_dir(self.side_dir)

    def side_source(self, name: str) -> str:
        """The mount source of side file `name`: a path in the side directory."""
        directory = self.side_dir if self.side_dir is not None else self.policy.machine_id.side_directory
        return f"{directory}/{name}"


def _check_side_dir(side_dir: str) -> None:
    if side_dir in ("", ".", "/"):
        raise OptionsError(f"--side-dir {side_dir!r} must be a directory of its own, not the bundle or the host's root")
    # Normal form, because the sources are compared with the config's own mounts and
    # written by the edge: '/run//x' or 'a/./b' would be a second name for one file.
    if posixpath.normpath(side_dir) != side_dir or side_dir.startswith("//"):
        raise OptionsError(
            f"--side-dir {side_dir!r} must name a directory in normal form (no '.', '..', '//' or trailing '/')"
        )
    if ".." in side_dir.split("/"):
        raise OptionsError(f"--side-dir {side_dir!r} must stay inside the bundle directory")


def normalise_capability(name: str) -> str:
    name = name.strip().upper()
    return name if name.startswith("CAP_") else "CAP_" + name
