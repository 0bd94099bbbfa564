"""tmpfs mounts of our own, and the processes that hold a container's mounts without
runc: what runc's init is at prestart time, when the copy-up helper runs."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from tests.harness.skips import require_root, skip_or_fail
from tests.harness.userns import HOST_ID, SIZE

# The id map of the user namespaces below, as /proc/<pid>/uid_map takes it.
ID_MAP = f"0 {HOST_ID} {SIZE}"


@contextlib.contextmanager
def tmpfs(path: Path, options: str = "nodev") -> Iterator[Path]:
    """A tmpfs of its own at ``path`` (a tiny one fills up, a remounted one is read-only),
    lazily unmounted on leaving."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode != 0:
        skip_or_fail("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def private_tmpfs_holder(rootfs: Path, mounts: list[tuple[str, str]], extra: str = "") -> Iterator[int]:
    """A process in its own mount namespace with a tmpfs on <rootfs><dest> for each
    (dest, options): a stand-in for runc's init at prestart time, without runc.
    Like runc, it creates a missing mount point (inside the parent tmpfs). Yields its pid
    once the mounts are made."""
    script = "".join(
        f"mkdir -p '{rootfs}{dest}' && mount -t tmpfs -o {opts} tmpfs '{rootfs}{dest}' || exit 9; "
        for dest, opts in mounts
    ) + extra
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script + "echo ready; exec sleep 120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"tmpfs holder failed: {proc.stderr.read()!r}")
        yield proc.pid
    finally:
        proc.kill()  # by the pid we started, never by name
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# Run by userns_tmpfs_holder: a process in a new user and mount namespace, as runc's
# init is at prestart time. util-linux mount refuses to run unless getuid() is 0, and
# this process's host uid 0 is not mapped, so it mounts with mount(2) itself, before
# any exec (a creator keeps its full capability set in the new namespace only until
# it execs). The tmpfs belongs to the new user namespace (its sb owner is the mounter's
# namespace): exactly what makes host root's writes fail with EOVERFLOW.
_HOLDER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(r, what=""):
    if r != 0:
        e = ctypes.get_errno()
        sys.stderr.write(f"{what}: {os.strerror(e)}\n")
        os._exit(9)
CLONE_NEWUSER, CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x10000000, 0x00020000, 0x4000, 0x40000
check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare")
sys.stdout.write("ns\n"); sys.stdout.flush()
sys.stdin.readline()  # the test has written uid_map and gid_map
check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
FLAGS = {"nosuid": 0x2, "nodev": 0x4, "noexec": 0x8}
for path, opts in zip(sys.argv[1::2], sys.argv[2::2]):
    # uid=0,gid=0 are read in the new namespace: the tmpfs root belongs to its root.
    flags = sum(FLAGS.get(o, 0) for o in opts.split(","))
    data = ",".join(o for o in opts.split(",") if o not in FLAGS)
    check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags, data.encode()), f"mount {path}")
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read()  # hold the mounts until the test closes our stdin
"""


@contextlib.contextmanager
def userns_tmpfs_holder(rootfs: Path, mounts: list[tuple[str, str]], uid_map: str = ID_MAP,
                        gid_map: str | None = None, root_owned: bool = True) -> Iterator[int]:
    """A process in its own user namespace (maps written like runc writes them) and
    mount namespace, with a tmpfs on <rootfs><dest> for each (dest, options), owned by
    the namespace's root unless root_owned is False (for maps without a root). The
    mount points must exist. Yields its pid."""
    argv = [sys.executable, "-I", "-S", "-c", _HOLDER]
    for dest, opts in mounts:
        argv += [f"{rootfs}{dest}", f"uid=0,gid=0,{opts}" if root_owned else opts]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if proc.stdout.readline() != b"ns\n":
            raise RuntimeError(f"user namespace holder failed: {proc.stderr.read()!r}")
        for name, text in (("uid_map", uid_map), ("gid_map", gid_map if gid_map is not None else uid_map)):
            with open(f"/proc/{proc.pid}/{name}", "w") as f:
                f.write(text + "\n")
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        if proc.stdout.readline() != b"ready\n":
            raise RuntimeError(f"user namespace holder failed: {proc.stderr.read()!r}")
        yield proc.pid
    finally:
        proc.kill()  # by the pid we started, never by name
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
