"""Debootstrapped Debian root filesystems for the end-to-end suite, cached as tarballs.

A tree is built with ``debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus``
(the package list is configurable) and stored OUTSIDE the repository, by default under
``/var/cache/oci-systemd/``, as ``rootfs-<release>-<variant>-<key>.tar.<zst|gz>`` where
``<key>`` is a hash of everything that determines the tree's content (release, variant,
sorted package list, mirror, architecture).  A matching tarball is reused; a missing one
is built under a temporary name and renamed into place, so a half-written tarball is never
picked up, and concurrent builders serialise on a lock file.

For bookworm, an already debootstrapped tree at ``/var/cache/oci-systemd/build/bookworm-root``
is adopted instead of building, if it is complete and matches the key (see ``adoptable``).

``unpack`` gives every test its own fresh copy, with the top directory mode 0755 (a 0700
top breaks dbus and logind).  ``cached_tree`` keeps a tree that tests only read (the e2e
images) unpacked between sessions, under ``/var/cache/oci-systemd/trees/``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

CACHE_DIR = Path(os.environ.get("OCI_SYSTEMD_ROOTFS_CACHE", "/var/cache/oci-systemd"))
DEFAULT_PACKAGES: tuple[str, ...] = ("systemd", "systemd-sysv", "dbus")
DEFAULT_VARIANT = "minbase"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# release -> Debian major version (checked against /etc/debian_version when adopting a tree);
# sid's /etc/debian_version names the next release ("forky/sid"), not a number.
RELEASES: dict[str, str] = {"bullseye": "11", "bookworm": "12", "trixie": "13", "sid": "sid"}

# Debian's packaged services that the "services" images add to the minimal tree: a web
# server, two databases, two caches, a DNS server, a mail server, sshd, cron, syslog and
# systemd's own optional daemons. Names differ between releases: nginx-light is gone
# after bookworm, and systemd-resolved has its own package from bookworm on.
_SERVICES_COMMON: tuple[str, ...] = (
    "openssh-server", "postgresql", "mariadb-server", "redis-server", "memcached",
    "bind9", "postfix", "cron", "rsyslog", "systemd-timesyncd",
)
SERVICES: dict[str, tuple[str, ...]] = {
    "bullseye": _SERVICES_COMMON + ("nginx-light",),
    "bookworm": _SERVICES_COMMON + ("nginx-light", "systemd-resolved"),
    "trixie": _SERVICES_COMMON + ("nginx", "systemd-resolved"),
    "sid": _SERVICES_COMMON + ("nginx", "systemd-resolved"),
}


def services_packages(release: str) -> tuple[str, ...]:
    """The package list of ``release``'s services image (the minimal one plus SERVICES)."""
    return DEFAULT_PACKAGES + SERVICES[release]


# The kinds of image each release comes in: "minimal" (systemd and dbus) or "services".
FLAVOURS = ("minimal", "services")


def image_spec(release: str, flavour: str = "minimal") -> "RootfsSpec":
    """The RootfsSpec of ``release``'s image of that flavour."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; expected one of {FLAVOURS}")
    return RootfsSpec(release, packages=services_packages(release) if flavour == "services" else DEFAULT_PACKAGES)


# Trees built by hand earlier (outside this module) that may be adopted if they match.
ADOPTABLE_TREES: dict[str, Path] = {"bookworm": CACHE_DIR / "build" / "bookworm-root"}


class RootfsUnavailable(RuntimeError):
    """No cached tarball and no way to build one (no debootstrap, no network, not root)."""


def _host_arch() -> str:
    try:
        out = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.uname().machine


def _compression() -> tuple[str, list[str]]:
    """(file suffix, tar compression flags); zstd when available, else gzip."""
    if shutil.which("zstd"):
        return "zst", ["--zstd"]
    return "gz", ["--gzip"]


@dataclass(frozen=True)
class RootfsSpec:
    release: str
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    variant: str = DEFAULT_VARIANT
    mirror: str = DEFAULT_MIRROR
    arch: str = field(default_factory=_host_arch)

    def __post_init__(self) -> None:
        if self.release not in RELEASES:
            raise ValueError(f"unknown release {self.release!r}; expected one of {sorted(RELEASES)}")
        # normalise the package list so that order and duplicates do not change the key
        object.__setattr__(self, "packages", tuple(sorted(set(self.packages))))

    def key_material(self) -> dict:
        return {
            "release": self.release,
            "variant": self.variant,
            "packages": list(self.packages),
            "mirror": self.mirror,
            "arch": self.arch,
            "format": 1,
        }

    @property
    def key(self) -> str:
        blob = json.dumps(self.key_material(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def stem(self) -> str:
        return f"rootfs-{self.release}-{self.variant}-{self.key}"

    def debootstrap_argv(self, target: Path) -> list[str]:
        return [
            "debootstrap",
            f"--variant={self.variant}",
            f"--arch={self.arch}",
            "--include=" + ",".join(self.packages),
            self.release,
            str(target),
            self.mirror,
        ]


def find_tarball(spec: RootfsSpec, cache_dir: Path = CACHE_DIR) -> Path | None:
    for suffix in ("zst", "gz"):
        p = cache_dir / f"{spec.stem}.tar.{suffix}"
        if p.is_file():
            return p
    return None


def network_available(host: str = "deb.debian.org", port: int = 80, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _installed_packages(tree: Path) -> set[str]:
    status = tree / "var/lib/dpkg/status"
    try:
        text = status.read_text(errors="replace")
    except OSError:
        return set()
    installed = set()
    for stanza in text.split("\n\n"):
        name = re.search(r"^Package: (\S+)", stanza, re.M)
        state = re.search(r"^Status: (.+)$", stanza, re.M)
        if name and state and state.group(1).strip() == "install ok installed":
            installed.add(name.group(1))
    return installed


def adoptable(spec: RootfsSpec, tree: Path) -> bool:
    """True if ``tree`` looks like a COMPLETE debootstrap of ``spec``.

    Checks: debootstrap's work dir ``<tree>/debootstrap`` is gone (it is removed only at the
    end of a successful run), /etc/debian_version has the release's major version, every
    requested package is "install ok installed", and the sources.list names the mirror and
    release.  The variant cannot be read back from a tree; a tree built with a larger variant
    still satisfies the tests, so that is accepted.
    """
    if not tree.is_dir() or (tree / "debootstrap").exists():
        return False
    try:
        version = (tree / "etc/debian_version").read_text().strip()
    except OSError:
        return False
    major = RELEASES[spec.release]
    if not (version.split(".")[0] == major or version.startswith(spec.release)):
        return False
    if not set(spec.packages) <= _installed_packages(tree):
        return False
    try:
        sources = (tree / "etc/apt/sources.list").read_text()
    except OSError:
        return False
    return f"{spec.mirror.rstrip('/')} {spec.release} " in sources or f"{spec.mirror} {spec.release} " in sources


def _tar_create(tree: Path, dest: Path) -> None:
    _, flags = _compression()
    subprocess.run(
        ["tar", *flags, "--numeric-owner", "--xattrs", "--acls", "--one-file-system",
         "-C", str(tree), "-cf", str(dest), "."],
        check=True,
    )


def _rm_tree(path: Path) -> None:
    if path.exists() or path.is_symlink():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def ensure_tarball(
    spec: RootfsSpec,
    cache_dir: Path = CACHE_DIR,
    *,
    allow_build: bool = True,
    allow_adopt: bool = True,
) -> Path:
    """Return the cached tarball for ``spec``, adopting or building it if needed."""
    found = find_tarball(spec, cache_dir)
    if found:
        return found
    cache_dir.mkdir(parents=True, exist_ok=True)
    suffix, _ = _compression()
    final = cache_dir / f"{spec.stem}.tar.{suffix}"
    lock_path = cache_dir / f"{spec.stem}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another builder may be writing the same key
        found = find_tarball(spec, cache_dir)
        if found:
            return found
        tmp_tar = cache_dir / f".{spec.stem}.{os.getpid()}.partial.tar.{suffix}"
        try:
            adopt = ADOPTABLE_TREES.get(spec.release)
            if allow_adopt and adopt is not None and adoptable(spec, adopt):
                _tar_create(adopt, tmp_tar)
                origin = f"adopted {adopt}"
            else:
                why = _cannot_build_reason() if allow_build else "building disabled"
                if why:
                    raise RootfsUnavailable(f"no cached rootfs {final.name} and cannot build it: {why}")
                build_dir = Path(tempfile.mkdtemp(prefix=f".build-{spec.stem}-", dir=cache_dir))
                try:
                    tree = build_dir / "root"
                    log = cache_dir / f"{spec.stem}.debootstrap.log"
                    with open(log, "w") as logf:
                        rc = subprocess.run(spec.debootstrap_argv(tree), stdout=logf, stderr=subprocess.STDOUT).returncode
                    if rc != 0:
                        raise RootfsUnavailable(f"debootstrap {spec.release} failed (rc={rc}); see {log}")
                    _tar_create(tree, tmp_tar)
                finally:
                    _rm_tree(build_dir)
                origin = "debootstrap"
            meta = dict(spec.key_material(), key=spec.key, origin=origin)
            (cache_dir / f"{spec.stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
            os.rename(tmp_tar, final)  # atomic: readers see either nothing or the whole file
        finally:
            if tmp_tar.exists():
                tmp_tar.unlink()
    return final


def _cannot_build_reason() -> str | None:
    if os.geteuid() != 0:
        return "debootstrap needs root"
    if not shutil.which("debootstrap"):
        return "debootstrap is not installed"
    if not network_available():
        return "no network to reach the Debian mirror"
    return None


def availability(spec: RootfsSpec, cache_dir: Path = CACHE_DIR) -> str | None:
    """None if ``ensure_tarball`` can succeed without surprises, else a reason to skip."""
    if find_tarball(spec, cache_dir):
        return None
    adopt = ADOPTABLE_TREES.get(spec.release)
    if adopt is not None and adoptable(spec, adopt):
        return None
    return _cannot_build_reason()


def unpack(tarball: Path, dest: Path) -> Path:
    """Unpack ``tarball`` into ``dest`` (must not exist or be empty); top dir mode 0755."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    flags = ["--zstd"] if str(tarball).endswith(".zst") else ["--gzip"]
    subprocess.run(
        ["tar", *flags, "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
         "-C", str(dest), "-xpf", str(tarball)],
        check=True,
    )
    os.chmod(dest, 0o755)
    return dest


def fresh_rootfs(release: str, dest: Path, *, packages: tuple[str, ...] = DEFAULT_PACKAGES,
                 cache_dir: Path = CACHE_DIR) -> Path:
    """Convenience: ensure the tarball for ``release`` exists and unpack it into ``dest``."""
    spec = RootfsSpec(release, packages=packages)
    return unpack(ensure_tarball(spec, cache_dir), dest)


def remove_rootfs(path: Path) -> None:
    """Remove an unpacked tree without crossing into mounts left under it."""
    _rm_tree(Path(path))


def cached_tree(name: str, key_material: dict, make: Callable[[Path], None], cache_dir: Path = CACHE_DIR) -> Path:
    """The tree that ``make(dest)`` builds at ``dest``, made once and kept under
    ``cache_dir``/trees for later sessions: a session that unpacked its images (seconds
    each; a services image is 1.1 GB) and removed them at its end (longer still) spent
    minutes on trees that had not changed.

    Tests only read such a tree (an overlay's lower layer, the source of ``cp -a``).
    Every session checks it before its first use against a record of each entry's
    type, mode, owner, size, mtime and ctime, taken when it was made: no file can be
    written, chmod'ed, chown'ed, given an xattr, linked or renamed without a new ctime.
    A tree that differs is removed and made again.  Sessions serialise on a lock file,
    and a tree is made under a temporary name, then renamed into place."""
    blob = json.dumps({"name": name, **key_material}, sort_keys=True).encode()
    tree = cache_dir / "trees" / f"{name}-{hashlib.sha256(blob).hexdigest()[:16]}"
    record = tree.with_name(tree.name + ".record")
    tree.parent.mkdir(parents=True, exist_ok=True)
    with open(tree.with_name(tree.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tree.is_dir() and record.is_file() and record.read_text() == _stat_record(tree):
            return tree
        for stale in (tree, *tree.parent.glob(f".{tree.name}.*.partial")):
            _rm_tree(stale)
        partial = tree.with_name(f".{tree.name}.{os.getpid()}.partial")
        try:
            make(partial)
            os.rename(partial, tree)
        finally:
            _rm_tree(partial)
        record.write_text(_stat_record(tree))  # after the rename, which gives the top a new ctime
    return tree


def _stat_record(tree: Path) -> str:
    """A digest of every entry's path, type, mode, owner, size, mtime and ctime (one file
    system, sorted, symlinks not followed)."""
    h = hashlib.sha256()
    root_dev = os.lstat(tree).st_dev

    def add(rel: str, st: os.stat_result) -> None:
        h.update(repr((rel, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
                 .encode("utf-8", "surrogateescape"))

    def walk(path: str, rel: str) -> None:
        with os.scandir(path) as it:
            children = sorted(it, key=lambda e: e.name)
        for e in children:
            st = e.stat(follow_symlinks=False)
            add(f"{rel}/{e.name}", st)
            if stat.S_ISDIR(st.st_mode) and st.st_dev == root_dev:
                walk(e.path, f"{rel}/{e.name}")

    add(".", os.lstat(tree))
    walk(str(tree), ".")
    return h.hexdigest()


if __name__ == "__main__":  # python3 tests/harness/rootfs_cache.py bookworm [sid:services ...]
    import sys

    for name in sys.argv[1:] or ["bookworm"]:
        rel, _, flavour = name.partition(":")
        print(ensure_tarball(image_spec(rel, flavour or "minimal")))
