"""What the helper needs from the bundle: config.json, the rootfs, the destinations,
and whether the bundle's cgroup view fits this host."""

from __future__ import annotations

import os
import stat

from transformer.copyup.jsonfast import loads
from transformer.errors import BundleError, ConfigError, CopyUpError, OptionsError

# Used when the hook gets no DEST arguments (an oci-hooks(5) hooks.d file cannot know
# the bundle's mounts): copy into every tmpfs of config.json mounted on one of these.
DEFAULT_DESTINATIONS = (
    "/run",
    "/run/lock",
    "/tmp",
    "/var/log/journal",
    "/var/lib/systemd",
    "/var/tmp",
)

MAX_CONFIG_BYTES = 16 << 20


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
    """Read and decode <bundle>/config.json."""
    path = os.path.join(bundle, "config.json")
    try:
        # O_NONBLOCK: a FIFO named config.json must be refused, not wait for a writer
        # until the runtime's hook timeout.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BundleError("is not a regular file", file=path)
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if not os.path.isdir(bundle):
            raise BundleError("bundle directory does not exist", file=bundle) from None
        raise BundleError("no config.json in the bundle", file=path) from None
    except OSError as e:
        raise BundleError(f"cannot read: {e.strerror}", file=path) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", file=path)
    try:
        config = loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"malformed JSON: {e}", file=path) from None
    if not isinstance(config, dict):
        raise ConfigError("must be a JSON object", file=path)
    return config


def rootfs_of(bundle: str, config: dict) -> str:
    """realpath(bundle / root.path): the path runc mounts the container's rootfs on."""
    path = os.path.join(bundle, "config.json")
    root = config.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise ConfigError("must be an object with a non-empty string path", file=path, pointer="/root")
    rootfs = os.path.realpath(os.path.join(bundle, root["path"]))
    if not os.path.isdir(rootfs):
        raise BundleError("root.path is not a directory", file=rootfs)
    return rootfs


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


def default_destinations(config: dict) -> list[str]:
    """tmpfs mounts of config.json on a DEFAULT_DESTINATIONS path, in mount order.

    Mounts that carry runc's own ``tmpcopyup`` option are left alone: the runtime has
    already copied into them, and two copies into one tmpfs would collide.
    """
    found: list[str] = []
    for dest, mount in _mounts(config):
        if mount.get("type") != "tmpfs":
            continue
        options = mount.get("options") or []
        if dest in DEFAULT_DESTINATIONS and "tmpcopyup" not in options and dest not in found:
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
