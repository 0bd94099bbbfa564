"""Copy-up for a container with its own user namespace, without runc: a process in a
new user and mount namespace (maps 0 -> 100000, 65536 ids) holds the tmpfs mounts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.harness.copyup import (CAP_NET_BIND_SERVICE, FIXED_NS, build_fidelity_tree, set_times, state_json,
                                  write_config)
from tests.harness.mounts import private_tmpfs_holder, userns_tmpfs_holder
from tests.harness.runner import copyup, isolated_python
from tests.harness.skips import require_root, skip_or_fail
from tests.harness.trees import diff_snapshots, snapshot, without_symlink_atimes
from tests.harness.userns import HOST_ID as SHIFT
from tests.harness.userns import shift_owners
from transformer.copyup.run import own_user_namespace
from transformer.copyup.engine import Stats
from transformer.copyup.run import own_user_namespace
from transformer.copyup.userns import IdMap, UserNamespace, dumps, run_as_root, user_namespace
from transformer.errors import CopyUpError, StateError
from transformer.fsguard import decode

# -- the maps --------------------------------------------------------------------------------


def test_id_map():
    m = IdMap.parse("         0     100000      65536\n")
    assert (m.to_host(0), m.to_host(1234), m.to_host(65535), m.to_host(65536)) == (0 + SHIFT, 101234, 165535, None)
    assert (m.to_container(100000), m.to_container(99999), m.to_container(165536)) == (0, None, None)
    two = IdMap.parse("0 1000 1\n1 200000 10\n")
    assert (two.to_host(0), two.to_host(1), two.to_host(10), two.to_host(11)) == (1000, 200000, 200009, None)
    assert two.to_container(200005) == 6 and two.text == "0 1000 1 1 200000 10"
    with pytest.raises(StateError, match="malformed line 'x y'"):
        IdMap.parse("x y\n", file="/proc/1/uid_map")


@pytest.mark.parametrize(
    "uid_map, gid_map, message",
    [
        ("1 100001 10", "0 100000 10", "container uid 0 is not mapped in /proc/7/uid_map (1 100001 10)"),
        ("0 100000 10", "", "container gid 0 is not mapped in /proc/7/gid_map (empty)"),
    ],
)
def test_root_must_be_mapped(uid_map, gid_map, message):
    with pytest.raises(CopyUpError) as info:
        UserNamespace(7, IdMap.parse(uid_map), IdMap.parse(gid_map))
    assert message in info.value.one_line() and "\n" not in info.value.one_line()


def test_maps_both_ids():
    ns = UserNamespace(7, IdMap.parse("0 100000 65536"), IdMap.parse("0 200000 65536"))
    assert (ns.root_uid, ns.root_gid) == (100000, 200000)
    assert ns.maps(100000, 200000) and not ns.maps(100000, 100000) and not ns.maps(0, 200000)


# -- what crosses the pipe ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, True, False, 0, -7, 2**70, "", "a\"b\\c\n\u00e9\U0001f600",
                                   "bad-utf8-\udcff", [1, [2, {}]], {"k": [None, "v"], "": {}}, ("t", 1)])
def test_dumps_round_trip(value):
    text = dumps(value)
    assert text.isascii()
    expected = list(value) if isinstance(value, tuple) else value
    assert decode(text)[0] == expected
    if not (isinstance(value, str) and "\udcff" in value):
        assert json.loads(text) == expected


@pytest.mark.parametrize("value", [1.5, {1: 2}, object()])
def test_dumps_refuses_what_it_does_not_know(value):
    with pytest.raises(TypeError):
        dumps(value)


def test_stats_round_trip():
    s = Stats()
    s.dirs, s.files, s.bytes, s.symlinks, s.hardlinks, s.nodes = 1, 2, 3, 4, 5, 6
    s.kept = ["systemd/system", "lock"]
    back = Stats.from_dict(decode(dumps(s.as_dict()))[0])
    assert back.as_dict() == s.as_dict()


# -- the child, for real -------------------------------------------------------------------------


@pytest.fixture
def holder(tmp_path):
    require_root()
    (tmp_path / "mnt").mkdir()
    with userns_tmpfs_holder(tmp_path, [("/mnt", "mode=755")]) as pid:
        yield pid


def test_detects_the_user_namespace(holder):
    assert own_user_namespace(holder) is True
    assert own_user_namespace(os.getpid()) is False
    ns = user_namespace(holder)
    assert (ns.root_uid, ns.root_gid) == (SHIFT, SHIFT)


def test_child_is_the_containers_root(holder):
    ns = user_namespace(holder)

    def work():
        return [os.getuid(), os.geteuid(), os.getgid(), os.getgroups(), os.readlink("/proc/self/ns/user"),
                os.getpid()]

    uid, euid, gid, groups, userns, pid = run_as_root(ns, work)
    assert (uid, euid, gid) == (0, 0, 0)
    assert groups == []
    assert userns == os.readlink(f"/proc/{holder}/ns/user") != os.readlink("/proc/self/ns/user")
    assert pid != os.getpid()  # it ran in another process
    assert os.readlink("/proc/self/ns/user") != userns and os.getuid() == 0  # we did not move


@pytest.mark.parametrize(
    "raise_, expected",
    [
        (lambda: CopyUpError("refused in the child"), (CopyUpError, "refused in the child")),
        (lambda: StateError("gone", file="<stdin>", pointer="/pid"), (StateError, "<stdin>: /pid: gone")),
        (lambda: ValueError("boom"), (RuntimeError, "in the user-namespace child: ValueError: boom")),
    ],
)
def test_child_errors_come_back_as_the_same_kind(holder, raise_, expected):
    def work():
        raise raise_()

    cls, line = expected
    with pytest.raises(cls) as info:
        run_as_root(user_namespace(holder), work)
    assert type(info.value) is cls
    shown = info.value.one_line() if hasattr(info.value, "one_line") else str(info.value)
    assert shown == line


def test_child_killed_without_a_report(holder):
    def work():
        os.kill(os.getpid(), 9)

    with pytest.raises(CopyUpError, match="was killed by signal 9 without a report"):
        run_as_root(user_namespace(holder), work)


# -- the helper, end to end ----------------------------------------------------------------------


def _image(tmp_path: Path) -> tuple[Path, Path]:
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    (rootfs / "run" / "log").mkdir(parents=True)
    rootfs.chmod(0o755)
    write_config(bundle)
    return bundle, rootfs


def _mapped_run(rootfs: Path) -> None:
    """/run/log/f owned by container uid 1234 (host 101234 once shifted), 0640."""
    f = rootfs / "run" / "log" / "f"
    f.write_bytes(b"owned by 1234\n")
    os.chown(f, 1234, 1235)
    f.chmod(0o640)
    set_times(f)
    set_times(rootfs / "run" / "log")


def test_copy_lands_as_the_mapped_owners(tmp_path):
    """Host root gets EOVERFLOW on a tmpfs of the container's user namespace; the
    helper copies as the container's root, so every owner is the mapped one."""
    require_root()
    bundle, rootfs = _image(tmp_path)
    _mapped_run(rootfs)
    shift_owners(rootfs)
    with userns_tmpfs_holder(rootfs, [("/run", "mode=700")]) as pid:
        target = Path(f"/proc/{pid}/root{rootfs}/run")
        with pytest.raises(OSError) as info:  # what the helper used to do
            os.mkdir(target / "as-host-root")
        assert info.value.errno == 75  # EOVERFLOW
        proc = copyup(["--stage", "prestart", "/run"], state_json(pid, bundle))
        assert (proc.returncode, proc.stderr) == (0, b"")
        st = os.stat(target / "log" / "f")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (101234, 101235, 0o640, FIXED_NS)
        assert (target / "log" / "f").read_bytes() == b"owned by 1234\n"
        top = os.stat(target)
        assert (top.st_uid, top.st_gid, stat.S_IMODE(top.st_mode)) == (SHIFT, SHIFT, 0o755)


def test_fidelity_in_a_user_namespace(tmp_path):
    """Everything the helper keeps, kept; the file capability becomes the kernel's
    namespaced form (v3, rootid = the container's root)."""
    require_root()
    bundle, rootfs = _image(tmp_path)
    run = rootfs / "run"
    (run / "log").rmdir()
    run.rmdir()
    build_fidelity_tree(run, root=True)
    for node in ("null", "loop0"):  # device nodes: see test_device_nodes_are_refused
        (run / node).unlink()
    shift_owners(rootfs, drop_file_capabilities=True)
    os.setxattr(run / "cap", "security.capability", CAP_NET_BIND_SERVICE)  # chown cleared it
    set_times(run)
    expected = without_symlink_atimes(snapshot(run))
    with userns_tmpfs_holder(rootfs, [("/run", "mode=700")]) as pid:
        proc = copyup(["--stage", "prestart", "/run"], state_json(pid, bundle))
        assert proc.returncode == 0, proc.stderr
        seen = without_symlink_atimes(snapshot(f"/proc/{pid}/root{run}"))
    v3 = seen[b"cap"]["xattrs"].pop("security.capability")
    assert v3[:4] == b"\x01\x00\x00\x03" and v3[4:20] == CAP_NET_BIND_SERVICE[4:]
    assert int.from_bytes(v3[20:24], "little") == SHIFT
    del expected[b"cap"]["xattrs"]["security.capability"]
    assert diff_snapshots(expected, seen) == []
    assert seen[b"marker"]["uid"] == 101000 and seen[b"fifo"]["uid"] == 101000


def _refused(tmp_path, prepare, fragment, mounts=(("/run", "mode=755"),)):
    bundle, rootfs = _image(tmp_path)
    _mapped_run(rootfs)
    shift_owners(rootfs)
    prepare(rootfs)
    with userns_tmpfs_holder(rootfs, list(mounts)) as pid:
        proc = copyup(["--stage", "prestart", "/run"], state_json(pid, bundle))
        err = proc.stderr.decode()
        assert proc.returncode == 1, err
        assert err.startswith("oci-systemd-copyup: ") and err.count("\n") == 1 and "Traceback" not in err
        assert fragment in err, err
        return sorted(os.listdir(f"/proc/{pid}/root{rootfs}/run"))


def test_device_nodes_are_refused(tmp_path):
    require_root()
    left = _refused(
        tmp_path,
        lambda rootfs: os.mknod(rootfs / "run" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3)),
        "/run: null: image holds a character device, and the container has its own user namespace, "
        "where the kernel creates no device nodes; refusing to create it",
    )
    assert "null" not in left


def test_unmapped_rootfs_is_refused_before_writing(tmp_path):
    require_root()
    left = _refused(tmp_path, lambda rootfs: os.chown(rootfs, 0, 0),
                    "is owned by host 0:0, which the container's user namespace does not map "
                    "(uid_map 0 100000 65536; gid_map 0 100000 65536); shift the image's owners")
    assert left == []


def test_unmapped_destination_is_refused_before_writing(tmp_path):
    require_root()
    left = _refused(tmp_path, lambda rootfs: os.chown(rootfs / "run", 1000, 100000),
                    "image /run is owned by host 1000:100000, which the container's user namespace does not map")
    assert left == []


def test_unreadable_unmapped_entry_says_why(tmp_path):
    """An entry below DEST owned by an id the namespace does not map, not readable by
    others: the container's root cannot read it, and the message says why."""
    require_root()

    def prepare(rootfs):
        secret = rootfs / "run" / "log" / "secret"
        secret.write_bytes(b"host-only")
        secret.chmod(0o600)  # owned by host 0: unmapped

    _refused(tmp_path, prepare, "/run: log/secret: cannot copy: Permission denied (its owner is not mapped "
                                "in the container's user namespace")


def test_readable_unmapped_entry_lands_as_nobody(tmp_path):
    """Documented: an entry whose owner is unmapped, readable by others, is copied
    with the overflow ids (65534, the container's nobody), as the container sees it."""
    require_root()
    bundle, rootfs = _image(tmp_path)
    _mapped_run(rootfs)
    shift_owners(rootfs)
    (rootfs / "run" / "log" / "public").write_bytes(b"readable")  # host 0:0, 0644
    with userns_tmpfs_holder(rootfs, [("/run", "mode=755")]) as pid:
        proc = copyup(["--stage", "prestart", "/run"], state_json(pid, bundle))
        assert proc.returncode == 0, proc.stderr
        st = os.stat(f"/proc/{pid}/root{rootfs}/run/log/public")
        assert (st.st_uid, st.st_gid) == (SHIFT + 65534, SHIFT + 65534)


def test_root_not_mapped_is_refused(tmp_path):
    require_root()
    bundle, rootfs = _image(tmp_path)
    _mapped_run(rootfs)
    shift_owners(rootfs)
    with userns_tmpfs_holder(rootfs, [("/run", "mode=755")], uid_map="1 100001 65535", gid_map="0 100000 65536",
                             root_owned=False) as pid:
        proc = copyup(["--stage", "prestart", "/run"], state_json(pid, bundle))
        # The maps are only needed to copy or delegate: nothing to do, nothing refused.
        nothing = copyup(["--stage", "prestart", "/tmp"], state_json(pid, bundle))
    assert proc.returncode == 1
    assert b"container uid 0 is not mapped in /proc/" in proc.stderr and proc.stderr.count(b"\n") == 1
    assert (nothing.returncode, nothing.stderr) == (0, b"")


# -- native mode: nothing to copy, the delegation still runs --------------------------------------

CGROUP2_MOUNT = {"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup", "options": ["rw"]}


def _native_config(bundle: Path) -> None:
    """What the transformer writes with --copy-up native and a user namespace: every
    tmpfs carries runc's tmpcopyup, and the hook has no DEST."""
    write_config(bundle, [
        {"destination": "/run", "type": "tmpfs", "options": ["nodev", "tmpcopyup"]},
        {"destination": "/tmp", "type": "tmpfs", "options": ["nodev", "tmpcopyup"]},
        CGROUP2_MOUNT,
    ])


def test_native_mode_delegates_and_copies_nothing(tmp_path):
    require_root()
    unified = Path("/sys/fs/cgroup/unified")
    if not (unified / "cgroup.procs").exists():
        skip_or_fail("needs the hybrid host's unified hierarchy at /sys/fs/cgroup/unified")
    bundle, rootfs = _image(tmp_path)
    _mapped_run(rootfs)  # content the helper must leave to runc's tmpcopyup
    shift_owners(rootfs)
    _native_config(bundle)
    cg = unified / f"copyup-test-{uuid.uuid4().hex[:12]}"
    with userns_tmpfs_holder(rootfs, [("/run", "mode=755")]) as pid:
        cg.mkdir()
        try:
            (cg / "cgroup.procs").write_text(str(pid))
            proc = copyup(["--stage", "prestart"], state_json(pid, bundle))
            assert (proc.returncode, proc.stderr) == (0, b"")
            assert os.listdir(f"/proc/{pid}/root{rootfs}/run") == []
            for name in ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
                assert os.stat(cg / name).st_uid == SHIFT, name
        finally:
            (unified / "cgroup.procs").write_text(str(pid))  # out again, so the directory can go
            cg.rmdir()


def test_native_mode_refuses_the_hosts_root_cgroup(tmp_path):
    """The holder sits in the unified root (as this test does): delegation runs even
    with nothing to copy, and refuses."""
    require_root()
    if open("/proc/self/cgroup").read().find("0::/\n") < 0:
        skip_or_fail("this test process is not in the unified root cgroup")
    bundle, rootfs = _image(tmp_path)
    shift_owners(rootfs)
    _native_config(bundle)
    with userns_tmpfs_holder(rootfs, [("/run", "mode=755")]) as pid:
        proc = copyup(["--stage", "prestart"], state_json(pid, bundle))
    assert proc.returncode == 1
    assert b"container's unified cgroup is the hierarchy's root /" in proc.stderr


# -- without a user namespace: exactly as before ----------------------------------------------------


def test_no_user_namespace_no_child_and_no_new_modules(tmp_path):
    """The same copy without a user namespace forks nothing and loads neither userns.py
    nor cgroup.py."""
    require_root()
    bundle, rootfs = _image(tmp_path)
    _mapped_run(rootfs)
    code = (
        "import os, sys; import transformer.copyup.main as m;"
        "forks = []; real = os.fork; os.fork = lambda: forks.append(1) or real();"
        "rc = m.main(['--stage', 'prestart', '/run']);"
        "print(rc, len(forks), ' '.join(sorted(sys.modules)))"
    )
    with private_tmpfs_holder(rootfs, [("/run", "nodev")]) as pid:
        argv, env = isolated_python(code)
        proc = subprocess.run(argv, env=env, input=state_json(pid, bundle), capture_output=True)
        assert proc.returncode == 0, proc.stderr
        rc, forks, modules = proc.stdout.decode().split(" ", 2)
        assert (rc, forks) == ("0", "0")
        assert os.stat(f"/proc/{pid}/root{rootfs}/run/log/f").st_uid == 1234
    loaded = set(modules.split())
    assert "transformer.copyup.engine" in loaded
    assert not loaded & {"transformer.copyup.userns", "transformer.copyup.cgroup"}
