"""What the helper sees of the bundle: config.json, the rootfs, the destinations to
copy into and the image's content at each (the source of a copy), and the cgroup
view config.json gives systemd, with the guard that this host can give it.

Every start needs all of it, so it is one module: each module on that path costs
start-up of its own (finding, reading and running its file).
"""

from __future__ import annotations

import errno
import os

from transformer.errors import ConfigError, CopyUpError, OptionsError, PolicyError
from transformer.fsguard import LIST, MAX_WRITTEN_CONFIG_BYTES, open_beneath, parse_json, read_config_file, rootfs_dir


def check_destination(dest: str) -> str:
    """A DEST must be an absolute, normalised container path other than /."""
    if not isinstance(dest, str) or not dest.startswith("/") or dest == "/":
        raise OptionsError(f"destination {dest!r}: must be an absolute path other than /")
    if "\0" in dest or os.path.normpath(dest) != dest or dest.startswith("//"):
        raise OptionsError(
            f"destination {dest!r}: must be normalised (no '.', '..', '//' or trailing '/')"
        )
    return dest


def load_config(bundle: str) -> dict:
    """<bundle>/config.json, read and decoded under the transformer's own rules."""
    path = os.path.join(bundle, "config.json")
    data, _ = read_config_file(path, limit=MAX_WRITTEN_CONFIG_BYTES, follow_symlinks=True)
    config = parse_json(data, path)
    if not isinstance(config, dict):
        raise ConfigError("must be an object", file=path, pointer="/")
    return config


def rootfs_of(bundle: str, config: dict) -> str:
    """The directory root.path names, as a real path: what the runtime mounts the
    container's rootfs on, and so what the container's mount table shows."""
    return os.path.realpath(rootfs_dir(bundle, config, os.path.join(bundle, "config.json")))


# -- the image side of a copy: <rootfs>/<dest> in the host's view ----------------------

# Reading the image's directories must not change their atime (root may O_NOATIME).
_LIST_NOATIME = LIST | (os.O_NOATIME if os.geteuid() == 0 else 0)


def components(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def walk(
    start_fd: int, parts: list[str], *, label: str, missing_ok: bool = False, noatime: bool = False
) -> int | None:
    """Open start_fd/parts[0]/.../parts[-1] as a readable directory, never following
    a symlink. Returns a new fd (caller closes), or None if missing and missing_ok."""
    try:
        return open_beneath(start_fd, parts, _LIST_NOATIME if noatime else LIST)
    except OSError as e:
        if e.errno == errno.ENOENT and missing_ok:
            return None
        raise CopyUpError(f"{label} {e.filename}: {e.strerror}") from None


def open_source(rootfs_fd: int, dest: str) -> int | None:
    """The image's <rootfs>/<dest> as a directory fd, or None if the image has none.

    A symlink anywhere on the way (say /run -> /etc) is refused, not followed: the
    content the user expects in /run is not there, and following it could read the
    host. A missing directory means nothing to copy.
    """
    return walk(rootfs_fd, components(dest), label="image path", missing_ok=True, noatime=True)


def is_empty_dir(fd: int) -> bool:
    with os.scandir(fd) as it:
        for _ in it:
            return False
    return True


# -- destinations and cgroup views in config.json --------------------------------------


def _mounts(config: dict):
    """(destination normalised, mount) for each object of config.json's mounts."""
    mounts = config.get("mounts") or []
    if not isinstance(mounts, list):
        raise ConfigError("must be a list", file="config.json", pointer="/mounts")
    for i, mount in enumerate(mounts):
        if not isinstance(mount, dict):
            continue
        dest = mount.get("destination")
        if not isinstance(dest, str):
            raise ConfigError("must be a string", file="config.json", pointer=f"/mounts/{i}/destination")
        yield (os.path.normpath(dest) if dest.startswith("/") else dest), mount


def policy_file(name: str) -> str:
    """A built-in policy document, where policy.default_policy_dir() finds it:
    transformer/patches in an installed wheel (pyproject.toml's package-dir), the
    checkout's patches/ otherwise. (os.path here: pathlib costs start-up.)"""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for directory in (os.path.join(package, "patches"), os.path.join(os.path.dirname(package), "patches")):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise PolicyError("the built-in policy (patches/) is not installed next to the package", file=package)


def policy_destinations() -> tuple[str, ...]:
    """The destinations patches/tmpfs.json mounts a tmpfs on and copies up into, with
    a read-only root: every destination a plan can give the helper. Read from the
    policy itself so that the two cannot drift apart, and only when the hook gets no
    DEST argument (an oci-hooks(5) hooks.d file cannot know the bundle's mounts)."""
    path = policy_file("tmpfs.json")
    doc = parse_json(read_config_file(path, follow_symlinks=True)[0], path)
    return tuple(
        mount["destination"]
        for section in ("mounts", "readonlyRoot")
        for mount in doc.get(section, ())
        if mount.get("copyUp")
    )


def default_destinations(config: dict) -> list[str]:
    """tmpfs mounts of config.json on a policy_destinations() path, in mount order.

    Mounts that carry runc's own ``tmpcopyup`` option are left alone: the runtime has
    already copied into them, and two copies into one tmpfs would collide.
    """
    defaults = policy_destinations()
    found: list[str] = []
    for dest, mount in _mounts(config):
        if mount.get("type") != "tmpfs":
            continue
        options = mount.get("options") or []
        if dest in defaults and "tmpcopyup" not in options and dest not in found:
            found.append(dest)
    return found


# The two ways a prepared bundle gives systemd a cgroup of its own (see cgroup.py).
UNIFIED = "unified"  # a cgroup2 mount on /sys/fs/cgroup: the container's unified cgroup
NAMED_SYSTEMD = "name=systemd"  # a bind on /sys/fs/cgroup/systemd: its name=systemd cgroup


def cgroup_views(config: dict) -> tuple[str, ...]:
    """Which cgroup hierarchies config.json shows systemd, in a fixed order.

    UNIFIED when the last mount on /sys/fs/cgroup (the one that wins) has type
    cgroup2; NAMED_SYSTEMD when any mount is on /sys/fs/cgroup/systemd (the bind of
    the container's own name=systemd directory). Empty for runc's default spec.
    """
    last_root_type = None
    named = False
    for dest, mount in _mounts(config):
        if dest == "/sys/fs/cgroup":
            last_root_type = mount.get("type")
        elif dest == "/sys/fs/cgroup/systemd":
            named = True
    return ((UNIFIED,) if last_root_type == "cgroup2" else ()) + ((NAMED_SYSTEMD,) if named else ())


# The host-kind guard runs on every start, so it lives here, in a module every start
# imports, and reads the mount table without mounts.py: only the filesystem type and
# the super options are needed, and neither the values compared ("cgroup2",
# "name=systemd") nor the separators (space, comma) are ever octal-escaped.
APPLY_AUTO = "prepare the bundle on this host (oci-systemd apply --cgroup auto)"


def host_cgroup_hierarchies(mountinfo: bytes) -> frozenset[str]:
    """Which kinds of cgroup hierarchy a mount table (/proc/<pid>/mountinfo) mounts:
    "cgroup2", "cgroup" (any v1 hierarchy) and NAMED_SYSTEMD."""
    kinds = set()
    for line in mountinfo.splitlines():
        after = line.partition(b" - ")[2].split(b" ")  # fstype, source, super options
        if after[0] == b"cgroup2":
            kinds.add("cgroup2")
        elif after[0] == b"cgroup":
            kinds.add("cgroup")
            if len(after) > 2 and b"name=systemd" in after[2].split(b","):
                kinds.add(NAMED_SYSTEMD)
    return frozenset(kinds)


def read_host_cgroup_hierarchies() -> frozenset[str]:
    """host_cgroup_hierarchies of the helper's own (the host's) mount table."""
    fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return host_cgroup_hierarchies(b"".join(chunks))


def check_host_kind(views: tuple[str, ...], host: frozenset[str]) -> None:
    """Refuse a bundle whose cgroup view this host (its cgroup hierarchies) cannot give:
    it was prepared on, or for, another kind of host."""
    if UNIFIED in views and "cgroup2" not in host:
        raise CopyUpError(
            "config.json mounts cgroup2 on /sys/fs/cgroup (prepared for a host with cgroup2), but this host has "
            + ("only cgroup v1 hierarchies" if "cgroup" in host else "no cgroup2 hierarchy mounted")
            + f": systemd would share the host's unified root; {APPLY_AUTO}"
        )
    if NAMED_SYSTEMD in views and NAMED_SYSTEMD not in host:
        raise CopyUpError(
            "config.json binds /sys/fs/cgroup/systemd (prepared for a cgroup v1 host), but this host has no "
            + ("name=systemd hierarchy (it is a pure cgroup v2 host)" if "cgroup" not in host else "name=systemd hierarchy")
            + f": systemd would find no cgroup of its own; {APPLY_AUTO}"
        )
