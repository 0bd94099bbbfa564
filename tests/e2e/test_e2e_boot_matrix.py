"""Issue 4: real systemd boots to ``running`` under real runc, from bundles the project's
own CLI transformed.

Matrix: bullseye (systemd 247), bookworm (252), trixie (257) x cgroup v1 (this host's
hybrid mode) and v2 (a private mount namespace with cgroup2 on /sys/fs/cgroup) x copy-up
native (runc's tmpcopyup) and hook (our oci-systemd-copyup), plus ``root.readonly: true``
on bookworm.  Each bundle: ``runc spec`` -> args /sbin/init, no terminal -> ``python3 -m
transformer apply`` -> ``runc run -d``, boot, check, ``runc kill 37``, delete, boot again.

Beside the matrix: two bundles of one image get different machine-ids (booted side by
side), the image's /tmp reaches the container (seen by a non-systemd process, since
systemd-tmpfiles empties /tmp at boot), and a non-systemd bundle passes through unchanged.

What is left behind: the matrix runs every runc command of a case with a HostSandbox as
its /tmp and /run (runc_harness), so exactly what runc, the hook and the container leave
there is seen, whatever else runs on the machine; test_host_is_left_as_it_was runs runc in
the host's own namespace and compares the host's mount table, /run and /tmp.

Every container is deleted by the harness's context manager even when an assertion fails;
assertion messages carry ``systemctl --failed`` and ``journalctl -b`` of the container.

The matrix cases are independent: a CellPool (parallel.py) boots WORKERS of them at once,
and each test reports its own case.  Their rootfs is an overlay on the session's image
(bundles.Image.layer_to) instead of a copy.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import bundles, checks, clean_boot, parallel, runc_harness
from tests.harness.figures import BOOT_FIGURES
from tests.harness.host_state import HostSnapshot

pytestmark = pytest.mark.e2e

RELEASES = ("bullseye", "bookworm", "trixie")
VIEW = {"v1": "v1", "v2": "unified"}  # --cgroup -> the cgroup view it gives on this host


@dataclass(frozen=True)
class Case:
    release: str
    cgroup: str  # --cgroup v1 (this hybrid host) or v2 (the v2 namespace)
    copy_up: str
    readonly: bool = False

    def __str__(self) -> str:
        return f"{self.release}-{self.cgroup}-{self.copy_up}" + ("-readonly" if self.readonly else "")


CASES = [
    *(Case(release, cgroup, copy_up)
      for release in RELEASES for cgroup in ("v1", "v2") for copy_up in ("native", "hook")),
    *(Case("bookworm", cgroup, copy_up, readonly=True) for cgroup in ("v1", "v2") for copy_up in ("native", "hook")),
]
WORKERS = 3  # cases booting at once; a minimal boot mostly waits, on 2 cores


def _snapshot_image_machine_id(rootfs: Path) -> tuple:
    p = rootfs / "etc/machine-id"
    st = os.lstat(p)
    return p.read_bytes(), st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ino


# ---- the matrix ---------------------------------------------------------------------------

def run_case(case: Case, images, workdir: Path) -> dict:
    release, cgroup, copy_up, readonly = case.release, case.cgroup, case.copy_up, case.readonly
    checks.require_cgroup_mode(cgroup)
    image = images.get(release)
    bundle = bundles.make_bundle(image, workdir / "bundle", ["/sbin/init"], readonly=readonly)
    rootfs = bundle / "rootfs"
    try:
        # hook mode: the tool's default registration, exactly what a user gets
        cfg = bundles.apply(bundle, cgroup=cgroup, copy_up=copy_up)
        if copy_up == "hook":
            assert cfg["hooks"]["prestart"], "hook mode registered no prestart hook"
        assert bundles.layer_changes(bundle, image) == [], "apply changed the image rootfs"

        machine_id = (bundle / "oci-systemd/machine-id").read_text().strip()
        image_id = _snapshot_image_machine_id(rootfs)
        cid = runc_harness.new_container_id()
        # v1: the transformer sets cgroupsPath (its name=systemd bind needs it); v2: it need
        # not, and runc's cgroupfs driver then uses /<container id>
        cgroups_path = cfg["linux"].get("cgroupsPath") or f"/{cid}"
        assert cgroup == "v2" or "cgroupsPath" in cfg["linux"], "v1 config without cgroupsPath"
        figures = {"case": str(case)}
        BOOT_FIGURES.append(figures)

        sandbox = runc_harness.HostSandbox(workdir / "sandbox", bundle)
        for boot in (1, 2):  # the second is the restart: delete, then run the same bundle again
            since = time.time()
            with runc_harness.RuncContainer(bundle, cgroup_v2=(cgroup == "v2"), container_id=cid,
                                            monitor=True, sandbox=sandbox) as c:
                c.start()
                checks.check_booted(c, since=since, machine_id=machine_id)
                figures[f"boot{boot}"] = c.boot_seconds
                checks.check_machine_id(c, machine_id, image_id[0].decode().strip())
                if boot == 1:
                    checks.check_container_interface(c)
                    clean_boot.check_clean_journal(c, "minimal")
                    checks.check_mounts(c, readonly=readonly)
                    checks.check_run_copy_up(c, image, copy_up)
                    checks.check_cgroups(c, VIEW[cgroup], cgroups_path)
                figures[f"stop{boot}"] = checks.stop_cleanly(c)
            assert not Path(f"/run/runc/{cid}").exists(), f"runc state of {cid} left after delete"

        checks.check_nothing_left(sandbox, cid, cgroups_path)
        assert _snapshot_image_machine_id(rootfs) == image_id, "the runs changed the image's /etc/machine-id"
        if readonly:
            assert bundles.layer_changes(bundle, image) == [], "root.readonly, yet the tree changed"
        return figures
    finally:
        bundles.remove_bundle(bundle)


@pytest.fixture(scope="module")
def matrix(request, images, tmp_path_factory):
    """The selected cases, booted WORKERS at a time (parallel.py); each test waits for its own."""
    base = tmp_path_factory.mktemp("matrix")
    selected = parallel.selected_params(request, "case")
    with parallel.CellPool(lambda case: run_case(case, images, base / str(case)), selected, workers=WORKERS) as pool:
        yield pool


@pytest.mark.parametrize("case", CASES, ids=str)
def test_boot_matrix(matrix, case):
    matrix.result(case)


# ---- beside the matrix --------------------------------------------------------------------

@pytest.mark.parametrize("copy_up", ["native", "hook"])
def test_host_is_left_as_it_was(images, tmp_path, copy_up):
    """The matrix watches /tmp and /run through a HostSandbox; this runs runc in the host's
    own mount namespace, as a user does on this v1 host, and compares the host itself:
    its mount table, /run, /tmp (see host_state for what other programs may do there)."""
    checks.require_cgroup_mode("v1")
    image = images.get("bookworm")
    bundle = bundles.make_bundle(image, tmp_path / "bundle", ["/sbin/init"])
    try:
        cfg = bundles.apply(bundle, cgroup="v1", copy_up=copy_up)
        machine_id = (bundle / "oci-systemd/machine-id").read_text().strip()
        before = HostSnapshot.take()
        with runc_harness.RuncContainer(bundle, monitor=True) as c:
            since = time.time()
            c.start()
            checks.check_booted(c, since=since, machine_id=machine_id)
            checks.check_run_copy_up(c, image, copy_up)
            checks.stop_cleanly(c)
        diff = before.differences(HostSnapshot.take())
        assert diff == [], "the host changed:\n" + "\n".join(diff)
        assert runc_harness.leftover_cgroups(cfg["linux"]["cgroupsPath"]) == []
    finally:
        bundles.remove_bundle(bundle)


def test_two_containers_of_one_image_get_different_machine_ids(images, tmp_path):
    """Two bundles of the same bookworm image, booted side by side.  The second gets a
    Docker-style container ID: its machine-id must be that ID's first 32 hex digits."""
    checks.require_cgroup_mode("v1")
    image = images.get("bookworm")
    docker_id = os.urandom(32).hex()
    specs = [(tmp_path / "a", ()), (tmp_path / "b", ("--container-id", docker_id))]
    made: list[Path] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            made = list(pool.map(lambda s: bundles.make_bundle(image, s[0], ["/sbin/init"]), specs))
        for bundle, extra in specs:
            bundles.apply(bundle, cgroup="v1", copy_up="native", extra=extra)
        ids = [(b / "oci-systemd/machine-id").read_text().strip() for b, _ in specs]
        assert ids[1] == docker_id[:32]
        assert ids[0] != ids[1]
        image_id = _snapshot_image_machine_id(image.rootfs)[0].decode().strip()

        with runc_harness.RuncContainer(specs[0][0], monitor=True) as a, \
                runc_harness.RuncContainer(specs[1][0], monitor=True) as b:
            since = time.time()
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda c: c.start(), (a, b)))
                list(pool.map(lambda cm: checks.check_booted(cm[0], since=since, machine_id=cm[1]), zip((a, b), ids)))
            for c, expected in zip((a, b), ids):
                checks.check_machine_id(c, expected, image_id)
            seen = [c.exec("cat", "/etc/machine-id").stdout.strip() for c in (a, b)]
            assert seen[0] != seen[1], f"both containers have machine-id {seen[0]}"
            for c in (a, b):
                checks.stop_cleanly(c)
    finally:
        for bundle in made:
            bundles.remove_bundle(bundle)


@pytest.mark.parametrize("copy_up", ["native", "hook"])
@pytest.mark.parametrize("release", RELEASES)
def test_image_tmp_and_run_reach_the_container(images, hook_path, tmp_path, release, copy_up):
    """systemd-tmpfiles empties /tmp at boot, so /tmp copy-up is seen by a plain shell:
    the bundle runs ``/bin/sh -c 'sleep 1000'``, transformed with --force, and the markers
    are compared from the host through /proc/<pid>/root while it sleeps.  Hook mode here
    registers the helper the other documented way, ``--hook-path`` to a plain program."""
    checks.require_cgroup_mode("v1")
    image = images.get(release)
    bundle = bundles.make_bundle(image, tmp_path / "bundle", ["/bin/sh", "-c", "sleep 1000"])
    try:
        bundles.apply(bundle, cgroup="v1", copy_up=copy_up, hook_path=hook_path, extra=("--force",))
        sandbox = runc_harness.HostSandbox(tmp_path / "sandbox", bundle, keep=(hook_path.parent,))
        with runc_harness.RuncContainer(bundle, sandbox=sandbox) as c:
            c.start()
            assert c.status() == "running"
            mounts = bundles.mountinfo_fstypes(Path(f"/proc/{c.pid()}/mountinfo").read_text())
            for dest in checks.TMPFS:
                assert mounts.get(dest, ("none",))[0] == "tmpfs", f"{dest}: {mounts.get(dest)}"
            root = Path(f"/proc/{c.pid()}/root")
            problems = []
            for top in bundles.MARKED_TMPFS:
                problems += bundles.marker_problems(root, top, image, full_fidelity=(copy_up == "hook"))
            assert problems == [], "image content did not reach the tmpfs intact:\n" + "\n".join(problems)
            c.kill(9)  # sh as PID 1 ignores SIGTERM; this container has nothing to shut down
        assert sandbox.leftovers() == []
    finally:
        bundles.remove_bundle(bundle)


@pytest.mark.parametrize("release", RELEASES)
def test_non_systemd_bundle_passes_through_and_runs(images, tmp_path, release):
    image = images.get(release)
    bundle = bundles.make_bundle(image, tmp_path / "bundle", ["/bin/sh", "-c", "echo ok"], readonly=True)
    try:
        before = (bundle / "config.json").read_bytes()
        plan = bundles.cli("plan", str(bundle), "--cgroup", "v1")
        assert json.loads(plan.stdout) == [], plan.stdout
        bundles.cli("apply", str(bundle), "--cgroup", "v1")
        assert (bundle / "config.json").read_bytes() == before, "apply changed a non-systemd config"
        assert not (bundle / "oci-systemd").exists(), "apply wrote side files for a non-systemd bundle"
        with runc_harness.RuncContainer(bundle) as c:
            p = c.run_foreground(timeout=60)
        assert (p.returncode, p.stdout) == (0, "ok\n"), f"rc={p.returncode}\n{p.stdout}{p.stderr}"
    finally:
        bundles.remove_bundle(bundle)


def test_sandbox_sees_what_a_hook_leaves_behind(images, hook_path, tmp_path):
    """The leftover check can fail: a prestart hook that writes to /tmp and /run (as a
    copy-up writing to /proc/<pid>/root/run before pivot_root would) is caught, and the
    host's own /tmp and /run stay clean."""
    checks.require_cgroup_mode("v1")
    image = images.get("bookworm")
    leak = f"oci-systemd-e2e-leak-{os.getpid()}"
    (tmp_path / "hook").mkdir()
    leaky = tmp_path / "hook" / "leaky-hook"
    leaky.write_text(f"#!/bin/sh\ntouch /tmp/{leak} /run/{leak}\nexec {hook_path} \"$@\"\n")
    leaky.chmod(0o755)
    bundle = bundles.make_bundle(image, tmp_path / "bundle", ["/bin/sh", "-c", "sleep 1000"])
    try:
        bundles.apply(bundle, cgroup="v1", copy_up="hook", hook_path=leaky, extra=("--force",))
        sandbox = runc_harness.HostSandbox(tmp_path / "sandbox", bundle, keep=(leaky.parent, hook_path.parent))
        with runc_harness.RuncContainer(bundle, sandbox=sandbox) as c:
            c.start()
            c.kill(9)
        assert sandbox.leftovers() == [f"/run/{leak}", f"/tmp/{leak}"]
        assert not Path(f"/tmp/{leak}").exists() and not Path(f"/run/{leak}").exists()
    finally:
        bundles.remove_bundle(bundle)
