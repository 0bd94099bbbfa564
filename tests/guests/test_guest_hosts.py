"""Real hosts of every kind: boot the test guest (guest_image.py, qemu.py) as a cgroup v2,
a hybrid and a legacy v1 host, run guest_cells.py inside it against the checkout's own
wheel, and fail with the inside output when anything inside failed.

Each guest run gets a fresh 9p share holding:
- ``wheels/``: the checkout's wheel, built here, installed offline in the guest (its
  dependencies are baked into the guest disk);
- ``src/``: pyproject.toml and tests/, from which pytest runs (no transformer/: the
  tests import the installed wheel, as a user's machine would have it);
- ``inside.sh``: what the guest's runner unit runs;
- ``out/``: inside.log, rc, junit.xml, console.log, written by the guest.

Nothing inside may be skipped (OCI_SYSTEMD_NO_SKIP=1 there, and the junit report is
checked here): a cell that could not run is a failure.  The guest is always powered off
(qemu ends when it does) and its qemu is stopped by PID if it does not (qemu.boot).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import guest_image
import image_disk
import qemu
from tests.harness import parallel
from tests.harness.figures import BOOT_FIGURES
from tests.harness.skips import require_root, skip_or_fail

pytestmark = pytest.mark.e2e

CELLS = "tests/guests/guest_cells.py"
GUEST_TESTS = {
    "v2": [f"{CELLS}::test_host_kind", f"{CELLS}::test_cell"],
    "hybrid": [f"{CELLS}::test_host_kind", f"{CELLS}::test_cell"],
    "legacy": [f"{CELLS}::test_host_kind", f"{CELLS}::test_cell", f"{CELLS}::test_newest_systemd_refused"],
}
# A developer's -k expression for the tests inside each guest (all of them when unset)
SELECT = os.environ.get("OCI_SYSTEMD_GUEST_SELECT", "")
# vCPUs per guest, and so containers booting at once inside it: the three guests boot at
# once on this 2-core machine, and the v2 one has the most cells
CPUS = {"v2": 2, "hybrid": 1, "legacy": 1}
# Software emulation runs a container's boot several times slower than this machine
TIMEOUT_SCALE = {"tcg": 8, "kvm": 2}

INSIDE = """\
# oci-systemd: run by the test guest's runner unit (guest_image._RUNNER); output -> out/inside.log
set -u
# the guest's uptime at each phase's end, for the host's figures (its boot ends only when
# this script does): the guest's own boot, installing the wheel, the tests
phase() {{ echo "$1 $(cut -d' ' -f1 /proc/uptime)" >>/mnt/share/out/phases.txt; }}
phase boot
mkdir -p /images
mount -o ro /dev/vdb /images || {{ echo "inside: cannot mount the images disk /dev/vdb"; exit 90; }}
{venv}/bin/pip install --quiet --no-compile --no-index --no-deps /mnt/share/wheels/*.whl || {{ echo "inside: pip install failed"; exit 91; }}
mkdir -p /root/work && cp -a /mnt/share/src/. /root/work/ && cd /root/work || exit 92
phase install
export PATH={venv}/bin:$PATH OCI_SYSTEMD_NO_SKIP=1 OCI_SYSTEMD_GUEST_KIND={kind} \\
    OCI_SYSTEMD_IMAGE_TREES=/images OCI_SYSTEMD_TIMEOUT_SCALE={scale} \
    OCI_SYSTEMD_GUEST_FIGURES=/mnt/share/out/figures.json OCI_SYSTEMD_GUEST_WORKERS={cpus}
python -m pytest -q -ra -p no:cacheprovider --junitxml=/mnt/share/out/junit.xml {select}{tests}
rc=$?
phase tests
exit $rc
"""


@pytest.fixture(scope="session")
def guest(tmp_path_factory):
    """(guest disk, images disk, the checkout's wheel), made or found in the cache once."""
    require_root()
    for why in (qemu.available(), guest_image.cannot_build_reason(), image_disk.unavailable()):
        if why:
            skip_or_fail(why)
    wheel = guest_image.project_wheel(tmp_path_factory.mktemp("wheel"))
    return guest_image.ensure_guest(), image_disk.ensure_disk(), wheel


def populate_share(share: Path, wheel: Path, kind: str, accel: str) -> None:
    (share / "wheels").mkdir(parents=True)
    shutil.copy2(wheel, share / "wheels" / wheel.name)
    src = share / "src"
    shutil.copytree(guest_image.REPO / "tests", src / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    shutil.copy2(guest_image.REPO / "pyproject.toml", src / "pyproject.toml")
    (share / "inside.sh").write_text(INSIDE.format(
        venv=guest_image.VENV, kind=kind, scale=TIMEOUT_SCALE[accel], cpus=CPUS[kind], tests=" ".join(GUEST_TESTS[kind]),
        select=f"-k {shlex.quote(SELECT)} " if SELECT else ""))
    (share / "out").mkdir()


PHASES = {"boot": "its own boot, until the runner", "install": "installing the wheel",
          "tests": "the tests inside"}


def guest_phases(path: Path, total: float) -> dict[str, float]:
    """What each phase of a guest run took, from the guest's uptime at each phase's end
    (INSIDE writes them), and the power-off: the rest of qemu's run.  A phase the guest
    did not reach is missing."""
    ends = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, _, uptime = line.partition(" ")
            if name in PHASES:
                ends[name] = float(uptime)
    phases, before = {}, 0.0
    for name, what in PHASES.items():
        if name not in ends:
            break
        phases[what], before = ends[name] - before, ends[name]
    else:
        phases["power-off"] = max(0.0, total - before)
    return phases


def junit_counts(path: Path) -> dict[str, int]:
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def run_guest(kind: str, guest, base: Path) -> tuple[qemu.Run, Path]:
    disk, images, wheel = guest
    accel = qemu.accelerator(disk)
    share = base / kind / "share"
    populate_share(share, wheel, kind, accel)
    return qemu.boot(disk, kind, share, images=images, accel=accel, cpus=CPUS[kind]), share


@pytest.fixture(scope="module")
def guests(request, guest, tmp_path_factory):
    """The selected kinds' guests, booted at once: much of a guest's time is its
    containers waiting on their own boots, which the others use."""
    base = tmp_path_factory.mktemp("guests")
    kinds = parallel.selected_params(request, "kind")
    with parallel.CellPool(lambda kind: run_guest(kind, guest, base), kinds, workers=len(kinds) or 1) as pool:
        yield pool


@pytest.mark.parametrize("kind", list(GUEST_TESTS))
def test_guest_host(guests, kind):
    run, share = guests.result(kind)
    BOOT_FIGURES.append({"case": f"guest {kind} host ({run.accel}): boot, tests, power-off", "boot1": run.seconds})
    figures = share / "out/figures.json"
    if figures.is_file():
        BOOT_FIGURES.extend(json.loads(figures.read_text()))
    phases = guest_phases(share / "out/phases.txt", run.seconds)
    BOOT_FIGURES.extend({"case": f"guest {kind} host: {what}", "boot1": seconds} for what, seconds in phases.items())
    phase_text = ", ".join(f"{what} {seconds:.0f} s" for what, seconds in phases.items())
    report = f"--- inside ({kind} guest, {run.accel}, {run.seconds:.0f} s: {phase_text})\n{run.output}\n" + \
        "--- console (last 60 lines)\n" + "\n".join(run.console.splitlines()[-60:])
    assert run.returncode == 0, f"the {kind} guest's tests failed (rc={run.returncode})\n{report}"
    counts = junit_counts(share / "out/junit.xml")
    assert counts["tests"] > 0 and counts["skipped"] == 0 and counts["failures"] == counts["errors"] == 0, \
        f"{counts}\n{report}"


def test_guest_phases_split_the_run(tmp_path):
    """The figures' phases come from the guest's uptimes; one it did not reach is left out,
    and so is the power-off, which only a finished run has."""
    phases = tmp_path / "phases.txt"
    phases.write_text("boot 40.5\ninstall 60.5\ntests 200.0\n")
    assert guest_phases(phases, 210.0) == {PHASES["boot"]: 40.5, PHASES["install"]: 20.0,
                                           PHASES["tests"]: 139.5, "power-off": 10.0}
    phases.write_text("boot 40.5\n")
    assert guest_phases(phases, 999.0) == {PHASES["boot"]: 40.5}
    assert guest_phases(tmp_path / "missing.txt", 999.0) == {}
