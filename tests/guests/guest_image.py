"""The test host's disk: a debootstrapped Debian with its own kernel, runc and this
project's dependencies, cached outside the repository as a raw ext4 image.

A guest is a real host for the e2e cells that this machine cannot be: a pure cgroup v2
host with controllers, a legacy v1 host (tmpfs on /sys/fs/cgroup, no unified hierarchy),
and an unprivileged user running runc.  Its kind is chosen on the kernel command line at
boot (qemu.py), so one disk serves every kind.

``ensure_guest()`` returns a ``GuestDisk`` (root image, kernel, initrd).  The files are
named by a key of everything that determines their content (the package list, the
pinned dependencies baked into /opt/oci-systemd, and FORMAT, bumped when ``_configure``
changes); a matching set is reused, a missing one is built under a temporary name and
renamed into place under a lock, as rootfs_cache does for the container images.

The project itself is not baked in: every guest run installs the checkout's own wheel
(``project_wheel``) offline, so the disk survives commits.  The dependency wheels are
fetched on the host with ``pip download`` (PyPI, or pip's cache) and installed into the
guest's venv at build time, never from the network inside the guest.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("OCI_SYSTEMD_ROOTFS_CACHE", "/var/cache/oci-systemd"))
RELEASE = "bookworm"  # the host's own release: Debian's 6.1 kernel and systemd 252
MIRROR = "http://deb.debian.org/debian"
# A kernel, an init that takes systemd.unified_cgroup_hierarchy=, runc, python3 for the
# project, uidmap (newuidmap/newgidmap) for rootless runc with more than one id range.
PACKAGES: tuple[str, ...] = (
    "linux-image-amd64", "systemd", "systemd-sysv", "dbus", "udev", "kmod", "e2fsprogs",
    "runc", "python3", "python3-venv", "uidmap", "procps",
)
FORMAT = 1  # bump when _configure changes what it writes
VENV = "/opt/oci-systemd"  # the guest's venv: dependencies baked in, the project per run
SHARE_TAG = "ocisystemd"  # the 9p share's mount tag (qemu.py)
TESTER = ("tester", 1000)  # the unprivileged user of the rootless cell
SUBID_START, SUBID_COUNT = 100000, 65536  # its /etc/subuid and /etc/subgid range
DISK_SLACK = 3 << 30  # free space on the root disk: container layers, journals, a venv


class GuestUnavailable(RuntimeError):
    """No cached guest disk and no way to build one."""


@dataclass(frozen=True)
class GuestDisk:
    root: Path  # raw ext4 image of the guest's /
    kernel: Path
    initrd: Path


def dependency_requirements() -> list[str]:
    """What the guest's venv needs besides the project: exactly what this venv has (its
    dependencies and the test extra, pinned), so that the guest tests what the host does
    and the disk's key stays put until the venv changes."""
    p = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                       capture_output=True, text=True)
    pins = sorted(line for line in p.stdout.splitlines() if "==" in line and not line.startswith("oci-systemd"))
    if p.returncode != 0 or not pins:
        raise GuestUnavailable(f"pip freeze failed: {p.stderr.strip()[-300:]}")
    return pins


def download_wheels(dest: Path, requirements: list[str]) -> list[Path]:
    """``pip download`` binary wheels for this Python's version (the guest's python3 is the
    same 3.11); only on the host, from PyPI or pip's cache."""
    dest.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                        "--dest", str(dest), *requirements], capture_output=True, text=True)
    if p.returncode != 0:
        raise GuestUnavailable(f"pip download of the guest's wheels failed: {p.stderr.strip()[-500:]}")
    return sorted(dest.glob("*.whl"))


def project_wheel(dest: Path) -> Path:
    """Build this checkout's wheel into ``dest`` (no network: the venv's own setuptools)."""
    dest.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(dest), str(REPO)], capture_output=True, text=True)
    if p.returncode != 0:
        raise GuestUnavailable(f"building the project's wheel failed: {p.stderr.strip()[-500:]}")
    wheels = sorted(dest.glob("oci_systemd-*.whl"))
    if len(wheels) != 1:
        raise GuestUnavailable(f"expected one project wheel in {dest}, found {wheels}")
    return wheels[0]


def _key(pins: list[str]) -> str:
    material = {"release": RELEASE, "mirror": MIRROR, "packages": sorted(PACKAGES),
                "pins": sorted(pins), "format": FORMAT, "arch": os.uname().machine}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _paths(key: str) -> GuestDisk:
    stem = CACHE_DIR / f"guest-{RELEASE}-{key}"
    return GuestDisk(Path(f"{stem}.ext4"), Path(f"{stem}.vmlinuz"), Path(f"{stem}.initrd"))


def _complete(disk: GuestDisk) -> bool:
    return all(p.is_file() for p in (disk.root, disk.kernel, disk.initrd))


def cannot_build_reason() -> str | None:
    if os.geteuid() != 0:
        return "building the guest disk needs root (debootstrap, chroot)"
    for tool in ("debootstrap", "mkfs.ext4", "chroot"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    return None


def ensure_guest() -> GuestDisk:
    """The cached guest disk, built first if there is none for today's key."""
    pins = dependency_requirements()
    key = _key(pins)
    disk = _paths(key)
    if _complete(disk):
        return disk  # no network needed: the pins name the wheels baked in
    why = cannot_build_reason()
    if why:
        raise GuestUnavailable(f"no cached guest disk {disk.root.name} and cannot build it: {why}")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"guest-{RELEASE}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building the same key
        if _complete(disk):
            return disk
        build = Path(tempfile.mkdtemp(prefix=f".build-guest-{key}-", dir=CACHE_DIR))
        try:
            wheels = download_wheels(build / "wheels", pins)  # a fresh directory: exactly the pins
            tree = build / "root"
            log = CACHE_DIR / f"guest-{RELEASE}-{key}.debootstrap.log"
            argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), RELEASE, str(tree), MIRROR]
            with open(log, "w") as logf:
                rc = subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                raise GuestUnavailable(f"debootstrap of the guest failed (rc={rc}); see {log}")
            _configure(tree, wheels)
            partial = GuestDisk(*(p.with_name("." + p.name + ".partial") for p in (disk.root, disk.kernel, disk.initrd)))
            shutil.copyfile(_one(tree, "boot/vmlinuz-*"), partial.kernel)
            shutil.copyfile(_one(tree, "boot/initrd.img-*"), partial.initrd)
            make_ext4(tree, partial.root, label="guestroot", slack=DISK_SLACK)
            for src, dst in zip((partial.kernel, partial.initrd, partial.root), (disk.kernel, disk.initrd, disk.root)):
                os.rename(src, dst)  # the root image last: _complete() sees all three or not
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", str(build)], check=False)
            for p in CACHE_DIR.glob(f".guest-{RELEASE}-{key}.*.partial"):
                p.unlink()
    return disk


def _one(tree: Path, pattern: str) -> Path:
    found = sorted(tree.glob(pattern))
    if len(found) != 1:
        raise GuestUnavailable(f"expected one {pattern} in the guest tree, found {[p.name for p in found]}")
    return found[0]


def make_ext4(tree: Path, image: Path, *, label: str, slack: int) -> None:
    """An ext4 image holding ``tree`` (owners, modes, xattrs kept) with ``slack`` bytes
    free, made by ``mkfs.ext4 -d``: no loop device, no mount."""
    used = int(subprocess.run(["du", "-sxb", str(tree)], capture_output=True, text=True, check=True).stdout.split()[0])
    size = (used * 13 // 10 + slack) // (1 << 20) + 64  # MiB: ext4's metadata plus the slack
    image.unlink(missing_ok=True)
    p = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0", "-d", str(tree),
                        str(image), f"{size}M"], capture_output=True, text=True)
    if p.returncode != 0:
        raise GuestUnavailable(f"mkfs.ext4 -d {tree} failed: {p.stderr.strip()}")


# What runs in the guest at boot: mount the share, run the script the host put there,
# power off.  The script's own output and exit status go back through the share.
_RUNNER = f"""#!/bin/sh
# oci-systemd test guest: run /mnt/share/inside.sh once, then power off
mkdir -p /mnt/share
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {SHARE_TAG} /mnt/share; then
    if [ -f /mnt/share/inside.sh ]; then
        sh /mnt/share/inside.sh >/mnt/share/out/inside.log 2>&1
        echo $? >/mnt/share/out/rc
    fi
    sync
    umount /mnt/share
fi
systemctl --no-block poweroff
"""

_UNIT = """[Unit]
Description=oci-systemd test guest: run the host's script from the 9p share, then power off
After=basic.target systemd-user-sessions.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/oci-systemd-guest
StandardOutput=journal+console
StandardError=journal+console
[Install]
WantedBy=multi-user.target
"""


def _configure(tree: Path, wheels: list[Path]) -> None:
    """Make the debootstrapped tree a test host: the runner unit, a quiet boot, the
    unprivileged user with a subordinate id range, and the dependencies in a venv."""
    (tree / "etc/hostname").write_text("oci-systemd-guest\n")
    (tree / "etc/fstab").write_text("# the root file system is mounted read-write by the kernel (root=, rw)\n")
    runner = tree / "usr/local/sbin/oci-systemd-guest"
    runner.write_text(_RUNNER)
    runner.chmod(0o755)
    (tree / "etc/systemd/system/oci-systemd-guest.service").write_text(_UNIT)
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "oci-systemd-guest.service").symlink_to("/etc/systemd/system/oci-systemd-guest.service")
    # Timers that would start work in the middle of a test (apt's, e2scrub's, fstrim's),
    # and the serial getty that would fight the runner for the console.
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
                 "serial-getty@ttyS0.service", "getty@tty1.service"):
        (tree / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (tree / "etc/systemd/system" / unit).symlink_to("/dev/null")
    name, uid = TESTER
    subprocess.run(["chroot", str(tree), "useradd", "--create-home", "--uid", str(uid), "--user-group",
                    "--shell", "/bin/sh", name], check=True, capture_output=True)
    for f in ("etc/subuid", "etc/subgid"):
        (tree / f).write_text(f"{name}:{SUBID_START}:{SUBID_COUNT}\n")
    staged = tree / "tmp/wheels"
    staged.mkdir()
    for w in wheels:
        shutil.copy2(w, staged / w.name)
    try:
        subprocess.run(["chroot", str(tree), "python3", "-m", "venv", VENV], check=True, capture_output=True)
        p = subprocess.run(["chroot", str(tree), f"{VENV}/bin/pip", "install", "--quiet", "--no-index",
                            "--find-links", "/tmp/wheels", *(f"/tmp/wheels/{w.name}" for w in wheels)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise GuestUnavailable(f"installing the wheels into the guest's venv failed: {p.stderr.strip()[-500:]}")
    finally:
        shutil.rmtree(staged)
