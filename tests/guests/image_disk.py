"""The container images for the test guests: the host-side matrix's own trees, unpacked,
marked and ownership-mapped on the host, on one read-only ext4 disk.

Unpacking a 1.1 GB services tree under software emulation would cost minutes per guest
boot; here the host does it once at native speed and ``mkfs.ext4 -d`` writes the result.
In the guest each bundle's rootfs is an overlay on one of these trees (bundles.Image
.layer_to), so the disk is never written.  The disk is cached beside the tarballs it was
made from, keyed by their keys, the markers and the id maps; a missing one is built
under a temporary name and renamed into place under a lock.

A tree's directory on the disk is its ``TreeSpec.name``: ``bookworm-minimal``,
``bookworm-minimal+100000`` (owners shifted for a 0 -> 100000 user namespace),
``bookworm-minimal+rootless`` (owners mapped for the rootless cell's map, ROOTLESS_IDS).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import guest_image
from tests.harness import bundles, rootfs_cache, userns

FORMAT = 1  # bump when what a tree gets besides its tarball changes (markers, maps)
# The rootless cell's map, as podman's rootless containers have it: the container's root
# is the unprivileged user itself, every other id comes from its /etc/subuid range.
ROOTLESS_IDS: userns.IdMap = ((0, guest_image.TESTER[1], 1),
                              (1, guest_image.SUBID_START, guest_image.SUBID_COUNT))


@dataclass(frozen=True)
class TreeSpec:
    release: str
    flavour: str = "minimal"
    id_map: str = ""  # "": the image's own owners; "userns": userns.DEFAULT_IDS; "rootless": ROOTLESS_IDS

    @property
    def name(self) -> str:
        suffix = {"": "", "userns": f"+{userns.HOST_ID}", "rootless": "+rootless"}[self.id_map]
        return f"{self.release}-{self.flavour}{suffix}"

    @property
    def ids(self) -> userns.IdMap | None:
        return {"": None, "userns": userns.DEFAULT_IDS, "rootless": ROOTLESS_IDS}[self.id_map]


# What the guest cells boot (guest_cells.py): bookworm as the minimal and the services
# image, sid (systemd >= 258), and bookworm's tree for each id map.
TREES: tuple[TreeSpec, ...] = (
    TreeSpec("bookworm"), TreeSpec("bookworm", "services"), TreeSpec("sid"),
    TreeSpec("bookworm", id_map="userns"), TreeSpec("bookworm", id_map="rootless"),
)


def _key(trees: tuple[TreeSpec, ...]) -> str:
    material = {"format": FORMAT, "trees": [
        {"name": t.name, "rootfs": rootfs_cache.image_spec(t.release, t.flavour).key, "ids": t.ids}
        for t in trees]}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def unavailable(trees: tuple[TreeSpec, ...] = TREES) -> str | None:
    """None if ``ensure_disk`` can succeed, else why not (a tarball that cannot be had)."""
    for t in trees:
        why = rootfs_cache.availability(rootfs_cache.image_spec(t.release, t.flavour))
        if why:
            return f"no {t.release} {t.flavour} rootfs: {why}"
    return guest_image.cannot_build_reason()


def ensure_disk(trees: tuple[TreeSpec, ...] = TREES) -> Path:
    """The cached images disk for ``trees``, built first if there is none."""
    disk = rootfs_cache.CACHE_DIR / f"guest-images-{_key(trees)}.ext4"
    if disk.is_file():
        return disk
    with open(disk.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if disk.is_file():
            return disk
        build = Path(tempfile.mkdtemp(prefix=".build-guest-images-", dir=rootfs_cache.CACHE_DIR))
        partial = disk.with_name(f".{disk.name}.partial")
        try:
            top = build / "images"
            top.mkdir()
            plain: dict[tuple[str, str], Path] = {}
            for t in [t for t in trees if not t.id_map] + [t for t in trees if t.id_map]:  # copies last
                source = plain.get((t.release, t.flavour))
                if source is None:
                    source = top / TreeSpec(t.release, t.flavour).name
                    tarball = rootfs_cache.ensure_tarball(rootfs_cache.image_spec(t.release, t.flavour))
                    rootfs_cache.unpack(tarball, source)
                    bundles.add_markers(source)
                    plain[(t.release, t.flavour)] = source
                if t.ids is not None:
                    dest = top / t.name
                    bundles.Image(t.release, source, {}, t.flavour).copy_to(dest)
                    userns.map_owners(dest, t.ids)
            guest_image.make_ext4(top, partial, label="images", slack=64 << 20)
            os.rename(partial, disk)
        finally:
            rootfs_cache.remove_rootfs(build)
            partial.unlink(missing_ok=True)
    return disk
