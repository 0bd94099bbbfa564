"""The test guests use the e2e suite's own pieces (images, bundles, checks, runc).

Inside a guest (guest_cells.py), the boot figures of its cells are written to
$OCI_SYSTEMD_GUEST_FIGURES at the end, for the host's summary table."""

import json
import os
import sys
from pathlib import Path

E2E = str(Path(__file__).resolve().parent.parent / "e2e")
if E2E not in sys.path:
    sys.path.insert(0, E2E)


def pytest_sessionfinish(session):
    path = os.environ.get("OCI_SYSTEMD_GUEST_FIGURES")
    if path:
        from e2e_figures import BOOT_FIGURES

        Path(path).write_text(json.dumps(BOOT_FIGURES) + "\n")
