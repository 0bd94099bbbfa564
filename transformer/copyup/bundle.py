"""What the helper needs from the bundle: config.json, the rootfs, the destinations."""

from __future__ import annotations

import os
import stat

from transformer.copyup.jsonfast import loads
from transformer.errors import BundleError, ConfigError, OptionsError

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


def default_destinations(config: dict) -> list[str]:
    """tmpfs mounts of config.json on a DEFAULT_DESTINATIONS path, in mount order.

    Mounts that carry runc's own ``tmpcopyup`` option are left alone: the runtime has
    already copied into them, and two copies into one tmpfs would collide.
    """
    mounts = config.get("mounts") or []
    if not isinstance(mounts, list):
        raise ConfigError("must be a list", file="config.json", pointer="/mounts")
    found: list[str] = []
    for i, mount in enumerate(mounts):
        if not isinstance(mount, dict) or mount.get("type") != "tmpfs":
            continue
        dest = mount.get("destination")
        if not isinstance(dest, str):
            raise ConfigError("must be a string", file="config.json", pointer=f"/mounts/{i}/destination")
        dest = os.path.normpath(dest) if dest.startswith("/") else dest
        options = mount.get("options") or []
        if dest in DEFAULT_DESTINATIONS and "tmpcopyup" not in options and dest not in found:
            found.append(dest)
    return found
