"""The test guests use the e2e suite's own pieces (images, bundles, checks, runc), from
the one harness (tests/harness).

Inside a guest (guest_cells.py), the boot figures of its cells are written to
$OCI_SYSTEMD_GUEST_FIGURES at the end, for the host's summary table."""

import json
import os
from pathlib import Path


def pytest_sessionfinish(session):
    path = os.environ.get("OCI_SYSTEMD_GUEST_FIGURES")
    if path:
        from tests.harness.figures import BOOT_FIGURES

        Path(path).write_text(json.dumps(BOOT_FIGURES) + "\n")
