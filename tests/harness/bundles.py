"""Bundles: a small systemd bundle for the CLI's tests, and the images and bundles of
the end-to-end matrix.

``make_systemd_bundle`` is a bundle whose PID 1 is systemd as far as the transformer can
tell (/sbin/init -> /lib/systemd/systemd, an empty file) with runc's default config: what
a test of the CLI, of batches or of the write path needs, made in a millisecond.

An ``Image`` is one release's debootstrapped tree (minimal, or with Debian's services),
unpacked once and kept for later sessions (rootfs_cache.cached_tree), with markers added
to its /run and /tmp (the content a copy-up must carry into the tmpfs).  It stays pristine: every bundle's rootfs is an
overlay with the image as its read-only lower layer (or a ``cp -a`` copy), so anything
written through a bundle's rootfs lands in the overlay's upper directory, and
``layer_changes`` lists it: the proof that the tool left the image alone, without
hashing the tree (a services image is 1.1 GB).

A bundle is made the way issue 4 says: ``runc spec``, then args, terminal and
root.readonly set, then the project's own CLI (``python3 -m transformer apply``).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import rootfs_cache, runc_harness, runner, userns
from tests.harness.paths import GOLDEN, HOOK_SCRIPT


def make_systemd_bundle(path: Path, config: dict | None = None) -> Path:
    """A bundle at ``path`` whose PID 1 is systemd (/sbin/init -> /lib/systemd/systemd),
    with runc's default config (golden/runc-spec-init) or ``config``."""
    (path / "rootfs" / "lib" / "systemd").mkdir(parents=True)
    (path / "rootfs" / "sbin").mkdir()
    (path / "rootfs" / "lib" / "systemd" / "systemd").write_text("")
    os.symlink("/lib/systemd/systemd", path / "rootfs" / "sbin" / "init")
    if config is None:
        shutil.copy(GOLDEN / "runc-spec-init" / "config.json", path / "config.json")
    else:
        (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


# The image content a copy-up must carry into the container's tmpfs.  Directory, file,
# setuid file, symlink and hardlink, with an owner that is not root, a fixed mtime with
# nanoseconds and a user xattr.  No FIFO: runc's native tmpcopyup refuses to start with
# one (issue 3), and the native cases use the same image.
MARKER_DIR = "oci-systemd-e2e"
MARKER_UID, MARKER_GID = 1234, 2345
MARKER_MTIME_NS = 981_173_106_123_456_789  # 2001-02-03 04:05:06.123456789 UTC
MARKER_XATTR = ("user.oci-systemd-e2e", b"marker")
MARKED_TMPFS = ("/run", "/tmp")
# Bump when add_markers or the ownership shift changes what an Image's tree holds: the
# trees kept by rootfs_cache.cached_tree are made again.
IMAGE_FORMAT = 1


def add_markers(rootfs: Path) -> None:
    for top in MARKED_TMPFS:
        d = rootfs / top.lstrip("/") / MARKER_DIR
        d.mkdir()
        f = d / "marker"
        f.write_text(f"content of {top} in the image\n")
        os.chown(f, MARKER_UID, MARKER_GID)
        os.chmod(f, 0o640)
        os.setxattr(f, *MARKER_XATTR)
        s = d / "setuid"
        s.write_bytes(b"#!/bin/sh\n")
        os.chmod(s, 0o4755)
        os.link(f, d / "hardlink")
        os.symlink("marker", d / "link")
        for p in (f, s, d / "link"):
            os.utime(p, ns=(MARKER_MTIME_NS, MARKER_MTIME_NS), follow_symlinks=False)
        os.chown(d, MARKER_UID, MARKER_GID)
        os.chmod(d, 0o750)
        os.utime(d, ns=(MARKER_MTIME_NS, MARKER_MTIME_NS))


@dataclass
class Image:
    release: str
    rootfs: Path
    # Not taken any more (layer_changes proves the image untouched); tests/guests still
    # pass one positionally.
    manifest: dict = field(default_factory=dict)
    flavour: str = "minimal"  # rootfs_cache.FLAVOURS
    id_offset: int = 0  # every owner in the tree is the image's own plus this (see userns.py)
    # or, when the tree was mapped by ranges (userns.map_owners): (containerID, hostID, size)
    id_map: tuple[tuple[int, int, int], ...] = ()

    def container_id(self, host_id: int) -> int:
        """The image's own id of an owner that the tree on the host has as ``host_id``."""
        for container, host, size in self.id_map:
            if host <= host_id < host + size:
                return container + host_id - host
        return host_id - self.id_offset

    @classmethod
    def cached(cls, release: str, flavour: str = "minimal", id_offset: int = 0) -> "Image":
        """``release``'s image of that flavour, with the markers; with ``id_offset``, a copy
        whose owners are all moved up by it (the tree a container whose user namespace maps
        0 -> ``id_offset`` needs).  Made once, then kept (rootfs_cache.cached_tree)."""
        tarball = rootfs_cache.ensure_tarball(rootfs_cache.image_spec(release, flavour))
        if id_offset:
            base = cls.cached(release, flavour)

            def make(dest: Path) -> None:
                base.copy_to(dest)
                userns.shift_owners(dest, id_offset)
        else:
            def make(dest: Path) -> None:
                rootfs_cache.unpack(tarball, dest)
                add_markers(dest)

        name = f"{release}-{flavour}" + (f"+{id_offset}" if id_offset else "")
        key = {"tarball": tarball.name, "format": IMAGE_FORMAT, "id_offset": id_offset}
        return cls(release, rootfs_cache.cached_tree(name, key, make), flavour=flavour, id_offset=id_offset)

    def copy_to(self, dest: Path) -> Path:
        # cp -a keeps modes, owners, times, xattrs and hardlinks; no hardlinks INTO the image
        subprocess.run(["cp", "-a", str(self.rootfs), str(dest)], check=True)
        return dest

    def layer_to(self, dest: Path, scratch: Path) -> Path:
        """Mount an overlay at ``dest`` with this image as its only lower layer, and
        ``scratch``/upper and ``scratch``/work (empty, same file system) for what the
        container writes: a private writable tree in milliseconds, where ``copy_to`` takes
        seconds (a services image is 1.1 GB).  The image is never written through it.
        ``unmount_layer(dest)`` undoes it (remove_bundle does)."""
        upper, work = scratch / "upper", scratch / "work"
        for d in (dest, upper, work):
            d.mkdir(parents=True)
        # The tree's top directory is the upper one's: give it the image's own metadata, so
        # that the merged tree's top is the image's (layer_changes compares the two).
        st = os.lstat(self.rootfs)
        os.chown(upper, st.st_uid, st.st_gid)
        os.chmod(upper, stat.S_IMODE(st.st_mode))
        os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns))
        options = f"lowerdir={self.rootfs},upperdir={upper},workdir={work}"
        # mount -n: nothing is written to the host's /run/mount/utab
        subprocess.run(["mount", "-n", "-t", "overlay", "overlay", "-o", options, str(dest)],
                       check=True, capture_output=True, text=True)
        return dest


def image_systemd_version(rootfs: Path) -> int:
    """The systemd major version of a Debian tree, from its libsystemd-shared-NNN.so."""
    found = sorted(rootfs.glob("usr/lib/*/systemd/libsystemd-shared-*.so")) + \
        sorted(rootfs.glob("usr/lib/systemd/libsystemd-shared-*.so"))
    assert found, f"no libsystemd-shared in {rootfs}"
    return int(re.search(r"libsystemd-shared-(\d+)", found[-1].name).group(1))


def unmount_layer(rootfs: Path) -> None:
    """Unmount what ``Image.layer_to`` mounted at ``rootfs``; nothing if it is no mount.
    Still busy (a container that could not be deleted): detached (umount -l), so that the
    cleanup goes on and the first failure stays the one reported."""
    if os.path.ismount(rootfs):
        if subprocess.run(["umount", "-n", str(rootfs)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-n", "-l", str(rootfs)], check=True, capture_output=True, text=True)


def runc_spec(bundle: Path, args: list[str], *, readonly: bool) -> dict:
    """Write ``runc spec``'s default config into ``bundle`` with our args; return it."""
    subprocess.run([runc_harness.RUNC, "spec", "--bundle", str(bundle)], check=True)
    path = bundle / "config.json"
    cfg = json.loads(path.read_text())
    cfg["process"]["args"] = args
    cfg["process"]["terminal"] = False
    cfg["root"]["readonly"] = readonly
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return cfg


def make_bundle(image: Image, bundle: Path, args: list[str], *, readonly: bool = False,
                layered: bool = True) -> Path:
    """``layered``: the rootfs is an overlay on the image (Image.layer_to), its upper and
    work directories in ``bundle``/.rootfs-layer; else a ``cp -a`` copy of the image."""
    bundle.mkdir(parents=True)
    if layered:
        image.layer_to(bundle / "rootfs", bundle / LAYER_SCRATCH)
    else:
        image.copy_to(bundle / "rootfs")
    runc_spec(bundle, args, readonly=readonly)
    return bundle


LAYER_SCRATCH = ".rootfs-layer"


def layer_upper(bundle: Path) -> Path:
    """What a layered bundle's container (or a tool) wrote to its rootfs."""
    return bundle / LAYER_SCRATCH / "upper"


def layer_changes(bundle: Path, image: Image) -> list[str]:
    """What was written through a layered bundle's rootfs: each entry of the overlay's
    upper directory (a new file, a changed one, a changed owner, mode, time or xattr,
    a removal: overlayfs copies up or whites out every one), and the rootfs top itself,
    which is the upper directory (Image.layer_to gave it the image's own metadata)."""
    upper = layer_upper(bundle)
    changes = sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))
    top, want = os.lstat(upper), os.lstat(image.rootfs)
    if (top.st_mode, top.st_uid, top.st_gid, top.st_mtime_ns) != (want.st_mode, want.st_uid, want.st_gid,
                                                                   want.st_mtime_ns):
        changes.insert(0, ". (the rootfs's own mode, owner or mtime)")
    return changes


def cli(*args: str, check: bool = True, cgroup_v2_namespace: bool = False) -> subprocess.CompletedProcess:
    """``oci-systemd ARGS`` (runner.cli), its output as text; ``check``: fail on a non-zero
    exit.  ``cgroup_v2_namespace``: run it where runc_harness's v2 containers run (cgroup2
    on /sys/fs/cgroup), so that ``--cgroup auto`` probes a v2 host."""
    prefix = runc_harness.CGROUP2_NAMESPACE if cgroup_v2_namespace else ()
    r = runner.cli(*args, prefix=prefix, timeout=60)
    p = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())
    if check and p.returncode != 0:
        raise AssertionError(f"oci-systemd {' '.join(args)} -> rc={p.returncode}\n{p.stdout}{p.stderr}")
    return p


def apply(bundle: Path, *, cgroup: str | None, copy_up: str | None, hook_path: Path | None = None,
          extra: tuple[str, ...] = (), cgroup_v2_namespace: bool = False) -> dict:
    """hook mode without ``hook_path``: the tool's own default registration (this Python
    running transformer/copyup/hook.py); with it: ``--hook-path``, a plain program.
    ``cgroup`` or ``copy_up`` None: that option is not given (the tool's default)."""
    args = ["apply", str(bundle)]
    if cgroup is not None:
        args += ["--cgroup", cgroup]
    if copy_up is not None:
        args += ["--copy-up", copy_up]
    args += list(extra)
    if copy_up == "hook" and hook_path is not None:
        args += ["--hook-path", str(hook_path)]
    cli(*args, cgroup_v2_namespace=cgroup_v2_namespace)
    return json.loads((bundle / "config.json").read_text())


def apply_reviewed(bundle: Path, *options: str, cgroup_v2_namespace: bool = False) -> tuple[dict, dict[str, str]]:
    """``oci-systemd apply BUNDLE --diff OPTIONS...``: the written config, and the facts
    its review states ("cgroup view" -> "v1 (systemd 252 <= 257: ...)")."""
    out = cli("apply", str(bundle), "--diff", *options, cgroup_v2_namespace=cgroup_v2_namespace).stdout
    facts = {}
    for line in out.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and name in REVIEW_FACTS:
            facts[name] = value.strip()
    return json.loads((bundle / "config.json").read_text()), facts


REVIEW_FACTS = ("systemd", "systemd version", "cgroup host", "cgroup view", "user namespace", "copy-up")


def write_hook_wrapper(path: Path, *, measure_rss_to: Path | None = None) -> Path:
    """An absolute executable that runs this checkout's copy-up helper.  runc runs hooks
    with only the hook's own env (none here), so every path in it is absolute.
    ``measure_rss_to``: also record the helper's peak RSS (KiB) in that file."""
    helper = f"{sys.executable} -I {sh_quote(str(HOOK_SCRIPT))}"
    inner = f"exec {helper} \"$@\""
    if measure_rss_to is not None:
        inner = (f"exec {sys.executable} -I -c {sh_quote(_RSS_WRAPPER)} "
                 f"{sh_quote(str(measure_rss_to))} {helper} \"$@\"")
    path.write_text(f"#!/bin/sh\n# oci-systemd e2e: this checkout's copy-up helper\n{inner}\n")
    path.chmod(0o755)
    return path


# Runs argv[2:] with inherited stdin (the OCI state), then writes the child's peak RSS.
_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)


def sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


# ---- reading a running container from the host -----------------------------------------

def mountinfo_fstypes(mountinfo: str) -> dict[str, tuple[str, set[str]]]:
    """mount point -> (fstype, mount options) of the LAST mount on each point."""
    out = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        mount_point = fields[4].encode().decode("unicode_escape")
        opts = set(fields[5].split(","))
        out[mount_point] = (right.split()[0], opts)
    return out


def marker_problems(container_root: Path, top: str, image: Image, *, full_fidelity: bool) -> list[str]:
    """Compare ``<top>/oci-systemd-e2e`` inside a running container (seen from the host
    through /proc/<pid>/root) with the image's.  full_fidelity: the helper's promise
    (issue 3: owner, mode with setuid, mtime in ns, xattrs, symlinks, hardlinks); else
    runc's native tmpcopyup, which keeps content, owner, permission bits and symlinks
    and is documented to drop mtimes, xattrs, hardlinks and setuid."""
    problems = []
    src_dir = image.rootfs / top.lstrip("/") / MARKER_DIR
    dst_dir = container_root / top.lstrip("/") / MARKER_DIR
    if not dst_dir.is_dir():
        return [f"{top}/{MARKER_DIR} is missing in the container"]
    for name in ("", "marker", "setuid", "link", "hardlink"):
        s, d = (src_dir / name if name else src_dir), (dst_dir / name if name else dst_dir)
        where = f"{top}/{MARKER_DIR}/{name}".rstrip("/")
        try:
            ss, ds = os.lstat(s), os.lstat(d)
        except FileNotFoundError:
            problems.append(f"{where} is missing")
            continue
        mode_mask = 0o7777 if full_fidelity else 0o777
        checks = {
            "type": (stat.S_IFMT(ss.st_mode), stat.S_IFMT(ds.st_mode)),
            "mode": (oct(ss.st_mode & mode_mask), oct(ds.st_mode & mode_mask)),
            "owner": ((ss.st_uid, ss.st_gid), (ds.st_uid, ds.st_gid)),
        }
        if stat.S_ISREG(ss.st_mode):
            checks["content"] = (s.read_bytes(), d.read_bytes())
        if stat.S_ISLNK(ss.st_mode):
            checks["link target"] = (os.readlink(s), os.readlink(d))
        if full_fidelity:
            checks["mtime_ns"] = (ss.st_mtime_ns, ds.st_mtime_ns)
            if name == "marker":
                # before Linux 6.6 tmpfs has no user.* xattrs: the helper leaves them out
                want = os.getxattr(s, MARKER_XATTR[0]) if tmpfs_keeps_user_xattrs() else None
                checks["xattr"] = (want, _getxattr(d, MARKER_XATTR[0]))
        for what, (want, got) in checks.items():
            if want != got:
                problems.append(f"{where}: {what} {got!r}, image has {want!r}")
    if full_fidelity:
        m, h = dst_dir / "marker", dst_dir / "hardlink"
        if m.exists() and h.exists() and os.lstat(m).st_ino != os.lstat(h).st_ino:
            problems.append(f"{top}/{MARKER_DIR}: the hardlink pair became two files")
    return problems


@functools.cache
def tmpfs_keeps_user_xattrs() -> bool:
    """Whether this kernel's tmpfs takes user.* xattrs (Linux 6.6 and later), tried on a
    file in /dev/shm, a tmpfs."""
    with tempfile.NamedTemporaryFile(dir="/dev/shm") as f:
        try:
            os.setxattr(f.name, "user.oci-systemd-probe", b"1")
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return False
            raise
    return True


def _getxattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def remove_bundle(bundle: Path) -> None:
    """Remove a bundle and its rootfs copy or layer, never crossing into a mount left under it."""
    unmount_layer(bundle / "rootfs")
    if bundle.exists():
        rootfs_cache.remove_rootfs(bundle)
