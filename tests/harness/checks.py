"""Checks on a running systemd container, shared by the end-to-end test modules.

Each ``check_*`` asserts one promise about a container started by runc_harness and puts
what is needed to see why into its message (most carry ``systemctl --failed`` and
``journalctl -b`` of the container).  The rule for enabled units is a pure function,
``unit_verdict``, so that it can be tested on its own.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from tests.harness import bundles, clean_boot, runc_harness, userns
from tests.harness.skips import require_root, skip_or_fail

TMPFS = ("/run", "/run/lock", "/tmp", "/var/log/journal")
TMPFS_READONLY_ROOT = TMPFS + ("/var/lib/systemd", "/var/tmp")
# Controller files of the container's own cgroup that a container must not raise (v1).
V1_CONTROLLER_FILES = (("memory", "memory.limit_in_bytes", "1073741824"),
                       ("cpu", "cpu.shares", "262144"),
                       ("pids", "pids.max", "4242"))
# Bounds, not waits: each check returns as soon as its answer is in.  A test guest under
# software emulation (tests/guests) runs everything several times slower and scales them.
TIMEOUT_SCALE = float(os.environ.get("OCI_SYSTEMD_TIMEOUT_SCALE", "1"))
BOOT_TIMEOUT = 90 * TIMEOUT_SCALE
STOP_TIMEOUT = 10 * TIMEOUT_SCALE
SERVICE_TIMEOUT = 30 * TIMEOUT_SCALE  # a service that systemd reports started must answer within this


def require_cgroup_mode(cgroup: str) -> None:
    """cgroup "v1": the host has v1 hierarchies; "v2": a cgroup2 hierarchy exists (the
    host's own, or the unified one of a hybrid host, which the v2 namespace mounts)."""
    host = runc_harness.host_cgroup_mode()
    if cgroup == "v1" and host != "v1":
        skip_or_fail("host has no cgroup v1 name=systemd hierarchy")
    if cgroup == "v2" and not os.path.isdir("/sys/fs/cgroup/unified") and host != "v2":
        skip_or_fail("no cgroup2 hierarchy on this host")


def require_hybrid_host() -> None:
    """Root on a cgroup v1 hybrid host (this project's test machines): both the unified
    and the name=systemd hierarchy are mounted."""
    require_root()
    if runc_harness.host_cgroup_mode() != "v1" or not os.path.isdir("/sys/fs/cgroup/unified"):
        skip_or_fail("the host is not cgroup v1 hybrid (v1 controllers plus /sys/fs/cgroup/unified)")


# ---- boot, identity, mounts -------------------------------------------------------------

def journal_entries(c: runc_harness.RuncContainer) -> list[dict]:
    p = c.exec("journalctl", "-b", "--no-pager", "-o", "json", timeout=30 * TIMEOUT_SCALE)
    assert p.returncode == 0, f"journalctl failed: {p.stderr}\n{c.diagnostics()}"
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def check_running(c: runc_harness.RuncContainer, timeout: float = BOOT_TIMEOUT) -> None:
    """is-system-running says running, and systemctl --failed lists nothing."""
    state = c.wait_running(timeout)
    assert state == "running", f"is-system-running: {state}\n{c.diagnostics()}"
    assert c.failed_units() == [], c.diagnostics()


def check_booted(c: runc_harness.RuncContainer, *, since: float, machine_id: str,
                 timeout: float = BOOT_TIMEOUT) -> None:
    """running, no failed unit, journald active with THIS boot in the journal."""
    check_running(c, timeout)
    active = c.exec("systemctl", "is-active", "systemd-journald.service").stdout.strip()
    assert active == "active", f"systemd-journald is {active!r}\n{c.diagnostics()}"
    entries = journal_entries(c)
    # this boot: systemd's own "Startup finished" line, from this machine, after our start
    # (the journal lives on the /run tmpfs; a journal kept from before would be older)
    finished = [e for e in entries if e.get("_PID") == "1" and "Startup finished" in str(e.get("MESSAGE"))]
    assert finished, f"no 'Startup finished' from PID 1 in journalctl -b\n{c.diagnostics()}"
    e = finished[-1]
    assert e.get("_MACHINE_ID") == machine_id, f"journal entry of machine {e.get('_MACHINE_ID')}, expected {machine_id}"
    assert int(e["__REALTIME_TIMESTAMP"]) / 1e6 >= since - 1, "journal shows an older boot, not this one"


def pid1_env(c: runc_harness.RuncContainer) -> list[str]:
    """PID 1's environment, NAME=VALUE entries, read from the host."""
    return Path(f"/proc/{c.pid()}/environ").read_bytes().decode(errors="replace").split("\0")


def check_machine_id(c: runc_harness.RuncContainer, expected: str, image_id: str) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", expected) and set(expected) != {"0"}, expected
    assert expected != image_id, "the container kept the image's machine-id"
    got = c.exec("cat", "/etc/machine-id").stdout.strip()
    assert got == expected, f"/etc/machine-id is {got!r}, expected {expected!r}"
    env = pid1_env(c)
    assert f"container_uuid={expected}" in env, env
    assert "container=oci" in env, env


def check_container_interface(c: runc_harness.RuncContainer) -> None:
    """systemd's container interface as the payload sees it: /run/host/container-manager
    and /run/host/container-uuid repeat PID 1's $container and $container_uuid, read-only;
    /run/host/os-release is this host's; $container_host_id and _version_id are this
    host's (the CLI ran here); systemd-detect-virt --container names a container; /sys
    and /proc/sys are read-only."""
    from transformer.concerns.run_host import parse_os_release

    env = dict(e.split("=", 1) for e in pid1_env(c) if "=" in e)
    for name, var in (("container-manager", "container"), ("container-uuid", "container_uuid")):
        got = c.exec("cat", f"/run/host/{name}").stdout
        assert got == env[var] + "\n", f"/run/host/{name} is {got!r}, PID 1 has {var}={env.get(var)!r}"
    host = Path("/etc/os-release").read_text()
    assert c.exec("cat", "/run/host/os-release").stdout == host, "/run/host/os-release is not this host's"
    p = c.exec("sh", "-c", "echo x >/run/host/os-release || echo x >/run/host/container-manager")
    assert p.returncode != 0, "/run/host files are writable inside"
    fields = dict(parse_os_release(host))
    for key in ("ID", "VERSION_ID"):
        var = f"container_host_{key.lower()}"
        assert env.get(var) == fields.get(key), f"PID 1 has {var}={env.get(var)!r}, this host's {key} is {fields.get(key)!r}"
    p = c.exec("systemd-detect-virt", "--container")
    assert p.returncode == 0 and p.stdout.strip() not in ("", "none"), f"systemd-detect-virt: {p.stdout}{p.stderr}"
    # /sys and /proc/sys read-only: what systemd takes as "no device management here"
    mounts = bundles.mountinfo_fstypes(c.exec("cat", "/proc/self/mountinfo").stdout)
    for path in ("/sys", "/proc/sys"):
        assert "ro" in mounts.get(path, ("(not a mount point)", set()))[1], f"{path} inside: {mounts.get(path)}"


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
    """The image's /run markers in the container, seen from the host (host owners: the
    tree's, so a shifted image's 101234), then from inside (the image's own owners:
    1234, whatever the mapping)."""
    root = Path(f"/proc/{c.pid()}/root")
    problems = bundles.marker_problems(root, "/run", image, full_fidelity=(copy_up == "hook"))
    assert problems == [], "image content in /run did not reach the container intact:\n" + "\n".join(problems)
    names = ["", "marker", "setuid", "link", "hardlink"]
    paths = [f"/run/{bundles.MARKER_DIR}/{n}".rstrip("/") for n in names]
    p = c.exec("stat", "-c", "%u %g", *paths)
    assert p.returncode == 0, f"stat inside: {p.stderr}"
    seen = [tuple(map(int, line.split())) for line in p.stdout.splitlines()]
    want = []
    for name in names:
        st = os.lstat(image.rootfs / "run" / bundles.MARKER_DIR / name)
        want.append((image.container_id(st.st_uid), image.container_id(st.st_gid)))
    assert seen == want, f"owners of {paths} inside the container: {seen}, the image's own: {want}"
    assert want[1] == (bundles.MARKER_UID, bundles.MARKER_GID), want


# ---- cgroups ------------------------------------------------------------------------------

def _cgroup_line(text: str, hierarchy: str) -> str | None:
    """The path of ``hierarchy`` ("name=systemd", or "" for the unified one) in a
    /proc/PID/cgroup text."""
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == hierarchy:
            return path
    return None


def check_cgroups(c: runc_harness.RuncContainer, view: str, cgroups_path: str, *, exec_joins: bool = True) -> None:
    """``view`` "v1": the v1 view (read-only controllers, the container's own name=systemd
    directory bound writable); "unified": a cgroup2 mount of its own unified subtree.
    Both with a cgroup namespace of its own, so that systemd sees its cgroup as / and makes
    init.scope and system.slice right below it, which the host sees below cgroupsPath."""
    inside = os.readlink(f"/proc/{c.pid()}/ns/cgroup")
    assert inside != os.readlink("/proc/self/ns/cgroup"), "no cgroup namespace of its own"
    pid1 = c.exec("cat", "/proc/1/cgroup").stdout
    host_pid1 = Path(f"/proc/{c.pid()}/cgroup").read_text()
    mounts = bundles.mountinfo_fstypes(c.exec("cat", "/proc/self/mountinfo").stdout)
    if view == "v1":
        assert _cgroup_line(pid1, "name=systemd") == "/init.scope", f"/proc/1/cgroup inside:\n{pid1}"
        host = _cgroup_line(host_pid1, "name=systemd")
        assert host == f"{cgroups_path}/init.scope", f"PID 1's name=systemd cgroup seen from the host: {host}"
        own = Path(f"/sys/fs/cgroup/systemd{cgroups_path}")
        for sub in ("init.scope", "system.slice"):
            assert (own / sub).is_dir(), f"systemd did not create {own / sub}"
        check_v1_limits_unwritable(c, cgroups_path)
    else:
        fstype, options = mounts.get("/sys/fs/cgroup", ("(not a mount point)", set()))
        assert fstype == "cgroup2" and "rw" in options, f"/sys/fs/cgroup inside is {fstype} {sorted(options)}"
        # A process runc execs sits at its namespace's root, or in init.scope on a host
        # with controllers (runc cannot join a cgroup whose subtree_control is set): either
        # way a path of the namespace, never the host's cgroupsPath.
        own = c.exec("cat", "/proc/self/cgroup").stdout
        unified = [line for line in own.splitlines() if line.startswith("0::")]  # hybrid: v1 lines too
        if exec_joins:  # a rootless runc 1.1 leaves what it execs in its own cgroup, outside
            assert unified in (["0::/"], ["0::/init.scope"]), f"/proc/self/cgroup inside:\n{own}"
        assert _cgroup_line(pid1, "") == "/init.scope", f"/proc/1/cgroup inside:\n{pid1}"
        host = _cgroup_line(host_pid1, "")
        assert host == f"{cgroups_path}/init.scope", f"PID 1's unified cgroup seen from the host: {host}"
        ls = c.exec("test", "-d", "/sys/fs/cgroup/system.slice")
        assert ls.returncode == 0, "systemd did not create system.slice in its cgroup2 tree"
        v1 = [f"/sys/fs/cgroup/{name}" for name in ("memory", "systemd", "memory.limit_in_bytes", "cpu.shares")]
        seen = c.exec("ls", "-d", *v1).stdout.split()
        assert seen == [], f"v1 hierarchies or files visible in the unified view: {seen}"


def check_v1_limits_unwritable(c: runc_harness.RuncContainer, cgroups_path: str) -> None:
    """Writes to the container's own v1 limits fail from inside, and the host's values stay."""
    for controller, name, value in V1_CONTROLLER_FILES:
        host_file = Path(f"/sys/fs/cgroup/{controller}{cgroups_path}/{name}")
        before = host_file.read_text()
        p = c.exec("sh", "-c", f"echo {value} > /sys/fs/cgroup/{controller}/{name}")
        assert p.returncode != 0, f"the container could write its own {controller}/{name}"
        assert host_file.read_text() == before, f"{host_file} changed from inside the container"


def check_cgroup_delegated(view: str, cgroups_path: str, host_id: int) -> None:
    """With a user namespace, the container's own cgroup belongs to its mapped root (the
    copy-up helper gives it before systemd starts), seen from the host."""
    if view == "v1":
        paths = [Path(f"/sys/fs/cgroup/systemd{cgroups_path}")]
    else:
        unified = Path("/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup")
        d = unified / cgroups_path.lstrip("/")
        paths = [d] + [d / f for f in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")]
    wrong = [f"{p} {os.stat(p).st_uid}:{os.stat(p).st_gid}" for p in paths
             if (os.stat(p).st_uid, os.stat(p).st_gid) != (host_id, host_id)]
    assert wrong == [], f"not owned by the mapped root {host_id}:{host_id}: {wrong}"


# ---- identity with a user namespace -----------------------------------------------------

def check_id_maps(c: runc_harness.RuncContainer, expected: str) -> None:
    for name in ("uid_map", "gid_map"):
        p = c.exec("cat", f"/proc/self/{name}")
        got = [" ".join(line.split()) for line in p.stdout.splitlines()]
        assert got == [expected], f"/proc/self/{name} inside: {p.stdout!r}{p.stderr}"


def check_workload(c: runc_harness.RuncContainer, image: bundles.Image, bundle: Path, *, machine_id: str,
                   image_id: str, copy_up: str, view: str, cgroups_path: str, user_namespace: bool) -> dict:
    """Every promise a booted workload cell checks after check_booted, in one place for
    the host-side workloads and the test guests: the machine-id, the tmpfs, the image's
    /run content, the cgroup view, the id maps (and with a user namespace the cgroup
    delegated to the mapped root), and for a services image every enabled unit active,
    postgres and sshd answering.  Returns figures for the summary ("accepted" units)."""
    check_machine_id(c, machine_id, image_id)
    check_container_interface(c)
    clean_boot.check_clean_journal(c, image.flavour, timeout=30 * TIMEOUT_SCALE)
    check_mounts(c, readonly=False)
    check_run_copy_up(c, image, copy_up)
    check_cgroups(c, view, cgroups_path)
    if user_namespace:
        check_id_maps(c, userns.uid_map_line())
        check_cgroup_delegated(view, cgroups_path, userns.HOST_ID)
    else:
        check_id_maps(c, "0 0 4294967295")  # the host's identity: no user namespace
    figures = {}
    if image.flavour == "services":
        figures["accepted"] = check_enabled_units(c, enabled_units(bundle / "rootfs"))
        check_pg_isready(c)
        check_sshd(c)
    return figures


# ---- workloads ----------------------------------------------------------------------------

UNIT_PROPERTIES = ("Id", "ActiveState", "SubState", "Type", "Result", "ExecMainStatus",
                   "ExecMainExitTimestampMonotonic", "ConditionResult", "ConditionTimestampMonotonic")


def unit_verdict(props: dict[str, str]) -> tuple[str, str]:
    """The rule for "every enabled unit active": ("active" | "accepted" | "problem", why).

    active: ActiveState=active (a service running, a oneshot with RemainAfterExit, a
    socket, a timer, a target).  accepted, and reported as such: a oneshot that ran and
    exited 0 and is inactive again (e2scrub_reap.service), or a unit that its own
    Condition*= skipped (the condition was checked, ConditionResult=no).  Anything else,
    a unit that never started included, is a problem."""
    state = f"{props.get('ActiveState')}/{props.get('SubState')}"
    if props.get("ActiveState") == "active":
        return "active", state
    if props.get("ActiveState") == "inactive" and props.get("Result") == "success":
        if props.get("ConditionTimestampMonotonic", "0") != "0" and props.get("ConditionResult") == "no":
            return "accepted", "skipped by its own condition (ConditionResult=no)"
        if (props.get("Type") == "oneshot" and props.get("ExecMainExitTimestampMonotonic", "0") != "0"
                and props.get("ExecMainStatus") == "0"):
            return "accepted", "oneshot that ran and exited 0 (Result=success)"
    return "problem", (f"{state}, Type={props.get('Type')}, Result={props.get('Result')}, "
                       f"ConditionResult={props.get('ConditionResult')}")


def enabled_units(rootfs: Path) -> list[str]:
    """The units the image enables for multi-user.target (its .wants symlinks)."""
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    return sorted(p.name for p in wants.iterdir())


def check_enabled_units(c: runc_harness.RuncContainer, units: list[str]) -> dict[str, str]:
    """Every unit in ``units`` passes unit_verdict; returns the accepted ones with why."""
    assert units, "no enabled unit to check"
    p = c.exec("systemctl", "show", "--no-pager", *(f"--property={n}" for n in UNIT_PROPERTIES), *units)
    assert p.returncode == 0, f"systemctl show: {p.stderr}"
    blocks = p.stdout.strip().split("\n\n")
    assert len(blocks) == len(units), f"systemctl show gave {len(blocks)} blocks for {len(units)} units:\n{p.stdout}"
    accepted, problems = {}, []
    for unit, block in zip(units, blocks):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        verdict, why = unit_verdict(props)
        if verdict == "accepted":
            accepted[unit] = why
        elif verdict == "problem":
            problems.append(f"{unit}: {why}")
    assert problems == [], "enabled units not active:\n" + "\n".join(problems) + "\n" + c.diagnostics()
    return accepted


def check_pg_isready(c: runc_harness.RuncContainer, timeout: float = SERVICE_TIMEOUT) -> None:
    """postgres accepts connections (pg_isready exits 0), polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        p = c.exec("pg_isready", timeout=timeout)
        if p.returncode == 0:
            assert "accepting connections" in p.stdout, p.stdout
            return
        assert time.monotonic() < deadline, (
            f"pg_isready rc={p.returncode} for {timeout}s: {p.stdout}{p.stderr}\n{c.diagnostics()}")
        time.sleep(0.2)


def listening_ports(proc_net_tcp: str) -> set[int]:
    """Local ports in state LISTEN (0A) in /proc/net/tcp and tcp6 text (one or both)."""
    ports = set()
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[0] != "sl" and fields[3] == "0A":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def check_sshd(c: runc_harness.RuncContainer, timeout: float = SERVICE_TIMEOUT) -> None:
    """sshd listens on :22 (/proc/net/tcp{,6} of the container's network namespace) and
    answers on 127.0.0.1:22 with its SSH-2.0 banner."""
    deadline = time.monotonic() + timeout
    while True:
        p = c.exec("cat", "/proc/net/tcp", "/proc/net/tcp6")
        if 22 in listening_ports(p.stdout):
            break
        assert time.monotonic() < deadline, f"nothing listens on :22 after {timeout}s:\n{p.stdout}\n{c.diagnostics()}"
        time.sleep(0.2)
    banner = c.exec("timeout", "10", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/22; head -c 8 <&3", timeout=20)
    assert banner.stdout.startswith("SSH-2.0"), f"no SSH banner on 127.0.0.1:22: {banner.stdout!r}{banner.stderr}"


def stop_cleanly(c: runc_harness.RuncContainer) -> float:
    """runc kill ID 37 (SIGRTMIN+3: systemd's halt) stops it within 10 s, and systemd's
    shutdown ends with exit status 0 ("Exiting container."; a SIGKILL'd or crashed PID 1
    gives a negative or other status)."""
    seconds = c.kill(37, timeout=STOP_TIMEOUT)
    status = c.exit_status(timeout=STOP_TIMEOUT)
    assert status == 0, f"PID 1 exit status {status} after SIGRTMIN+3, expected a clean 0"
    return seconds


def check_nothing_left(sandbox: runc_harness.HostSandbox, container_id: str, cgroups_path: str) -> None:
    """After runc delete: no runc state, nothing in the sandboxed /tmp and /run, no cgroup."""
    assert not Path(f"/run/runc/{container_id}").exists(), f"runc state of {container_id} left after delete"
    left = sandbox.leftovers()
    assert left == [], "runc, its hook or the container left this in /tmp or /run:\n" + "\n".join(left)
    assert runc_harness.leftover_cgroups(cgroups_path) == []
