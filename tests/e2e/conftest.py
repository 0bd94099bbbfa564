"""Session fixtures of the end-to-end suite: the unpacked images (one per release, shared,
never modified), the copy-up hook wrapper, and a table of boot figures printed at the end."""

from __future__ import annotations

import threading

import pytest
from support import require_root, skip_or_fail

import bundles
from e2e_figures import BOOT_FIGURES
import rootfs_cache
import runc_harness


def e2e_preconditions() -> None:
    require_root()
    why = runc_harness.runc_available()
    if why:
        skip_or_fail(why)


class Images:
    """Unpacks a release on first use (~3 s from the cached tarball), once per session."""

    def __init__(self, base) -> None:
        self._base = base
        self._images: dict[str, bundles.Image] = {}
        self._locks: dict[str, threading.Lock] = {r: threading.Lock() for r in rootfs_cache.RELEASES}

    def get(self, release: str) -> bundles.Image:
        e2e_preconditions()
        why = rootfs_cache.availability(rootfs_cache.RootfsSpec(release))
        if why:
            skip_or_fail(f"no {release} rootfs: {why}")
        with self._locks[release]:
            if release not in self._images:
                self._images[release] = bundles.Image.unpack(release, self._base / release)
            return self._images[release]

    def cleanup(self) -> None:
        for image in self._images.values():
            rootfs_cache.remove_rootfs(image.rootfs)


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    imgs = Images(tmp_path_factory.mktemp("images"))
    try:
        yield imgs
    finally:
        imgs.cleanup()


@pytest.fixture(scope="session")
def hook_path(tmp_path_factory):
    """An absolute executable running this checkout's oci-systemd-copyup."""
    return bundles.write_hook_wrapper(tmp_path_factory.mktemp("hook") / "oci-systemd-copyup")


def pytest_terminal_summary(terminalreporter):
    if not BOOT_FIGURES:
        return
    tr = terminalreporter
    tr.section("oci-systemd e2e boot figures")
    tr.write_line(f"{'case':58} {'boot 1':>8} {'stop':>6} {'boot 2':>8} {'stop':>6}")
    for f in BOOT_FIGURES:
        cells = [f"{f[k]:.2f}s" if isinstance(f.get(k), float) else "-" for k in ("boot1", "stop1", "boot2", "stop2")]
        tr.write_line(f"{f['case']:58} {cells[0]:>8} {cells[1]:>6} {cells[2]:>8} {cells[3]:>6}")
