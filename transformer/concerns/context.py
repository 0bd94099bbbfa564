"""What every concern may read: the options and the facts derived once per plan."""

from __future__ import annotations

from typing import NamedTuple


from ..options import Options
from ..rootfs import RootfsView


class Context(NamedTuple):
    options: Options
    rootfs: RootfsView
    machine_id: str
    readonly_root: bool
    mount_label: str | None

    def resolve_quietly(self, path: str) -> str:
        """A destination as the runtime will see it; a looping one stays as written."""
        return self.rootfs.destination(path)
