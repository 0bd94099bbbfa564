"""Real runc 1.1.5 containers: fidelity, the hostile-image corpus, 20 at once."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness.copyup import build_fidelity_tree, make_busybox_rootfs, runc_bundle, set_times
from tests.harness.runc_harness import RUNC, RuncContainer, require_runc
from tests.harness.skips import require_root
from tests.harness.trees import diff_snapshots, sha256_file, snapshot

pytestmark = [pytest.mark.root, pytest.mark.e2e]

TMPFS_OPTS = ["nosuid", "nodev", "mode=755"]


@pytest.fixture
def bundle(tmp_path):
    require_root()
    require_runc()
    b = tmp_path / "bundle"
    b.mkdir()
    make_busybox_rootfs(b / "rootfs")
    return b


def _host_digest(paths) -> dict:
    return {p: sha256_file(p) for p in paths}


HOST_FILES = ["/etc/shadow", "/etc/passwd", "/etc/hostname"]


def test_fidelity_in_a_runc_container(bundle):
    rootfs = bundle / "rootfs"
    run = rootfs / "run"
    build_fidelity_tree(run, root=True)
    marker = run / "marker"
    assert marker.stat().st_uid == 1000 and stat.S_IMODE(marker.stat().st_mode) == 0o640
    (run / "lock").mkdir()
    (run / "lock" / "lockfile").write_bytes(b"lock")
    set_times(run / "lock")
    set_times(run)
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp" / "keep").write_bytes(b"keep me")
    (rootfs / "tmp").chmod(0o1777)
    set_times(rootfs / "tmp" / "keep")
    set_times(rootfs / "tmp")
    expected_run, expected_tmp = snapshot(run), snapshot(rootfs / "tmp")
    mask = bundle / "empty-unit"
    mask.write_bytes(b"")
    runc_bundle(
        bundle,
        tmpfs_mounts=[("/run", TMPFS_OPTS), ("/run/lock", TMPFS_OPTS), ("/tmp", ["nosuid", "nodev"])],
        # A masked unit: runc creates /run/systemd/system/ in the tmpfs before hooks.
        extra_mounts=[{"destination": "/run/systemd/system/x.service", "type": "bind",
                       "source": str(mask), "options": ["bind", "ro"]}],
        hook_args=["/run", "/run/lock", "/tmp"],
    )
    with RuncContainer(bundle) as c:
        c.start()
        root = c.root()
        seen_run = snapshot(root / "run")
        seen_tmp = snapshot(root / "tmp")
        inside = subprocess.run([RUNC, "exec", "--user", "1000:1000", c.id, "cat", "/run/marker", "/run/sub/marker-hardlink", "/tmp/keep"],
                                capture_output=True, timeout=30)
    # The runtime's own entries are the only differences.
    for rel in (b"systemd", b"systemd/system", b"systemd/system/x.service"):
        seen_run.pop(rel)
    assert diff_snapshots(expected_run, seen_run) == []
    assert diff_snapshots(expected_tmp, seen_tmp) == []
    # As uid 1000 (the default runc spec has no CAP_DAC_OVERRIDE; 0640 is enforced).
    assert inside.stdout == b"marker content\n" * 2 + b"keep me", inside.stderr
    assert mask.read_bytes() == b""


def test_create_runtime_stage(bundle):
    rootfs = bundle / "rootfs"
    (rootfs / "run").mkdir()
    (rootfs / "run" / "marker").write_bytes(b"createRuntime")
    runc_bundle(bundle, tmpfs_mounts=[("/run", TMPFS_OPTS)], hook_args=["/run"], stage="createRuntime")
    with RuncContainer(bundle) as c:
        c.start()
        assert (c.root() / "run" / "marker").read_bytes() == b"createRuntime"


def test_native_tmpcopyup_mounts_are_left_alone(bundle):
    """Default-list mode skips mounts that runc's own tmpcopyup already filled."""
    rootfs = bundle / "rootfs"
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp" / "keep").write_bytes(b"k")
    runc_bundle(bundle, tmpfs_mounts=[("/tmp", ["nodev", "tmpcopyup"])], hook_args=[])
    with RuncContainer(bundle) as c:
        c.start()
        assert (c.root() / "tmp" / "keep").read_bytes() == b"k"


# -- the hostile-image corpus ---------------------------------------------------------------


def _hostile_safe_tree(run: Path, canary: Path):
    run.mkdir()
    os.symlink("../../../../etc/shadow", run / "x")
    os.symlink("/etc/shadow", run / "abs")
    os.symlink(str(canary), run / "canary-link")
    os.symlink(str(canary.parent), run / "canary-dir")
    os.symlink("loop2", run / "loop1")
    os.symlink("loop1", run / "loop2")
    (run / "new\nline").write_bytes(b"nl")
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(18):  # a path of about 4.5 KB below /run
        name = f"long{i}".ljust(250, "y")
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(leaf, b"deep")
    os.close(leaf)
    os.close(fd)


def _deep_tree(run: Path):
    run.mkdir()
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(200):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)


@pytest.mark.parametrize(
    "case, outcome",
    [
        ("run-symlink-to-etc", "image path /run: is a symlink"),
        ("safe-hostile-links", None),
        ("deeper-than-allowed", "deeper than"),
        ("larger-than-tmpfs", "does not fit"),
        ("device-node", None),
    ],
)
def test_hostile_images_under_runc(bundle, tmp_path, case, outcome):
    rootfs = bundle / "rootfs"
    canary_dir = tmp_path / f"canary-{uuid.uuid4().hex[:8]}"
    canary_dir.mkdir()
    canary = canary_dir / "secret"
    canary.write_bytes(b"host secret\n")
    run_opts = TMPFS_OPTS
    if case == "run-symlink-to-etc":
        (rootfs / "etc" / "shadow").write_bytes(b"image shadow")
        os.symlink("/etc", rootfs / "run")
    elif case == "safe-hostile-links":
        _hostile_safe_tree(rootfs / "run", canary)
    elif case == "deeper-than-allowed":
        _deep_tree(rootfs / "run")
    elif case == "larger-than-tmpfs":
        (rootfs / "run").mkdir()
        (rootfs / "run" / "big").write_bytes(b"\0" * (3 << 20))
        run_opts = TMPFS_OPTS + ["size=1m"]
    elif case == "device-node":
        (rootfs / "run").mkdir()
        os.mknod(rootfs / "run" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    before = _host_digest(HOST_FILES + [str(canary)])
    runc_bundle(bundle, tmpfs_mounts=[("/run", run_opts)], hook_args=["/run"])
    with RuncContainer(bundle) as c:
        result = c.start(check=False)
        err = result.stdout
        if outcome is None:
            assert result.returncode == 0, err
            root = c.root() / "run"
            if case == "safe-hostile-links":
                assert os.readlink(root / "x") == "../../../../etc/shadow"
                assert os.readlink(root / "canary-link") == str(canary)
                assert os.readlink(root / "loop1") == "loop2"
                assert (root / "new\nline").read_bytes() == b"nl"
                # The 4.5 KB path, walked by fds (a path string is too long for lstat).
                fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
                for i in range(18):
                    nfd = os.open(f"long{i}".ljust(250, "y"), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                    os.close(fd)
                    fd = nfd
                leaf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
                assert os.read(leaf, 10) == b"deep"
                os.close(leaf)
                os.close(fd)
            else:
                assert os.stat(root / "null").st_rdev == os.makedev(1, 3)
        else:
            assert result.returncode != 0, "the container must not start"
            assert outcome in err, err
            assert "oci-systemd-copyup: " in err and "Traceback" not in err
    assert _host_digest(HOST_FILES + [str(canary)]) == before
    assert os.listdir(canary_dir) == ["secret"]


def test_twenty_containers_at_once(tmp_path):
    require_root()
    require_runc()
    bundles = []
    for i in range(20):
        b = tmp_path / f"b{i}"
        b.mkdir()
        make_busybox_rootfs(b / "rootfs")
        (b / "rootfs" / "run").mkdir()
        (b / "rootfs" / "run" / "marker").write_bytes(f"container {i}\n".encode() * 100)
        for j in range(50):
            (b / "rootfs" / "run" / f"f{j}").write_bytes(f"{i}-{j}".encode())
        runc_bundle(b, tmpfs_mounts=[("/run", TMPFS_OPTS)], hook_args=["/run"])
        bundles.append(b)
    containers = [RuncContainer(b) for b in bundles]
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(lambda c: c.start(timeout=90, check=False), containers))
        for i, (c, r) in enumerate(zip(containers, results)):
            assert r.returncode == 0, r.stdout
            root = c.root() / "run"
            assert (root / "marker").read_bytes() == f"container {i}\n".encode() * 100
            assert sorted(os.listdir(root)) == sorted(["marker"] + [f"f{j}" for j in range(50)])
            assert (root / "f7").read_bytes() == f"{i}-7".encode()
    finally:
        with ThreadPoolExecutor(max_workers=20) as pool:
            list(pool.map(lambda c: c.delete(), containers))
