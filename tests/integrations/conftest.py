"""Fixtures of the integration tests (real podman, umoci and runc from Debian)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.harness import integrations
from tests.harness.skips import need_tool, require_root


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """A private podman (own --root/--runroot) and the Debian tree imported as an image
    whose STOPSIGNAL is SIGRTMIN+3; everything removed at the end, even after failures."""
    require_root()
    need_tool("podman", "podman")
    need_tool("runc", "runc")
    tarball = integrations.debian_tarball()
    p = integrations.Podman(tmp_path_factory.mktemp("podman"))
    side_root = "/run/oci-systemd"  # the filter's side files (machine-id, masked unit)
    before = set(os.listdir(side_root)) if os.path.isdir(side_root) else set()
    try:
        p.image = p.import_tarball(tarball, "STOPSIGNAL=SIGRTMIN+3")
        yield p
    finally:
        p.cleanup()
        if os.path.isdir(side_root):
            for name in set(os.listdir(side_root)) - before:
                shutil.rmtree(os.path.join(side_root, name), ignore_errors=True)
