"""Shared helpers of the tests/copyup suite (imported by name: tests/ has no __init__)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import uuid
from pathlib import Path

from support import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "transformer" / "copyup" / "main.py"
HOOK = REPO / "transformer" / "copyup" / "hook.py"
RUNC = shutil.which("runc") or "/usr/sbin/runc"

# The invocation the hooks of these tests register: the interpreter itself, isolated
# and without site (what docs/copyup.md recommends for speed), running hook.py.
HOOK_ARGV = [sys.executable, "-I", "-S", str(HOOK)]

FIXED_NS = 1_577_934_245_123_456_789  # 2020-01-02 03:04:05.123456789 UTC
OLD_ATIME_NS = 1_500_000_000_987_654_321

# security.capability v2: cap_net_bind_service (bit 10) permitted and effective.
CAP_NET_BIND_SERVICE = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


def set_times(path, atime_ns=OLD_ATIME_NS, mtime_ns=FIXED_NS):
    os.utime(path, ns=(atime_ns, mtime_ns), follow_symlinks=False)


def _open_noatime(path, flags):
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError:
        return os.open(path, flags)


def snapshot(top) -> dict:
    """Every property the helper promises to keep, for each entry below (and of) top.

    Reads with O_NOATIME, so taking a snapshot changes no atime. Hardlinks appear as
    the same "inode" label: the first path (sorted) of their inode.
    """
    top = os.fsencode(top)
    entries: dict[bytes, dict] = {}
    inodes: dict[tuple, bytes] = {}

    def visit(path: bytes, rel: bytes):
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        info = {
            "type": kind,
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns,
            "atime_ns": st.st_atime_ns,
        }
        try:
            keys = os.listxattr(path, follow_symlinks=False)
        except OSError:
            keys = []
        info["xattrs"] = {k: os.getxattr(path, k, follow_symlinks=False) for k in sorted(keys)}
        if kind == stat.S_IFLNK:
            info["target"] = os.readlink(path)
            # readlink(2) updates a symlink's atime (there is no O_NOATIME for it): put
            # it back, so that the snapshot itself does not change what it observes.
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        elif kind == stat.S_IFREG:
            fd = _open_noatime(path, os.O_RDONLY | os.O_NOFOLLOW)
            h = hashlib.sha256()
            with os.fdopen(fd, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            info["sha256"] = h.hexdigest()
            info["size"] = st.st_size
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if kind != stat.S_IFDIR and st.st_nlink > 1:
            info["inode"] = inodes.setdefault((st.st_dev, st.st_ino), rel)
        entries[rel] = info
        if kind == stat.S_IFDIR:
            fd = _open_noatime(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                names = sorted(os.listdir(fd))
            finally:
                os.close(fd)
            for name in names:
                name = os.fsencode(name)
                visit(path + b"/" + name, rel + b"/" + name if rel else name)

    visit(top, b"")
    # Labels depend on visiting order; sorted visiting makes them stable.
    return entries


def without_symlink_atimes(snap: dict) -> dict:
    """The helper's own readlink(2) of the image updates the image's symlink atimes."""
    return {
        rel: {k: v for k, v in info.items() if not (k == "atime_ns" and info["type"] == stat.S_IFLNK)}
        for rel, info in snap.items()
    }


def diff_snapshots(expected: dict, actual: dict) -> list[str]:
    out = []
    for rel in sorted(set(expected) | set(actual)):
        e, a = expected.get(rel), actual.get(rel)
        if e != a:
            out.append(f"{rel!r}:\n  expected {e}\n  actual   {a}")
    return out


def sha256_file(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


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


# -- tmpfs mounts of our own ----------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, options: str = "nodev"):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def private_tmpfs_holder(rootfs: Path, mounts: list[tuple[str, str]], extra: str = ""):
    """A process in its own mount namespace with a tmpfs on <rootfs><dest> for each
    (dest, options): a stand-in for runc's init at prestart time, without runc.
    Like runc, it creates a missing mount point (inside the parent tmpfs)."""
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


def state_json(pid: int, bundle: Path, status: str = "creating", **extra) -> bytes:
    doc = {"ociVersion": "1.0.2-dev", "id": f"t-{pid}", "status": status, "pid": pid, "bundle": str(bundle)}
    doc.update(extra)
    return json.dumps(doc).encode()


def write_config(bundle: Path, mounts: list[dict] | None = None, root: str = "rootfs", **top) -> None:
    config = {"ociVersion": "1.0.2", "root": {"path": root}, "mounts": mounts or []}
    config.update(top)
    (bundle / "config.json").write_text(json.dumps(config))


def run_helper(argv: list[str], stdin: bytes, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(HOOK_ARGV + argv, input=stdin, capture_output=True, timeout=timeout)


# -- runc -------------------------------------------------------------------------------


def busybox() -> str:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path):
            return path
    skip_or_fail("busybox-static is not installed (apt-get install busybox-static)")


def require_runc() -> None:
    if not os.path.exists(RUNC):
        skip_or_fail("runc is not installed")


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
    subprocess.run([RUNC, "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = process or ["sleep", "600"]
    config["root"]["readonly"] = False
    for dest, options in tmpfs_mounts:
        config["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": options})
    config["mounts"] += extra_mounts or []
    if hook_args is not None:
        config["hooks"] = {
            stage: [{"path": HOOK_ARGV[0], "args": ["python3"] + HOOK_ARGV[1:] + ["--stage", stage] + hook_args, "timeout": 30}]
        }
    (bundle / "config.json").write_text(json.dumps(config, indent=1))


# Run by `unshare -m` for a pure cgroup v2 view of this hybrid host (see
# tests/e2e/runc_harness.py): "$@" is the runc command line. Every runc command that
# touches cgroups (run, exec, delete) needs it; state and kill do not.
V2_VIEW = 'set -e; mount --make-rprivate /; umount -l /sys/fs/cgroup; mount -t cgroup2 none /sys/fs/cgroup; exec "$@"'


class Container:
    """runc run -d of a bundle under a unique id; always deleted on exit.

    cgroup_v2=True runs runc (and so its hooks) in a private mount namespace whose
    /sys/fs/cgroup is cgroup2: a pure v2 host, as far as runc and the helper can tell."""

    def __init__(self, bundle: Path, *, cgroup_v2: bool = False):
        self.bundle = bundle
        self.id = f"copyup-{uuid.uuid4().hex[:12]}"
        self.cgroup_v2 = cgroup_v2
        self.result: subprocess.CompletedProcess | None = None

    def argv(self, *args: str) -> list[str]:
        runc = [RUNC, *args]
        return ["unshare", "-m", "sh", "-c", V2_VIEW, "sh", *runc] if self.cgroup_v2 else runc

    def start(self) -> subprocess.CompletedProcess:
        # Files, not pipes: the detached container inherits runc's stdout and stderr,
        # and a pipe would never reach EOF while it runs.
        import tempfile

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(
                self.argv("run", "-d", "--bundle", str(self.bundle), self.id),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=90,
            )
            out.seek(0)
            err.seek(0)
            self.result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
        return self.result

    def exec(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv("exec", self.id, *cmd), capture_output=True, timeout=30)

    def pid(self) -> int:
        out = subprocess.run([RUNC, "state", self.id], capture_output=True, check=True).stdout
        return json.loads(out)["pid"]

    def root(self) -> Path:
        return Path(f"/proc/{self.pid()}/root")

    def delete(self) -> None:
        subprocess.run(self.argv("delete", "-f", self.id), capture_output=True, timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.delete()


# -- user namespaces without runc ---------------------------------------------------------

ID_MAP = "0 100000 65536"
SHIFT = 100000

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
                        gid_map: str | None = None, root_owned: bool = True):
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


def shift_owners(top: Path, by: int = SHIFT) -> None:
    """Add ``by`` to every owner below (and of) top, as an image prepared for a user
    namespace has them. Modes are put back (chown clears setuid and setgid)."""
    paths = [str(top)]
    for dirpath, dirnames, filenames in os.walk(top):
        paths += [os.path.join(dirpath, n) for n in dirnames + filenames]
    seen = set()
    for path in paths:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) in seen:  # a hardlink: its inode is shifted once
            continue
        seen.add((st.st_dev, st.st_ino))
        os.chown(path, st.st_uid + by, st.st_gid + by, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode))


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


def require_hybrid_host() -> None:
    """Root on a cgroup v1 hybrid host (this project's test machines): both the unified
    and the name=systemd hierarchy are mounted."""
    from support import require_root
    from transformer.copyup.bundle import NAMED_SYSTEMD, read_host_cgroup_hierarchies

    require_root()
    kinds = read_host_cgroup_hierarchies()
    if kinds != {"cgroup", "cgroup2", NAMED_SYSTEMD}:
        skip_or_fail(f"the host is not cgroup v1 hybrid ({sorted(kinds)})")
