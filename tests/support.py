"""Shared test helpers (importable as ``support`` because tests/ has no __init__.py)."""

from __future__ import annotations

import os

import pytest

# CI sets OCI_SYSTEMD_NO_SKIP=1: a test that cannot run there is a failure, not a skip,
# so a green CI always means the real thing ran.
STRICT = os.environ.get("OCI_SYSTEMD_NO_SKIP") == "1"


def skip_or_fail(reason: str) -> None:
    if STRICT:
        pytest.fail(f"required test could not run (OCI_SYSTEMD_NO_SKIP=1): {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root")
