"""The image's systemd version (a fact the cgroup view depends on) and the host's kind
of cgroups (probed at the edge): table-driven, over the layouts real images have."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from transformer.errors import OptionsError
from transformer.probe import cgroup_host
from transformer.rootfs import DescribedRootfs, EmptyRootfs, HostRootfs
from transformer.systemd_version import systemd_version

MERGED_USR = {"/lib": {"symlink": "usr/lib"}, "/sbin": {"symlink": "usr/sbin"}, "/usr/lib/os-release": "file"}

# Where each release's debootstrapped tree keeps the library (read off the cached trees).
LAYOUTS = {
    "bullseye": ("/usr/lib/systemd/libsystemd-shared-247.so", 247),
    "bookworm": ("/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so", 252),
    "trixie": ("/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-257.so", 257),
    "sid": ("/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-262.so", 262),
    "fedora": ("/usr/lib64/systemd/libsystemd-shared-256.11-1.fc41.so", 256),
    "arm64 sid": ("/usr/lib/aarch64-linux-gnu/systemd/libsystemd-shared-262.so", 262),
    "unmerged /lib": ("/lib/systemd/libsystemd-shared-241.so", 241),
}


@pytest.mark.parametrize("release", sorted(LAYOUTS))
def test_version_from_each_layout(release):
    path, version = LAYOUTS[release]
    rootfs = {path: "file", "/usr/lib/systemd/systemd": "file"}
    if release != "unmerged /lib":
        rootfs.update(MERGED_USR)
    found = systemd_version(DescribedRootfs(rootfs))
    assert found is not None and found.version == version
    assert found.evidence.endswith(path.rsplit("/", 1)[1])


def test_no_systemd_no_version():
    assert systemd_version(DescribedRootfs({**MERGED_USR, "/usr/bin/sh": "file"})) is None
    assert systemd_version(EmptyRootfs()) is None


def test_names_that_only_look_like_the_library_do_not_count():
    rootfs = DescribedRootfs({
        "/usr/lib/systemd/libsystemd-shared.so": "file",
        "/usr/lib/systemd/libsystemd-shared-abc.so": "file",
        "/usr/lib/systemd/libsystemd-shared-252.so.bak": "file",
        "/usr/lib/systemd/not-libsystemd-shared-252.so": "file",
        "/usr/lib/not-a-triplet/systemd/libsystemd-shared-999.so": "file",
    })
    assert systemd_version(rootfs) is None


def test_two_libraries_the_newer_wins():
    rootfs = DescribedRootfs({
        "/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-257.so": "file",
        "/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-258.so": "file",
    })
    assert systemd_version(rootfs).version == 258


def test_real_tree_through_directory_fds(tmp_path: Path):
    """HostRootfs lists directories without following a link out of the rootfs."""
    root = tmp_path / "rootfs"
    lib = root / "usr/lib/x86_64-linux-gnu/systemd"
    lib.mkdir(parents=True)
    (lib / "libsystemd-shared-252.so").write_bytes(b"")
    os.symlink("usr/lib", root / "lib")
    # A link to the host's /usr/lib: must not be followed out of the rootfs.
    outside = tmp_path / "host-lib" / "systemd"
    outside.mkdir(parents=True)
    (outside / "libsystemd-shared-999.so").write_bytes(b"")
    (root / "usr/lib64").mkdir()
    os.symlink(str(tmp_path / "host-lib"), root / "usr/lib64/escape")
    os.symlink(str(tmp_path / "host-lib" / "systemd"), root / "usr/lib64/systemd")
    view = HostRootfs(root)
    try:
        found = systemd_version(view)
    finally:
        view.close()
    assert found is not None and found.version == 252


def test_a_looping_directory_has_no_names(tmp_path: Path):
    root = tmp_path / "rootfs"
    (root / "usr/lib").mkdir(parents=True)
    os.symlink("/usr/lib/systemd", root / "usr/lib/systemd")
    view = HostRootfs(root)
    try:
        assert view.names("/usr/lib/systemd") == ()
        assert systemd_version(view) is None
    finally:
        view.close()


# ---- the host's kind of cgroups ----------------------------------------------------------

def _line(mount_id: int, point: str, fstype: str, options: str = "rw") -> str:
    return f"{mount_id} 1 0:{mount_id} / {point} rw,nosuid - {fstype} {fstype} {options}"


V2 = [_line(30, "/sys/fs/cgroup", "cgroup2", "rw,nsdelegate")]
HYBRID = [
    _line(30, "/sys/fs/cgroup", "tmpfs"),
    _line(31, "/sys/fs/cgroup/unified", "cgroup2"),
    _line(32, "/sys/fs/cgroup/systemd", "cgroup", "rw,name=systemd"),
    _line(33, "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
]
LEGACY = [
    _line(30, "/sys/fs/cgroup", "tmpfs"),
    _line(32, "/sys/fs/cgroup/systemd", "cgroup", "rw,name=systemd"),
    _line(33, "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
]
# The test suite's own v2 namespace: cgroup2 mounted over the hybrid tmpfs.
HYBRID_THEN_V2 = HYBRID + [_line(40, "/sys/fs/cgroup", "cgroup2")]


@pytest.mark.parametrize("lines,kind", [(V2, "v2"), (HYBRID, "hybrid"), (LEGACY, "legacy"), (HYBRID_THEN_V2, "v2")],
                         ids=["v2", "hybrid", "legacy", "v2-over-hybrid"])
def test_cgroup_host(tmp_path: Path, lines, kind):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("\n".join([_line(1, "/", "ext4"), *lines]) + "\n")
    assert cgroup_host(str(mountinfo)) == kind


def test_cgroup_host_without_cgroups_is_bad_input(tmp_path: Path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(_line(1, "/", "ext4") + "\n")
    with pytest.raises(OptionsError, match="pass --cgroup"):
        cgroup_host(str(mountinfo))
    with pytest.raises(OptionsError, match="cannot read"):
        cgroup_host(str(tmp_path / "missing"))


def test_this_host(tmp_path: Path):
    """The probe agrees with what the kernel shows here."""
    kind = cgroup_host()
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        assert kind == "v2"
    elif Path("/sys/fs/cgroup/unified/cgroup.controllers").exists():
        assert kind == "hybrid"
    else:
        assert kind == "legacy"
