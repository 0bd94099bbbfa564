"""What every concern may read: the options and the facts derived once per plan."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ..rootfs import RootfsView
from ..systemd_version import SystemdVersion

if TYPE_CHECKING:
    from ..options import Options
    from .cgroups import CgroupView


class Context(NamedTuple):
    options: Options
    rootfs: RootfsView
    machine_id: str
    readonly_root: bool
    mount_label: str | None
    systemd: SystemdVersion | None
    cgroup_view: "CgroupView"
    # The config has a user namespace: the container's root is not the host's.
    user_namespace: bool
    # The host uid and gid of the container's root (0 when there is no user namespace).
    mapped_root: tuple[int, int]

    def resolve_quietly(self, path: str) -> str:
        """A destination as the runtime will see it; a looping one stays as written."""
        return self.rootfs.destination(path)
