"""When a test cannot run here: skipped on a developer's machine, failed in CI.

CI sets OCI_SYSTEMD_NO_SKIP=1: a test that cannot run there is a failure, not a skip,
so a green CI always means the real thing ran.
"""

from __future__ import annotations

import os
import shutil

import pytest

STRICT = os.environ.get("OCI_SYSTEMD_NO_SKIP") == "1"


def skip_or_fail(reason: str) -> None:
    if STRICT:
        pytest.fail(f"required test could not run (OCI_SYSTEMD_NO_SKIP=1): {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root")


def need_tool(name: str, package: str) -> str:
    """The tool's path; skip_or_fail when it is not installed."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} is not installed (apt-get install -y {package})")
    return path
