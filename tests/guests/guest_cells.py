"""Cells that only a real host of each kind can show.  They run INSIDE a test guest:
test_guest_hosts.py boots one per kind, and runs this module there with pytest, the
checkout's wheel installed and the images disk (image_disk.py) at /images.  Its name does
not start with ``test_``, so the host's own suite does not collect it.

The kind comes from the environment (OCI_SYSTEMD_GUEST_KIND: v2, hybrid or legacy), and
test_guest_hosts.GUEST_TESTS says which tests each kind runs:
- every kind: ``test_host_kind``, the guest is the host it claims to be, as the CLI's
  own probe and the mounts say;
- ``test_cell``: images booted with the defaults (``oci-systemd apply BUNDLE``), started with
  NOTIFY_SOCKET (READY=1 must reach the guest's host side), and checked as the
  host-side matrix checks them (tests/harness/checks.py): running, no failed unit, every
  enabled service active, the machine-id, the mounts, copy-up, the cgroup view, a clean
  stop and nothing left.  On v2, linux.resources sets memory.max, pids.max and cpu.max,
  and the container must not be able to raise them, with and without a user namespace;
- legacy: ``test_newest_systemd_refused``, systemd >= 258 is refused at plan time;
- v2, also a ``test_cell``: an unprivileged user's runc boots a transformed bundle
  (run_rootless).

Every bundle sets ``linux.cgroupsPath``, as container managers do (without one, runc on a
v2 host puts the container below its caller's own cgroup): on v2 a scope of the guest's
systemd through runc's systemd driver (see placement()), on v1 /<container id>.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import image_disk
from tests.harness import bundles, checks, notify, parallel, runc_harness, userns
from tests.harness.figures import BOOT_FIGURES

pytestmark = pytest.mark.e2e

KIND = os.environ.get("OCI_SYSTEMD_GUEST_KIND", "")
TREES = Path(os.environ.get("OCI_SYSTEMD_IMAGE_TREES", "/images"))
SYSTEMD = {"bookworm": 252}  # sid's moves; only its side of 257 matters
LAST_V1_SYSTEMD = 257
HOST_FACT = {"v2": "a cgroup v2 host", "hybrid": "a hybrid host", "legacy": "a legacy cgroup v1 host"}
# linux.resources of the limits cells, and what runc writes for them on a v2 host
RESOURCES = {"memory": {"limit": 536870912}, "pids": {"limit": 512},
             "cpu": {"quota": 50000, "period": 100000}}
V2_LIMITS = (("memory.max", "536870912", "max"), ("pids.max", "512", "max"),
             ("cpu.max", "50000 100000", "max 100000"))
WORKERS = int(os.environ.get("OCI_SYSTEMD_GUEST_WORKERS", "1"))  # containers booting at once: one per vCPU


@dataclass(frozen=True)
class Cell:
    kind: str
    release: str
    flavour: str = "minimal"
    user_namespace: bool = False
    rootless: bool = False  # an unprivileged user's runc (run_rootless)

    def __str__(self) -> str:
        return f"{self.flavour}-{self.release}-{self.kind}" + ("-userns" if self.user_namespace else "") + \
            ("-rootless" if self.rootless else "")

    @property
    def view(self) -> str:
        if self.kind == "v2":
            return "unified"
        if self.kind == "legacy":
            return "v1"
        return "v1" if SYSTEMD.get(self.release, LAST_V1_SYSTEMD + 1) <= LAST_V1_SYSTEMD else "unified"

    @property
    def limits(self) -> bool:
        """The v2 limits check rides on the v2 minimal cells (sid without a user
        namespace, bookworm with one)."""
        return self.kind == "v2" and self.flavour == "minimal"


# Software emulation makes every boot several times slower than on this machine, so the
# cells are the ones only a real host can show; the host-side matrix (tests/e2e) covers
# every release and image on this machine's own hybrid host.  sid (systemd >= 258) gets
# the unified view on the hybrid host too, which is what this machine's matrix shows.
# The v2 limits ride on sid and on bookworm with a user namespace (Cell.limits), so that
# the newest systemd is checked against them as well.  sid first showed here what a fast
# host hides: systemd gives all generators together 90 s, and a seccomp generator that
# started a process per unit file made PID 1 exit 255 under emulation
# (patches/seccomp-generator.sh now starts a fixed number).
CELLS = {
    "v2": [Cell("v2", "bookworm", "services"), Cell("v2", "sid"), Cell("v2", "bookworm", user_namespace=True),
           Cell("v2", "bookworm", rootless=True)],
    "hybrid": [Cell("hybrid", "sid"), Cell("hybrid", "bookworm")],
    "legacy": [Cell("legacy", "bookworm")],
}


def tree(release: str, flavour: str = "minimal", id_map: str = "") -> bundles.Image:
    spec = image_disk.TreeSpec(release, flavour, id_map)
    path = TREES / spec.name
    assert path.is_dir(), f"{path} is not on the images disk"
    offset = userns.HOST_ID if id_map == "userns" else 0
    return bundles.Image(release, path, {}, flavour, offset, spec.ids if id_map == "rootless" else ())


def set_config(bundle: Path, **linux) -> dict:
    path = bundle / "config.json"
    cfg = json.loads(path.read_text())
    cfg.setdefault("linux", {}).update(linux)
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return cfg


def check_facts(facts: dict[str, str], *, kind: str, view: str, user_namespace: bool, version: int) -> None:
    assert facts.get("systemd version", "").startswith(f"{version} "), facts
    assert facts.get("cgroup host", "").startswith(HOST_FACT[kind]), facts
    assert facts.get("cgroup view", "").startswith(f"{view} ("), facts
    assert facts.get("user namespace", "").startswith("yes" if user_namespace else "no"), facts


def check_v2_limits(c: runc_harness.RuncContainer, cgroups_path: str) -> None:
    """runc wrote linux.resources into the container's own cgroup, and the container can
    neither raise those limits (cgroup namespace root: nsdelegate makes its control files
    the host's) nor leave them: a cgroup it makes is a child of the limited one."""
    own = Path("/sys/fs/cgroup") / cgroups_path.lstrip("/")
    for name, set_by_runc, raised in V2_LIMITS:
        before = (own / name).read_text().strip()
        assert before == set_by_runc, f"{own / name} is {before!r}, linux.resources asked for {set_by_runc!r}"
        p = c.exec("sh", "-c", f"echo '{raised}' > /sys/fs/cgroup/{name}")
        assert p.returncode != 0, f"the container raised its own {name} to {raised!r}"
        assert (own / name).read_text().strip() == before, f"{own / name} changed from inside the container"
    p = c.exec("mkdir", "/sys/fs/cgroup/escape")
    assert p.returncode == 0, f"mkdir in its own cgroup2 tree: {p.stderr}"
    try:
        assert (own / "escape").is_dir(), f"a cgroup made inside is not below {own}"
    finally:
        c.exec("rmdir", "/sys/fs/cgroup/escape")


# runc with its systemd cgroup driver: the container's cgroup is a transient scope of the
# guest's systemd, with Delegate=yes, as CONTAINER_INTERFACE.md asks of a manager
_SYSTEMD_DRIVER = """#!/bin/sh
exec runc --systemd-cgroup "$@"
"""


def placement(cell: Cell, cid: str, bundle: Path) -> tuple[str, str, str, tuple[Path, ...]]:
    """Where the container's cgroup goes: (the runc to run, the config's cgroupsPath, the
    cgroup's path on the host, what the sandbox must keep of the host's /run).

    On the v2 guest, in a scope of the guest's systemd (runc's systemd driver, which
    reaches systemd over D-Bus). Measured there: a cgroup runc's cgroupfs driver makes
    at the top of the tree loses its cpu controller, and so cpu.max, whenever the
    host's systemd rebuilds the root's cgroup.subtree_control and none of its own units
    wants cpu (after a delegated unit of the rootless cell stopped). A v1 host has a
    hierarchy per controller and the cells there keep /<container id>."""
    if cell.kind != "v2":
        return runc_harness.RUNC, f"/{cid}", f"/{cid}", ()
    wrapper = bundle / ".runc-systemd-driver"  # in the bundle: the sandbox binds it back
    wrapper.write_text(_SYSTEMD_DRIVER)
    wrapper.chmod(0o755)
    return (str(wrapper), f"system.slice:ocisd:{cid}", f"/system.slice/ocisd-{cid}.scope",
            (Path("/run/dbus"), Path("/run/systemd")))


def run_cell(cell: Cell, workdir: Path) -> dict:
    if cell.rootless:
        return run_rootless(workdir)
    image = tree(cell.release, cell.flavour, "userns" if cell.user_namespace else "")
    bundle = bundles.make_bundle(image, workdir / "bundle", ["/sbin/init"], layered=True)
    try:
        cid = runc_harness.new_container_id()
        runc, config_path, cgroups_path, keep = placement(cell, cid, bundle)
        set_config(bundle, cgroupsPath=config_path, **({"resources": RESOURCES} if cell.limits else {}))
        if cell.user_namespace:
            userns.map_users(bundle)
        cfg, facts = bundles.apply_reviewed(bundle)
        version = bundles.image_systemd_version(image.rootfs)
        check_facts(facts, kind=cell.kind, view=cell.view, user_namespace=cell.user_namespace, version=version)
        machine_id = (bundle / "oci-systemd/machine-id").read_text().strip()
        image_id = (image.rootfs / "etc/machine-id").read_text().strip()
        assert cfg["linux"]["cgroupsPath"] == config_path, "apply changed the manager's cgroupsPath"
        figures = {"case": f"guest {cell}"}
        sandbox = runc_harness.HostSandbox(workdir / "sandbox", bundle, keep=keep)
        # started as systemd's container interface asks: runc run -d relays READY=1 through
        # NOTIFY_SOCKET (and returns only then), on every kind of host
        with notify.NotifyListener(bundle / "notify/notify.sock") as listener, \
                notify.NotifyingContainer(bundle, notify_socket=listener.path, container_id=cid, monitor=True,
                                          sandbox=sandbox, runc=runc) as c:
            since = time.time()
            c.start(timeout=checks.BOOT_TIMEOUT)
            ready = listener.wait_for("READY", "1", timeout=checks.STOP_TIMEOUT)
            assert ready is not None, f"no READY=1 relayed: {[str(d) for d in listener.datagrams()]}"
            checks.check_booted(c, since=since, machine_id=machine_id)
            figures["boot1"] = c.boot_seconds
            figures.update(checks.check_workload(c, image, bundle, machine_id=machine_id, image_id=image_id,
                                                 copy_up="hook", view=cell.view, cgroups_path=cgroups_path,
                                                 user_namespace=cell.user_namespace))
            if cell.limits:
                check_v2_limits(c, cgroups_path)
            figures["stop1"] = checks.stop_cleanly(c)
        checks.check_nothing_left(sandbox, cid, cgroups_path)
        BOOT_FIGURES.append(figures)
        return figures
    finally:
        bundles.remove_bundle(bundle)


@pytest.fixture(scope="module")
def cells(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("guest-cells")
    selected = parallel.selected_params(request, "cell")
    with parallel.CellPool(lambda cell: run_cell(cell, base / str(cell)), selected, workers=WORKERS) as pool:
        yield pool


@pytest.mark.parametrize("cell", CELLS.get(KIND, []), ids=str)
def test_cell(cells, cell):
    cells.result(cell)


def test_host_kind():
    """The guest is the kind of host it was booted as: the CLI's own probe says so, and
    so do the mounts (v2: one cgroup2 tree with the memory controller; hybrid: v1
    controllers and cgroup2 at /sys/fs/cgroup/unified; legacy: v1 only)."""
    from transformer import probe

    assert KIND in HOST_FACT, f"OCI_SYSTEMD_GUEST_KIND={KIND!r}"
    assert probe.cgroup_host() == KIND
    root = Path("/sys/fs/cgroup")
    if KIND == "v2":
        assert "memory" in (root / "cgroup.controllers").read_text().split()
        assert not (root / "memory").exists()
    else:
        assert (root / "memory/memory.limit_in_bytes").is_file()
        assert (root / "systemd").is_dir()
        assert (root / "unified").is_dir() == (KIND == "hybrid")


def test_newest_systemd_refused(tmp_path):
    """On a legacy host, ``apply`` with the defaults refuses an image whose systemd has no
    cgroup v1 support (>= 258): exit 2, one line naming the version, nothing written."""
    image = tree("sid")
    version = bundles.image_systemd_version(image.rootfs)
    assert version > LAST_V1_SYSTEMD, f"sid's systemd is {version}"
    bundle = bundles.make_bundle(image, tmp_path / "bundle", ["/sbin/init"], layered=True)
    try:
        before = (bundle / "config.json").read_bytes()
        p = bundles.cli("apply", str(bundle), check=False)
        assert p.returncode == 2, f"rc={p.returncode}\n{p.stdout}{p.stderr}"
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and f"systemd {version}" in lines[0] and "legacy" in lines[0], p.stderr
        assert (bundle / "config.json").read_bytes() == before
        assert not (bundle / "oci-systemd").exists()
    finally:
        bundles.remove_bundle(bundle)


# ---- rootless ----------------------------------------------------------------------------

# Run as the user by a transient service with Delegate=yes, which holds a cgroup subtree
# delegated to the user the way user@.service holds one.  The unit's own cgroup keeps no
# process, so that controllers can be enabled below it: the holder waits in supervisor/,
# every runc command runs in runc/ (the wrapper moves itself there), containers live in
# containers/.
_DELEGATE = ('cg=/sys/fs/cgroup$(sed -n "s/^0:://p" /proc/self/cgroup); set -e; '
             'mkdir "$cg/supervisor"; echo 0 > "$cg/supervisor/cgroup.procs"; '
             'echo "+cpu +memory +pids" > "$cg/cgroup.subtree_control"; mkdir "$cg/containers"; '
             'echo "+cpu +memory +pids" > "$cg/containers/cgroup.subtree_control"; '
             'mkdir "$cg/runc"; exec sleep infinity')  # runc/ last: it says the rest is ready
_WRAPPER = """#!/bin/sh
# runc as {user}, in {cgroup}/runc, its state in the user's runtime directory
echo $$ > /sys/fs/cgroup{cgroup}/runc/cgroup.procs || exit 125
exec setpriv --reuid={uid} --regid={uid} --init-groups env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \\
    HOME=/home/{user} XDG_RUNTIME_DIR=/run/user/{uid} runc --root /run/user/{uid}/runc "$@"
"""


class DelegatedCgroup:
    """A transient service of the user with Delegate=yes, holding a cgroup subtree the user
    owns; stopped (its whole subtree removed by systemd) on exit."""

    def __init__(self, unit: str, user: str, uid: int) -> None:
        self.unit, self.user = unit, user
        # /run/user/UID, which logind would make at login: user-runtime-dir@ stops when
        # nothing needs it, so this unit needs it for as long as it runs
        runtime = f"user-runtime-dir@{uid}.service"
        self.runtime_dir = ("-p", f"Requires={runtime}", "-p", f"After={runtime}")

    def __enter__(self) -> str:
        subprocess.run(["systemd-run", "--quiet", f"--unit={self.unit}", f"--uid={self.user}",
                        f"--gid={self.user}", "-p", "Delegate=yes", *self.runtime_dir, "--", "sh", "-c", _DELEGATE],
                       check=True)
        path = subprocess.run(["systemctl", "show", "-P", "ControlGroup", self.unit],
                              capture_output=True, text=True, check=True).stdout.strip()
        ready = Path("/sys/fs/cgroup") / path.lstrip("/") / "runc"
        deadline = time.monotonic() + 30 * checks.TIMEOUT_SCALE
        while not ready.is_dir():  # the holder makes it as its last step
            state = subprocess.run(["systemctl", "is-active", self.unit], capture_output=True, text=True).stdout
            assert state.strip() in ("active", "activating"), f"{self.unit} is {state.strip()}"
            assert time.monotonic() < deadline, f"{self.unit} did not set up its cgroup {path}"
            time.sleep(0.1)
        return path

    def __exit__(self, *exc) -> None:
        subprocess.run(["systemctl", "stop", self.unit], check=False, capture_output=True)
        subprocess.run(["systemctl", "reset-failed", self.unit], check=False, capture_output=True)


def run_rootless(workdir: Path) -> dict:
    """An unprivileged user's runc (rootless: its own user namespace, its state in its
    runtime directory, a cgroup subtree delegated to it) boots a bundle that ``oci-systemd
    apply`` made from ``runc spec --rootless`` with podman's id map (root is the user,
    the rest its /etc/subuid range): running, no failed unit, systemd's cgroups in the
    user's subtree, PID 1 owned by the user on the host, a clean stop, nothing left."""
    import guest_image

    user, uid = guest_image.TESTER
    work = Path("/var/tmp") / f"rootless-{workdir.name}"  # pytest's tmp is root's 0700
    work.mkdir(mode=0o755)
    image = tree("bookworm", id_map="rootless")
    bundle = work / "bundle"
    bundle.mkdir()
    cid = runc_harness.new_container_id()
    try:
        image.layer_to(bundle / "rootfs", bundle / bundles.LAYER_SCRATCH)
        subprocess.run([runc_harness.RUNC, "spec", "--rootless", "--bundle", str(bundle)], check=True)
        with DelegatedCgroup(f"ocisd-rootless-{cid}.service", user, uid) as delegated:
            cgroups_path = f"{delegated}/containers/{cid}"
            cfg = json.loads((bundle / "config.json").read_text())
            cfg["process"].update(args=["/sbin/init"], terminal=False)
            ids = [{"containerID": c, "hostID": h, "size": n} for c, h, n in image_disk.ROOTLESS_IDS]
            cfg["linux"].update(uidMappings=ids, gidMappings=ids, cgroupsPath=cgroups_path)
            (bundle / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            _, facts = bundles.apply_reviewed(bundle)
            check_facts(facts, kind="v2", view="unified", user_namespace=True,
                        version=bundles.image_systemd_version(image.rootfs))
            wrapper = work / "runc-as-user"
            wrapper.write_text(_WRAPPER.format(user=user, uid=uid, cgroup=delegated))
            wrapper.chmod(0o755)
            machine_id = (bundle / "oci-systemd/machine-id").read_text().strip()
            with runc_harness.RuncContainer(bundle, runc=str(wrapper), container_id=cid, monitor=True,
                                            owner=(uid, uid)) as c:
                since = time.time()
                c.start(timeout=60 * checks.TIMEOUT_SCALE)
                checks.check_booted(c, since=since, machine_id=machine_id)
                assert os.stat(f"/proc/{c.pid()}").st_uid == uid, "PID 1 is not the user's on the host"
                checks.check_mounts(c, readonly=True)  # runc spec --rootless: root.readonly
                checks.check_run_copy_up(c, image, "hook")
                # runc exec, rootless, cannot join a cgroup with controllers enabled below it:
                # what it runs stays in the wrapper's runc/ cgroup (the README says so)
                checks.check_cgroups(c, "unified", cgroups_path, exec_joins=False)
                maps = c.exec("cat", "/proc/self/uid_map").stdout.split()
                assert maps == ["0", str(uid), "1", "1", str(guest_image.SUBID_START), str(guest_image.SUBID_COUNT)], maps
                checks.stop_cleanly(c)
                figures = {"case": "guest minimal-bookworm-v2-rootless", "boot1": c.boot_seconds,
                           "stop1": c.stop_seconds}
            assert not Path(f"/run/user/{uid}/runc/{cid}").exists(), "runc state left after delete"
            assert not (Path("/sys/fs/cgroup") / cgroups_path.lstrip("/")).exists(), "container cgroup left"
        BOOT_FIGURES.append(figures)
        return figures
    finally:
        bundles.remove_bundle(bundle)
        rootfs_remove(work)


def rootfs_remove(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
