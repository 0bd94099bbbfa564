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
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import skip_or_fail

import bundles
import runc_harness
import tree_manifest
from e2e_figures import BOOT_FIGURES
from host_state import HostSnapshot

pytestmark = pytest.mark.e2e

RELEASES = ("bullseye", "bookworm", "trixie")
TMPFS = ("/run", "/run/lock", "/tmp", "/var/log/journal")
TMPFS_READONLY_ROOT = TMPFS + ("/var/lib/systemd", "/var/tmp")
# Controller files of the container's own cgroup that a container must not raise (v1).
V1_CONTROLLER_FILES = (("memory", "memory.limit_in_bytes", "1073741824"),
                       ("cpu", "cpu.shares", "262144"),
                       ("pids", "pids.max", "4242"))
BOOT_TIMEOUT = 90
STOP_TIMEOUT = 10


def _cases():
    for release in RELEASES:
        for cgroup in ("v1", "v2"):
            for copy_up in ("native", "hook"):
                yield pytest.param(release, cgroup, copy_up, False, id=f"{release}-{cgroup}-{copy_up}")
    for cgroup in ("v1", "v2"):
        for copy_up in ("native", "hook"):
            yield pytest.param("bookworm", cgroup, copy_up, True, id=f"bookworm-{cgroup}-{copy_up}-readonly")


def _require_cgroup_mode(cgroup: str) -> None:
    host = runc_harness.host_cgroup_mode()
    if cgroup == "v1" and host != "v1":
        skip_or_fail("host has no cgroup v1 name=systemd hierarchy")
    if cgroup == "v2" and not os.path.isdir("/sys/fs/cgroup/unified") and host != "v2":
        skip_or_fail("no cgroup2 hierarchy on this host")


# ---- checks on a running container ------------------------------------------------------

def _journal_entries(c: runc_harness.RuncContainer) -> list[dict]:
    p = c.exec("journalctl", "-b", "--no-pager", "-o", "json", timeout=30)
    assert p.returncode == 0, f"journalctl failed: {p.stderr}\n{c.diagnostics()}"
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def check_booted(c: runc_harness.RuncContainer, *, since: float, machine_id: str) -> None:
    """running, no failed unit, journald active with THIS boot in the journal."""
    state = c.wait_running(BOOT_TIMEOUT)
    assert state == "running", f"is-system-running: {state}\n{c.diagnostics()}"
    assert c.failed_units() == [], c.diagnostics()
    active = c.exec("systemctl", "is-active", "systemd-journald.service").stdout.strip()
    assert active == "active", f"systemd-journald is {active!r}\n{c.diagnostics()}"
    entries = _journal_entries(c)
    # this boot: systemd's own "Startup finished" line, from this machine, after our start
    # (the journal lives on the /run tmpfs; a journal kept from before would be older)
    finished = [e for e in entries if e.get("_PID") == "1" and "Startup finished" in str(e.get("MESSAGE"))]
    assert finished, f"no 'Startup finished' from PID 1 in journalctl -b\n{c.diagnostics()}"
    e = finished[-1]
    assert e.get("_MACHINE_ID") == machine_id, f"journal entry of machine {e.get('_MACHINE_ID')}, expected {machine_id}"
    assert int(e["__REALTIME_TIMESTAMP"]) / 1e6 >= since - 1, "journal shows an older boot, not this one"


def check_machine_id(c: runc_harness.RuncContainer, expected: str, image_id: str) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", expected) and set(expected) != {"0"}, expected
    assert expected != image_id, "the container kept the image's machine-id"
    got = c.exec("cat", "/etc/machine-id").stdout.strip()
    assert got == expected, f"/etc/machine-id is {got!r}, expected {expected!r}"
    env = Path(f"/proc/{c.pid()}/environ").read_bytes().split(b"\0")
    assert f"container_uuid={expected}".encode() in env, env
    assert b"container=oci" in env, env


def check_mounts(c: runc_harness.RuncContainer, *, readonly: bool) -> None:
    p = c.exec("cat", "/proc/self/mountinfo")
    assert p.returncode == 0, p.stderr
    mounts = bundles.mountinfo_fstypes(p.stdout)
    for dest in TMPFS_READONLY_ROOT if readonly else TMPFS:
        fstype = mounts.get(dest, ("(not a mount point)",))[0]
        assert fstype == "tmpfs", f"{dest} is {fstype} inside the container\n{p.stdout}"
    root_opts = mounts["/"][1]
    assert ("ro" in root_opts) == readonly, f"/ mount options {root_opts}, readonly={readonly}"


def check_run_copy_up(c: runc_harness.RuncContainer, image: bundles.Image, copy_up: str) -> None:
    root = Path(f"/proc/{c.pid()}/root")
    problems = bundles.marker_problems(root, "/run", image, full_fidelity=(copy_up == "hook"))
    assert problems == [], "image content in /run did not reach the container intact:\n" + "\n".join(problems)


def check_cgroups(c: runc_harness.RuncContainer, cgroup: str, cgroups_path: str) -> None:
    if cgroup == "v1":
        for controller, name, value in V1_CONTROLLER_FILES:
            host_file = Path(f"/sys/fs/cgroup/{controller}{cgroups_path}/{name}")
            before = host_file.read_text()
            p = c.exec("sh", "-c", f"echo {value} > /sys/fs/cgroup/{controller}/{name}")
            assert p.returncode != 0, f"the container could write its own {controller}/{name}"
            assert host_file.read_text() == before, f"{host_file} changed from inside the container"
        # systemd manages its own name=systemd subtree: PID 1 moved itself into an
        # init.scope it made below the container's cgroup, beside a system.slice.  (Without
        # a cgroup namespace on v1, systemd reads its host path from /proc/1/cgroup and
        # creates that path again under the bind-mounted directory, so the host sees
        # <cgroupsPath>/<cgroupsPath>/init.scope; runc delete removes it all.)
        pid1 = c.exec("cat", "/proc/1/cgroup").stdout
        found = re.search(r"^\d+:name=systemd:(\S+)$", pid1, re.M)
        assert found, f"/proc/1/cgroup inside has no name=systemd line:\n{pid1}"
        scope = found.group(1)
        assert scope.startswith(cgroups_path + "/") and scope.endswith("/init.scope"), pid1
        own = Path(f"/sys/fs/cgroup/systemd{scope}").parent
        for sub in ("init.scope", "system.slice"):
            assert (own / sub).is_dir(), f"systemd did not create {own / sub}"
    else:
        inside = os.readlink(f"/proc/{c.pid()}/ns/cgroup")
        assert inside != os.readlink("/proc/self/ns/cgroup"), "no cgroup namespace of its own"
        own = c.exec("cat", "/proc/self/cgroup").stdout
        assert "0::/" in own.splitlines(), f"/proc/self/cgroup inside:\n{own}"
        pid1 = c.exec("cat", "/proc/1/cgroup").stdout
        assert "0::/init.scope" in pid1.splitlines(), f"/proc/1/cgroup inside:\n{pid1}"
        ls = c.exec("test", "-d", "/sys/fs/cgroup/system.slice")
        assert ls.returncode == 0, "systemd did not create system.slice in its cgroup2 tree"


def stop_cleanly(c: runc_harness.RuncContainer) -> float:
    """runc kill ID 37 (SIGRTMIN+3: systemd's halt) stops it within 10 s, and systemd's
    shutdown ends with exit status 0 ("Exiting container."; a SIGKILL'd or crashed PID 1
    gives a negative or other status)."""
    seconds = c.kill(37, timeout=STOP_TIMEOUT)
    status = c.exit_status(timeout=STOP_TIMEOUT)
    assert status == 0, f"PID 1 exit status {status} after SIGRTMIN+3, expected a clean 0"
    return seconds


def _snapshot_image_machine_id(rootfs: Path) -> tuple:
    p = rootfs / "etc/machine-id"
    st = os.lstat(p)
    return p.read_bytes(), st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ino


# ---- the matrix ---------------------------------------------------------------------------

@pytest.mark.parametrize("release,cgroup,copy_up,readonly", list(_cases()))
def test_boot_matrix(images, tmp_path, request, release, cgroup, copy_up, readonly):
    _require_cgroup_mode(cgroup)
    image = images.get(release)
    bundle = bundles.make_bundle(image, tmp_path / "bundle", ["/sbin/init"], readonly=readonly)
    rootfs = bundle / "rootfs"
    try:
        # hook mode: the tool's default registration, exactly what a user gets
        cfg = bundles.apply(bundle, cgroup=cgroup, copy_up=copy_up)
        if copy_up == "hook":
            assert cfg["hooks"]["prestart"], "hook mode registered no prestart hook"
        after_apply = tree_manifest.manifest(rootfs)
        assert after_apply == image.manifest, (
            "apply changed the image rootfs:\n" + tree_manifest.describe_difference(image.manifest, after_apply))

        machine_id = (bundle / "oci-systemd/machine-id").read_text().strip()
        image_id = _snapshot_image_machine_id(rootfs)
        cid = runc_harness.new_container_id()
        # v1: the transformer sets cgroupsPath (its name=systemd bind needs it); v2: it need
        # not, and runc's cgroupfs driver then uses /<container id>
        cgroups_path = cfg["linux"].get("cgroupsPath") or f"/{cid}"
        assert cgroup == "v2" or "cgroupsPath" in cfg["linux"], "v1 config without cgroupsPath"
        figures = {"case": request.node.callspec.id}
        BOOT_FIGURES.append(figures)

        sandbox = runc_harness.HostSandbox(tmp_path / "sandbox", bundle)
        for boot in (1, 2):  # the second is the restart: delete, then run the same bundle again
            since = time.time()
            with runc_harness.RuncContainer(bundle, cgroup_v2=(cgroup == "v2"), container_id=cid,
                                            monitor=True, sandbox=sandbox) as c:
                c.start()
                check_booted(c, since=since, machine_id=machine_id)
                figures[f"boot{boot}"] = c.boot_seconds
                check_machine_id(c, machine_id, image_id[0].decode().strip())
                if boot == 1:
                    check_mounts(c, readonly=readonly)
                    check_run_copy_up(c, image, copy_up)
                    check_cgroups(c, cgroup, cgroups_path)
                figures[f"stop{boot}"] = stop_cleanly(c)
            assert not Path(f"/run/runc/{cid}").exists(), f"runc state of {cid} left after delete"

        left = sandbox.leftovers()
        assert left == [], "runc, its hook or the container left this in /tmp or /run:\n" + "\n".join(left)
        assert runc_harness.leftover_cgroups(cgroups_path) == []
        assert _snapshot_image_machine_id(rootfs) == image_id, "the runs changed the image's /etc/machine-id"
        if readonly:
            after_runs = tree_manifest.manifest(rootfs)
            assert after_runs == image.manifest, (
                "root.readonly, yet the tree changed:\n" + tree_manifest.describe_difference(image.manifest, after_runs))
    finally:
        bundles.remove_bundle(bundle)


# ---- beside the matrix --------------------------------------------------------------------

@pytest.mark.parametrize("copy_up", ["native", "hook"])
def test_host_is_left_as_it_was(images, tmp_path, copy_up):
    """The matrix watches /tmp and /run through a HostSandbox; this runs runc in the host's
    own mount namespace, as a user does on this v1 host, and compares the host itself:
    its mount table, /run, /tmp (see host_state for what other programs may do there)."""
    _require_cgroup_mode("v1")
    image = images.get("bookworm")
    bundle = bundles.make_bundle(image, tmp_path / "bundle", ["/sbin/init"])
    try:
        cfg = bundles.apply(bundle, cgroup="v1", copy_up=copy_up)
        machine_id = (bundle / "oci-systemd/machine-id").read_text().strip()
        before = HostSnapshot.take()
        with runc_harness.RuncContainer(bundle, monitor=True) as c:
            since = time.time()
            c.start()
            check_booted(c, since=since, machine_id=machine_id)
            check_run_copy_up(c, image, copy_up)
            stop_cleanly(c)
        diff = before.differences(HostSnapshot.take())
        assert diff == [], "the host changed:\n" + "\n".join(diff)
        assert runc_harness.leftover_cgroups(cfg["linux"]["cgroupsPath"]) == []
    finally:
        bundles.remove_bundle(bundle)


def test_two_containers_of_one_image_get_different_machine_ids(images, tmp_path):
    """Two bundles of the same bookworm image, booted side by side.  The second gets a
    Docker-style container ID: its machine-id must be that ID's first 32 hex digits."""
    _require_cgroup_mode("v1")
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
                list(pool.map(lambda cm: check_booted(cm[0], since=since, machine_id=cm[1]), zip((a, b), ids)))
            for c, expected in zip((a, b), ids):
                check_machine_id(c, expected, image_id)
            seen = [c.exec("cat", "/etc/machine-id").stdout.strip() for c in (a, b)]
            assert seen[0] != seen[1], f"both containers have machine-id {seen[0]}"
            for c in (a, b):
                stop_cleanly(c)
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
    _require_cgroup_mode("v1")
    image = images.get(release)
    bundle = bundles.make_bundle(image, tmp_path / "bundle", ["/bin/sh", "-c", "sleep 1000"])
    try:
        bundles.apply(bundle, cgroup="v1", copy_up=copy_up, hook_path=hook_path, extra=("--force",))
        sandbox = runc_harness.HostSandbox(tmp_path / "sandbox", bundle, keep=(hook_path.parent,))
        with runc_harness.RuncContainer(bundle, sandbox=sandbox) as c:
            c.start()
            assert c.status() == "running"
            mounts = bundles.mountinfo_fstypes(Path(f"/proc/{c.pid()}/mountinfo").read_text())
            for dest in TMPFS:
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
    _require_cgroup_mode("v1")
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
