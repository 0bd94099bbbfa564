"""Where things are: this checkout, its golden cases and policy, and the code the tests run."""

from __future__ import annotations

from pathlib import Path

import transformer

REPO = Path(__file__).resolve().parents[2]
# The directory holding the transformer package these tests import: this checkout on a
# development machine, the venv's site-packages inside a test guest (whose copy of tests/
# comes without transformer/).  Child interpreters get it as PYTHONPATH.
SOURCE = Path(transformer.__file__).resolve().parents[1]
GOLDEN = REPO / "golden"
PATCHES = REPO / "patches"
# The copy-up helper as runc runs it (python3 -I -S hook.py), and its module.
HOOK_SCRIPT = SOURCE / "transformer" / "copyup" / "hook.py"
HOOK_MAIN = SOURCE / "transformer" / "copyup" / "main.py"
# Real configs of other tools, beside the clone (CI lays shared/ there).
REFERENCE = Path("/work/shared/reference-configs")
if not REFERENCE.is_dir():
    REFERENCE = REPO.parent / "shared" / "reference-configs"
