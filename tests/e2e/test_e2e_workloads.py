"""Issue 9: real workloads boot under real runc, from bundles the project's own CLI transformed.

Cells (each a container booted once, checked, and stopped with ``runc kill ID 37``):
- services images (Debian's packaged daemons: sshd, postgresql, mariadb, redis,
  memcached, bind9, postfix, nginx, cron, rsyslog, timesyncd, resolved) of bullseye,
  bookworm, trixie and sid on this hybrid host with the defaults (``apply BUNDLE``:
  ``--cgroup auto``, hook copy-up); bookworm's also with ``--cgroup v1`` and on the v2
  namespace (the CLI run there too, so that auto probes v2); sid's also on the v2 namespace;
- sid's minimal image (systemd >= 258, which has no cgroup v1 support) with the defaults
  here and on the v2 namespace; beside them, the plan-time refusal of ``--cgroup v1`` for it;
- user-namespaced containers (uid and gid 0 -> 100000, size 65536, on an
  ownership-shifted copy of the tree): bookworm minimal and services, hook and native
  copy-up, here and on the v2 namespace.

Every cell: the review states the expected host kind, cgroup view and user namespace;
``is-system-running`` says running; no failed unit; this boot in the journal; the
bundle's machine-id; the tmpfs mounts; the image's /run content with its owners (the
image's own inside, the shifted ones on the host); the cgroup view (v1: limits
unwritable; unified: a cgroup2 view of its own subtree); /proc/self/uid_map; a clean
stop (exit status 0); and nothing left behind (runc state, cgroups, the host's /tmp
and /run through a HostSandbox, and nothing that apply wrote into the rootfs).  A services
cell also wants every unit the image enables in multi-user.target.wants active (see
checks.unit_verdict for the two accepted exceptions, which the summary lists), postgres
to answer pg_isready, and sshd to listen on :22 and send its banner.

Bundles are overlays on the session's images (bundles.Image.layer_to): a services tree is
1.1 GB, and a copy per bundle would cost more than its boot.  The cells of this module
are booted at once by a CellPool (parallel.py); each test reports its own cell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import bundles, checks, parallel, runc_harness, userns
from tests.harness.figures import BOOT_FIGURES

pytestmark = pytest.mark.e2e

# systemd's major version in each release; sid moves, and only its side of 257 matters
SYSTEMD = {"bullseye": 247, "bookworm": 252, "trixie": 257}
LAST_V1_SYSTEMD = 257
WORKERS = 3  # containers booting at once (2 cores: each waits on its services most of the time)


@dataclass(frozen=True)
class Cell:
    release: str
    flavour: str  # rootfs_cache.FLAVOURS
    host: str  # "hybrid": this host as it is; "v2": the v2 namespace (runc_harness cgroup_v2)
    cgroup: str | None = None  # --cgroup; None: the default, auto
    copy_up: str | None = None  # --copy-up; None: the default, hook
    user_namespace: bool = False

    def __str__(self) -> str:
        options = "-".join(filter(None, [self.cgroup and f"cgroup-{self.cgroup}",
                                         self.copy_up])) or "defaults"
        userns_ = "-userns" if self.user_namespace else ""
        return f"{self.flavour}-{self.release}-{self.host}-{options}{userns_}"

    @property
    def view(self) -> str:
        """The cgroup view the core must choose (transformer/concerns/cgroups.py)."""
        if self.host == "v2":
            return "unified"
        if self.cgroup == "v1":
            return "v1"
        return "v1" if SYSTEMD.get(self.release, LAST_V1_SYSTEMD + 1) <= LAST_V1_SYSTEMD else "unified"


CELLS = [
    *(Cell(release, "services", "hybrid") for release in ("bullseye", "bookworm", "trixie", "sid")),
    Cell("bookworm", "services", "hybrid", cgroup="v1"),
    Cell("bookworm", "services", "v2"),
    Cell("sid", "services", "v2"),
    Cell("sid", "minimal", "hybrid"),
    Cell("sid", "minimal", "v2"),
    *(Cell("bookworm", flavour, host, copy_up=copy_up, user_namespace=True)
      for flavour in ("minimal", "services") for host in ("hybrid", "v2") for copy_up in ("hook", "native")),
]

HOST_FACT = {"hybrid": "a hybrid host", "v2": "a cgroup v2 host"}


def run_cell(cell: Cell, images, workdir: Path) -> dict:
    checks.require_hybrid_host()
    image = images.get(cell.release, cell.flavour, userns.HOST_ID if cell.user_namespace else 0)
    bundle = bundles.make_bundle(image, workdir / "bundle", ["/sbin/init"], layered=True)
    try:
        if cell.user_namespace:
            userns.map_users(bundle)
        options = [*(("--cgroup", cell.cgroup) if cell.cgroup else ()),
                   *(("--copy-up", cell.copy_up) if cell.copy_up else ())]
        cfg, facts = bundles.apply_reviewed(bundle, *options, cgroup_v2_namespace=(cell.host == "v2"))
        version = bundles.image_systemd_version(image.rootfs)
        assert facts.get("systemd version", "").startswith(f"{version} "), facts
        assert facts.get("cgroup host", "").startswith(HOST_FACT[cell.host] if cell.cgroup != "v1" else "a cgroup v1 host"), facts
        assert facts.get("cgroup view", "").startswith(f"{cell.view} ("), facts
        assert facts.get("user namespace", "").startswith("yes" if cell.user_namespace else "no"), facts
        assert bundles.layer_changes(bundle, image) == [], "apply wrote into the rootfs"

        machine_id = (bundle / "oci-systemd/machine-id").read_text().strip()
        image_id = (image.rootfs / "etc/machine-id").read_text().strip()
        cid = runc_harness.new_container_id()
        # the v1 view sets cgroupsPath (its name=systemd bind needs it); without one runc's
        # cgroupfs driver uses /<container id>
        cgroups_path = cfg["linux"].get("cgroupsPath") or f"/{cid}"
        figures = {"case": f"workload {cell}"}
        sandbox = runc_harness.HostSandbox(workdir / "sandbox", bundle)
        with runc_harness.RuncContainer(bundle, cgroup_v2=(cell.host == "v2"), container_id=cid,
                                        monitor=True, sandbox=sandbox) as c:
            since = time.time()
            c.start()
            checks.check_booted(c, since=since, machine_id=machine_id)
            figures["boot1"] = c.boot_seconds
            figures.update(checks.check_workload(c, image, bundle, machine_id=machine_id, image_id=image_id,
                                                 copy_up=cell.copy_up or "hook", view=cell.view,
                                                 cgroups_path=cgroups_path, user_namespace=cell.user_namespace))
            figures["stop1"] = checks.stop_cleanly(c)
        checks.check_nothing_left(sandbox, cid, cgroups_path)
        BOOT_FIGURES.append(figures)
        return figures
    finally:
        bundles.remove_bundle(bundle)


@pytest.fixture(scope="module")
def cells(request, images, tmp_path_factory):
    base = tmp_path_factory.mktemp("workloads")
    selected = parallel.selected_params(request, "cell")
    with parallel.CellPool(lambda cell: run_cell(cell, images, base / str(cell)), selected, workers=WORKERS) as pool:
        yield pool


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_workload(cells, cell):
    cells.result(cell)


def test_newest_systemd_refused_on_cgroup_v1(images, tmp_path):
    """sid's systemd (>= 258) has no cgroup v1 support: ``apply --cgroup v1`` refuses at
    plan time with exit 2 and one line naming the version, and writes nothing."""
    image = images.get("sid")
    version = bundles.image_systemd_version(image.rootfs)
    assert version > LAST_V1_SYSTEMD, f"sid's systemd is {version}; this test wants one without cgroup v1"
    bundle = bundles.make_bundle(image, tmp_path / "bundle", ["/sbin/init"], layered=True)
    try:
        before = (bundle / "config.json").read_bytes()
        p = bundles.cli("apply", str(bundle), "--cgroup", "v1", check=False)
        assert p.returncode == 2, f"rc={p.returncode}\n{p.stdout}{p.stderr}"
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and f"systemd {version}" in lines[0], p.stderr
        assert p.stdout == "", p.stdout
        assert (bundle / "config.json").read_bytes() == before, "the refused apply changed config.json"
        assert not (bundle / "oci-systemd").exists(), "the refused apply wrote side files"
        assert bundles.layer_changes(bundle, image) == [], "the refused apply wrote into the rootfs"
    finally:
        bundles.remove_bundle(bundle)


def test_workload_checks_can_fail(images, tmp_path):
    """The checks the cells rely on see a stopped service, a missing mapping and a cgroup
    that was not delegated: in a booted bookworm services container, with units stopped
    by hand, each check raises."""
    checks.require_hybrid_host()
    image = images.get("bookworm", "services")
    bundle = bundles.make_bundle(image, tmp_path / "bundle", ["/sbin/init"])
    try:
        cfg, _ = bundles.apply_reviewed(bundle)
        with runc_harness.RuncContainer(bundle, monitor=True) as c:
            c.start()
            checks.check_running(c)
            units = checks.enabled_units(bundle / "rootfs")
            checks.check_enabled_units(c, units)
            stop = c.exec("systemctl", "stop", "cron.service", "ssh.service", "postgresql.service")
            assert stop.returncode == 0, stop.stderr
            with pytest.raises(AssertionError, match="cron.service: inactive/dead"):
                checks.check_enabled_units(c, units)
            with pytest.raises(AssertionError, match="pg_isready rc="):
                checks.check_pg_isready(c, timeout=1)
            with pytest.raises(AssertionError, match="nothing listens on :22"):
                checks.check_sshd(c, timeout=1)
            with pytest.raises(AssertionError, match="uid_map inside"):
                checks.check_id_maps(c, userns.uid_map_line())
            with pytest.raises(AssertionError, match="not owned by the mapped root"):
                checks.check_cgroup_delegated("v1", cfg["linux"]["cgroupsPath"], userns.HOST_ID)
            with pytest.raises(AssertionError, match="/sys/fs/cgroup inside is tmpfs"):
                checks.check_cgroups(c, "unified", cfg["linux"]["cgroupsPath"])
            checks.stop_cleanly(c)
    finally:
        bundles.remove_bundle(bundle)


@pytest.mark.parametrize("props,verdict", [
    ({"ActiveState": "active", "SubState": "running", "Type": "notify", "Result": "success"}, "active"),
    ({"ActiveState": "active", "SubState": "exited", "Type": "oneshot", "Result": "success"}, "active"),
    ({"ActiveState": "inactive", "SubState": "dead", "Type": "oneshot", "Result": "success",
      "ExecMainExitTimestampMonotonic": "2794114", "ExecMainStatus": "0",
      "ConditionTimestampMonotonic": "2710000", "ConditionResult": "yes"}, "accepted"),
    ({"ActiveState": "inactive", "SubState": "dead", "Type": "simple", "Result": "success",
      "ExecMainExitTimestampMonotonic": "0", "ExecMainStatus": "0",
      "ConditionTimestampMonotonic": "2710000", "ConditionResult": "no"}, "accepted"),
    # never started: no condition checked, nothing ran
    ({"ActiveState": "inactive", "SubState": "dead", "Type": "oneshot", "Result": "success",
      "ExecMainExitTimestampMonotonic": "0", "ExecMainStatus": "0",
      "ConditionTimestampMonotonic": "0", "ConditionResult": "no"}, "problem"),
    ({"ActiveState": "inactive", "SubState": "dead", "Type": "simple", "Result": "success",
      "ExecMainExitTimestampMonotonic": "2794114", "ExecMainStatus": "0",
      "ConditionTimestampMonotonic": "2710000", "ConditionResult": "yes"}, "problem"),
    ({"ActiveState": "failed", "SubState": "failed", "Type": "oneshot", "Result": "exit-code",
      "ExecMainExitTimestampMonotonic": "2794114", "ExecMainStatus": "1"}, "problem"),
    ({"ActiveState": "activating", "SubState": "start", "Type": "notify", "Result": "success"}, "problem"),
], ids=["running", "remain-after-exit", "oneshot-done", "condition-skipped", "never-started",
        "simple-exited", "failed", "activating"])
def test_enabled_unit_rule(props, verdict):
    assert checks.unit_verdict(props)[0] == verdict
