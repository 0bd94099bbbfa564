from __future__ import annotations

import sys
from pathlib import Path

# Tests import the package from the checkout, whether or not it is installed.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden/ expected files from a fresh plan, then skip those tests",
    )


def pytest_terminal_summary(terminalreporter):
    from tests.harness.figures import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("oci-systemd e2e boot figures")
        for line in lines:
            terminalreporter.write_line(line)
