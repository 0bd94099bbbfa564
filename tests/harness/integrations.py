"""The integration tests' plumbing: the real tools users run with oci-systemd (podman,
umoci, runc), the cached Debian tree, and a policy whose host paths are the test's own.

podman always runs with a private --root/--runroot under a temporary directory (vfs
driver, runc), so the host's own podman state is never read or touched. Every
container and image made here has a unique name and is removed in a finally.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

from tests.harness import bundles, rootfs_cache, runc_harness
from tests.harness.paths import PATCHES
from tests.harness.skips import require_root, skip_or_fail

RELEASE = "bookworm"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def debian_tarball() -> Path:
    """The cached debootstrapped tree (skip_or_fail when there is none and none can be built)."""
    require_root()
    spec = rootfs_cache.RootfsSpec(RELEASE)
    why = rootfs_cache.availability(spec)
    if why:
        skip_or_fail(f"no {RELEASE} rootfs: {why}")
    return rootfs_cache.ensure_tarball(spec)


def policy_with(tmp: Path, **journal: str) -> Path:
    """A copy of patches/ whose journal documents point into tmp (host mode never
    writes to the real /var/log/journal or /var/lib/oci-systemd in tests)."""
    policy = tmp / "policy"
    shutil.copytree(PATCHES, policy)
    doc = json.loads((policy / "journal.json").read_text())
    doc.update(journal)
    (policy / "journal.json").write_text(json.dumps(doc))
    return policy


class Podman:
    """podman 4.3.1 as PLATFORM.md says it runs here: vfs, runc, explicit ulimits,
    and its own storage under `base`."""

    # --network none: no bridge, no firewall rules on the host.
    RUN_FLAGS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none")

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.runroot = base / "runroot"
        self.containers: list[str] = []
        self.images: list[str] = []

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.root), "--runroot", str(self.runroot),
                "--storage-driver=vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--tmpdir", str(self.base / "tmp"),
                "--network-config-dir", str(self.base / "networks"), *args]

    def run(self, *args: str, timeout: float = 120, check: bool = True, stdin=None) -> subprocess.CompletedProcess:
        p = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, stdin=stdin)
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} -> rc={p.returncode}\n{p.stdout}{p.stderr}")
        return p

    def import_tarball(self, tarball: Path, *changes: str) -> str:
        name = unique("localhost/ocisd-integ")
        self.images.append(name)
        argv = self.argv("import", *[f"--change={c}" for c in changes], "-", name)
        decompress = subprocess.Popen(["zstd", "-dc", str(tarball)] if str(tarball).endswith(".zst")
                                      else ["gzip", "-dc", str(tarball)], stdout=subprocess.PIPE)
        try:
            p = subprocess.run(argv, stdin=decompress.stdout, capture_output=True, text=True, timeout=300)
        finally:
            decompress.stdout.close()
            decompress.wait()
        assert p.returncode == 0, p.stderr
        return name

    def new_name(self) -> str:
        name = unique("ocisd-integ")
        self.containers.append(name)
        return name

    def inspect(self, name: str) -> dict:
        return json.loads(self.run("inspect", name).stdout)[0]

    def oci_config(self, name: str) -> dict:
        """The config.json podman handed to runc (after every hook)."""
        return json.loads(Path(self.inspect(name)["OCIConfigPath"]).read_text())

    def wait_system_running(self, name: str, timeout: float = 60) -> str:
        return runc_harness.poll_system_running(
            lambda left: self.run("exec", name, "systemctl", "is-system-running", "--wait", check=False, timeout=left),
            timeout,
            # podman's own answer while the container is still being started
            transient=("can only create exec sessions",),
        )

    def cleanup(self) -> None:
        for name in self.containers:
            self.run("rm", "-f", "-t", "0", name, check=False, timeout=60)
        for image in self.images:
            self.run("rmi", "-f", image, check=False, timeout=60)
        self.run("system", "reset", "--force", check=False, timeout=120)
        for d in (self.root, self.runroot):
            rootfs_cache.remove_rootfs(d)


def runc_bundle(tarball: Path, bundle: Path) -> Path:
    """`runc spec` next to a fresh copy of the Debian tree, edited for /sbin/init the
    way the README's "Use with runc" does it."""
    rootfs_cache.unpack(tarball, bundle / "rootfs")
    bundles.runc_spec(bundle, ["/sbin/init"], readonly=False)
    return bundle
