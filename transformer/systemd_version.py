"""Which systemd the image holds: a fact read from the rootfs, never guessed.

The cgroup view a container can have depends on it: systemd 258 dropped cgroup v1, and
its PID 1 exits with 255 ("Detected unsupported legacy cgroup hierarchy, refusing
execution", printed only on a terminal) when /sys/fs/cgroup is not cgroup2.

Every systemd build ships its private library as libsystemd-shared-<version>.so next to
its helpers, and the file name is the cheapest reliable witness of the version (a
directory listing, no file read). Where it lives differs between distributions:
/usr/lib/systemd (Debian up to 11, Arch), /usr/lib/<multiarch>/systemd (Debian 12 and
later), /usr/lib64/systemd (Fedora, whose name carries the release as well:
libsystemd-shared-256.11-1.fc41.so).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .rootfs import RootfsView

_LIBRARY = re.compile(r"^libsystemd-shared-([0-9]+)(?:[.~_-][^/]*)?\.so$")
# Debian's multiarch triplets (x86_64-linux-gnu, aarch64-linux-gnu, arm-linux-gnueabihf).
_MULTIARCH = re.compile(r"^[a-z0-9_]+-linux-[a-z0-9_]+$")
_DIRECTORIES = ("/usr/lib/systemd", "/usr/lib64/systemd", "/lib/systemd", "/lib64/systemd")


class SystemdVersion(NamedTuple):
    version: int
    evidence: str  # the library's path inside the rootfs

    def __str__(self) -> str:
        return f"{self.version} ({self.evidence})"


def systemd_version(rootfs: RootfsView) -> SystemdVersion | None:
    """The image's systemd version, or None when the rootfs shows no systemd library
    (no rootfs at hand, a static build, or not systemd at all)."""
    directories = list(_DIRECTORIES)
    directories += [f"/usr/lib/{name}/systemd" for name in rootfs.names("/usr/lib") if _MULTIARCH.match(name)]
    found: list[SystemdVersion] = []
    seen: set[str] = set()
    for directory in directories:
        resolved = rootfs.destination(directory)
        if resolved in seen:  # /lib -> usr/lib: one directory, looked at once
            continue
        seen.add(resolved)
        for name in rootfs.names(resolved):
            match = _LIBRARY.match(name)
            if match:
                found.append(SystemdVersion(int(match.group(1)), f"{directory}/{name}"))
    # Two libraries would be a half-finished upgrade; the newer one is what PID 1 loads
    # after the next package configuration, and the stricter one for the cgroup rules.
    return max(found, default=None)
