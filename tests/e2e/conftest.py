"""Session fixtures of the end-to-end suite: the unpacked images (per release, minimal or
with services, and their ownership-shifted copies; shared, never modified, kept between
sessions) and the copy-up hook wrapper.  The boot figures the cells gather are printed
by tests/conftest.py."""

from __future__ import annotations

import threading

import pytest

from tests.harness import bundles, rootfs_cache, runc_harness
from tests.harness.skips import require_root, skip_or_fail


def e2e_preconditions() -> None:
    require_root()
    why = runc_harness.runc_available()
    if why:
        skip_or_fail(why)


class Images:
    """Each image the session uses, found (or made: ~3 s for a minimal tree, ~15 s for a
    services one, its ownership-shifted copy for user-namespaced containers from it) by
    bundles.Image.cached once, on first use.  Safe to call from threads."""

    def __init__(self) -> None:
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
                try:
                    self._images[key] = bundles.Image.cached(release, flavour, id_offset)
                except Exception as exc:
                    # every later caller gets the same error, not a retry of the same failure
                    self._images[key] = exc
            image = self._images[key]
            if isinstance(image, Exception):
                raise RuntimeError(f"the {release} {flavour} image could not be made") from image
            return image


@pytest.fixture(scope="session")
def images():
    return Images()


@pytest.fixture(scope="session")
def hook_path(tmp_path_factory):
    """An absolute executable running this checkout's oci-systemd-copyup."""
    return bundles.write_hook_wrapper(tmp_path_factory.mktemp("hook") / "oci-systemd-copyup")

