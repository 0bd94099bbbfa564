"""The copy-up suite's material: an image tree with every property the helper must keep,
the OCI state runc gives a hook, and small busybox bundles for real runc containers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import struct
from pathlib import Path

from tests.harness.bundles import runc_spec
from tests.harness.runner import HOOK_ARGV
from tests.harness.skips import skip_or_fail

FIXED_NS = 1_577_934_245_123_456_789  # 2020-01-02 03:04:05.123456789 UTC
OLD_ATIME_NS = 1_500_000_000_987_654_321

# security.capability v2: cap_net_bind_service (bit 10) permitted and effective.
CAP_NET_BIND_SERVICE = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
# How the helper names its stdin in messages.
STATE_FILE = "<stdin: OCI state>"


def set_times(path, atime_ns=OLD_ATIME_NS, mtime_ns=FIXED_NS):
    os.utime(path, ns=(atime_ns, mtime_ns), follow_symlinks=False)


def build_fidelity_tree(top: Path, *, root: bool) -> None:
    """A /run-like image tree with every property the helper must keep."""
    top.mkdir(parents=True, exist_ok=True)
    uid, gid = (1000, 1000) if root else (os.getuid(), os.getgid())
    marker = top / "marker"
    marker.write_bytes(b"marker content\n")
    os.setxattr(marker, "user.test", b"value-\x00-binary")
    os.chown(marker, uid, gid)
    marker.chmod(0o640)
    (top / "sub").mkdir()
    os.link(marker, top / "sub" / "marker-hardlink")
    (top / "suid").write_bytes(b"#!/bin/sh\n")
    (top / "suid").chmod(0o4755)
    (top / "sgid").write_bytes(b"x")
    (top / "sgid").chmod(0o2750)
    (top / "sticky").mkdir()
    (top / "sticky").chmod(0o1777)
    (top / "empty").mkdir()
    (top / "empty").chmod(0o710)
    os.chown(top / "empty", uid, gid)
    (top / "big").write_bytes(os.urandom(3 << 20))
    (top / "zero").write_bytes(b"")
    os.symlink("marker", top / "rel-link")
    os.symlink("/etc/shadow", top / "abs-link")
    os.symlink("../../../../etc/shadow", top / "dotdot-link")
    os.symlink("dangling-nowhere", top / "dangling")
    os.symlink("loop-b", top / "loop-a")
    os.symlink("loop-a", top / "loop-b")
    os.mkfifo(top / "fifo", 0o620)
    os.mknod(top / "sock", stat.S_IFSOCK | 0o755)
    (top / "name\nwith\nnewlines").write_bytes(b"nl")
    (top / os.fsdecode(b"bad-utf8-\xff")).write_bytes(b"bytes")
    if root:
        os.chown(top / "rel-link", 1000, 1001, follow_symlinks=False)
        os.chown(top / "fifo", 1000, 1000)
        os.mknod(top / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(top / "loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
        os.chown(top / "loop0", 0, 6)
        cap = top / "cap"
        cap.write_bytes(b"\x7fELF-ish")
        cap.chmod(0o755)
        os.setxattr(cap, "security.capability", CAP_NET_BIND_SERVICE)
        with contextlib.suppress(OSError):  # SELinux labels: only where the fs takes them
            os.setxattr(top / "marker", "security.selinux", b"system_u:object_r:var_run_t:s0\x00")
    # Times last (creating entries changed their directories' mtimes); leaves first.
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames + dirnames:
            set_times(os.path.join(dirpath, name))
    os.chown(top, uid, gid)
    top.chmod(0o751)
    set_times(top)


def state(pid: int, bundle: Path | str, /, **changes) -> dict:
    """The OCI state runc writes on a hook's stdin; a change to ``...`` removes that key."""
    doc = {"ociVersion": "1.0.2-dev", "id": f"t-{pid}", "status": "creating", "pid": pid, "bundle": str(bundle)}
    for key, value in changes.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def state_json(pid: int, bundle: Path | str, status: str = "creating", **changes) -> bytes:
    return json.dumps(state(pid, bundle, status=status, **changes)).encode()


def write_config(bundle: Path, mounts: list[dict] | None = None, root: str = "rootfs", **top) -> None:
    config = {"ociVersion": "1.0.2", "root": {"path": root}, "mounts": mounts or []}
    config.update(top)
    (bundle / "config.json").write_text(json.dumps(config))


# -- busybox bundles for runc ----------------------------------------------------------


def busybox() -> str:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path):
            return path
    skip_or_fail("busybox-static is not installed (apt-get install busybox-static)")


def make_busybox_rootfs(rootfs: Path) -> None:
    for d in ("bin", "proc", "dev", "sys", "etc"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox(), rootfs / "bin" / "busybox")
    for tool in ("sh", "sleep", "cat", "ls", "stat"):
        os.symlink("busybox", rootfs / "bin" / tool)
    # A 0700 top (as mktemp -d makes) breaks unprivileged tools in the container.
    rootfs.chmod(0o755)


def runc_bundle(bundle: Path, *, tmpfs_mounts: list[tuple[str, list[str]]], hook_args: list[str] | None,
                stage: str = "prestart", process: list[str] | None = None, extra_mounts=None) -> None:
    """A config.json with runc's defaults, our tmpfs mounts and (optionally) the hook."""
    bundle.chmod(0o755)
    config = runc_spec(bundle, process or ["sleep", "600"], readonly=False)
    for dest, options in tmpfs_mounts:
        config["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": options})
    config["mounts"] += extra_mounts or []
    if hook_args is not None:
        argv = ["python3", *HOOK_ARGV[1:], "--stage", stage, *hook_args]
        config["hooks"] = {stage: [{"path": HOOK_ARGV[0], "args": argv, "timeout": 30}]}
    (bundle / "config.json").write_text(json.dumps(config, indent=1))


# -- cgroups ------------------------------------------------------------------------------------

# The mount tables of the three kinds of host, as /proc/self/mountinfo shows them.
MOUNTINFO_HYBRID = b"""\
22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
MOUNTINFO_LEGACY = b"".join(line + b"\n" for line in MOUNTINFO_HYBRID.splitlines() if b"cgroup2" not in line)
MOUNTINFO_PURE_V2 = b"""\
22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
31 22 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
MOUNTINFO_NO_CGROUPS = b"22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n"
