"""Session fixtures of the end-to-end suite: the unpacked images (per release, minimal or
with services, and their ownership-shifted copies; shared, never modified), the copy-up
hook wrapper, and a table of boot figures printed at the end."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import bundles, rootfs_cache, runc_harness
from tests.harness.figures import BOOT_FIGURES
from tests.harness.skips import require_root, skip_or_fail


def e2e_preconditions() -> None:
    require_root()
    why = runc_harness.runc_available()
    if why:
        skip_or_fail(why)


class Images:
    """Unpacks an image on first use, once per session (from the cached tarball: ~3 s for
    a minimal tree, ~15 s for a services one), and makes its ownership-shifted copy for
    user-namespaced containers (userns.py) once, from it.  Safe to call from threads."""

    def __init__(self, base) -> None:
        self._base = base
        self._images: dict[tuple[str, str, int], bundles.Image | Exception] = {}
        self._locks: dict[tuple[str, str, int], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, release: str, flavour: str = "minimal", id_offset: int = 0) -> bundles.Image:
        e2e_preconditions()
        why = rootfs_cache.availability(rootfs_cache.image_spec(release, flavour))
        if why:
            skip_or_fail(f"no {release} {flavour} rootfs: {why}")
        key = (release, flavour, id_offset)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._images:
                dest = self._base / (f"{release}-{flavour}" + (f"+{id_offset}" if id_offset else ""))
                try:
                    if id_offset:
                        self._images[key] = self.get(release, flavour).shifted(dest, id_offset)
                    else:
                        self._images[key] = bundles.Image.unpack(release, dest, flavour)
                except Exception as exc:
                    # every later caller gets the same error, not a retry into a half-made tree
                    rootfs_cache.remove_rootfs(dest)
                    self._images[key] = exc
            image = self._images[key]
            if isinstance(image, Exception):
                raise RuntimeError(f"the {release} {flavour} image could not be made") from image
            return image

    def cleanup(self) -> None:
        # two at a time: removing a 1.1 GB services tree takes seconds of kernel time
        trees = [image.rootfs for image in self._images.values() if isinstance(image, bundles.Image)]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(rootfs_cache.remove_rootfs, trees))


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
    # checks.unit_verdict: enabled units that passed without being active, and why
    accepted = [(f["case"], unit, why) for f in BOOT_FIGURES for unit, why in sorted((f.get("accepted") or {}).items())]
    if accepted:
        tr.write_line("enabled units accepted while inactive:")
        for case, unit, why in accepted:
            tr.write_line(f"  {case}: {unit}: {why}")
