"""Real runc 1.1.5 containers with their own user namespace (0 -> 100000, 65536 ids)
and cgroup namespace: the helper copies /run as the container's root and delegates
the container's cgroup, for the v1 view (a bind of its name=systemd directory), the
unified view (cgroup2 on /sys/fs/cgroup) on this hybrid host, and a pure v2 host."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.harness.checks import require_hybrid_host
from tests.harness.copyup import FIXED_NS, make_busybox_rootfs, runc_bundle, set_times
from tests.harness.runc_harness import RuncContainer, require_runc
from tests.harness.userns import HOST_ID as HOST
from tests.harness.userns import SIZE, shift_owners

pytestmark = [pytest.mark.root, pytest.mark.e2e]

TMPFS_OPTS = ["nosuid", "nodev", "mode=755"]


@pytest.fixture
def bundle():
    require_hybrid_host()
    require_runc()
    # The container's root (host 100000) must reach its rootfs, and pytest's own
    # directories are 0700 host root's, which the namespace does not map.
    top = Path(tempfile.mkdtemp(prefix="copyup-userns-", dir="/var/tmp"))
    try:
        top.chmod(0o711)
        b = top / "bundle"
        b.mkdir()
        yield _image(b)
    finally:
        shutil.rmtree(top)


def _image(b: Path) -> Path:
    rootfs = b / "rootfs"
    make_busybox_rootfs(rootfs)
    log = rootfs / "run" / "log"
    log.mkdir(parents=True)
    f = log / "f"
    f.write_bytes(b"owned by 1234\n")
    os.chown(f, 1234, 1235)
    f.chmod(0o640)
    set_times(f)
    set_times(log)
    shift_owners(rootfs)  # an image prepared for this mapping
    return b


def _userns_config(bundle: Path, view: str, cgroups_path: str) -> None:
    runc_bundle(bundle, tmpfs_mounts=[("/run", TMPFS_OPTS)], hook_args=["/run"])
    config = json.loads((bundle / "config.json").read_text())
    linux = config["linux"]
    linux["namespaces"] += [{"type": "user"}, {"type": "cgroup"}]
    linux["uidMappings"] = [{"containerID": 0, "hostID": HOST, "size": SIZE}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": HOST, "size": SIZE}]
    linux["cgroupsPath"] = cgroups_path
    mounts = config["mounts"]
    if view == "v1":
        mounts.append({"destination": "/sys/fs/cgroup/systemd", "type": "bind",
                       "source": f"/sys/fs/cgroup/systemd{cgroups_path}",
                       "options": ["rbind", "rw", "nosuid", "nodev", "noexec"]})
    else:
        for m in mounts:
            if m["destination"] == "/sys/fs/cgroup":
                m.update(type="cgroup2", source="cgroup2", options=["nosuid", "noexec", "nodev", "relatime", "rw"])
    (bundle / "config.json").write_text(json.dumps(config, indent=1))


def _check_copy(c: RuncContainer) -> None:
    f = c.root() / "run" / "log" / "f"
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (HOST + 1234, HOST + 1235)
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o640, FIXED_NS)
    inside = c.exec("stat", "-c", "%u %g %a", "/run/log/f", "/run")
    assert inside.stdout == "1234 1235 640\n0 0 755\n", inside.stderr


def _check_delegated(host_dir: Path, files: list[str], inside: str, c: RuncContainer) -> None:
    for name in ["", *files]:
        st = os.stat(host_dir / name)
        assert (st.st_uid, st.st_gid) == (HOST, HOST), f"{host_dir / name}: {st.st_uid}:{st.st_gid}"
    assert os.stat(host_dir.parent).st_uid == 0
    # What systemd does first, as the container's root: it works only if delegated.
    made = c.exec("/bin/busybox", "mkdir", f"{inside}/init.scope")
    assert made.returncode == 0, made.stderr
    assert (host_dir / "init.scope").is_dir()
    assert c.exec("/bin/busybox", "rmdir", f"{inside}/init.scope").returncode == 0


@pytest.mark.parametrize("view", ["v1", "unified"])
def test_userns_container_on_this_hybrid_host(bundle, view):
    path = f"/copyup-test-{uuid.uuid4().hex[:12]}"
    _userns_config(bundle, view, path)
    with RuncContainer(bundle) as c:
        c.start()
        _check_copy(c)
        if view == "v1":
            named = Path(f"/sys/fs/cgroup/systemd{path}")
            _check_delegated(named, sorted(p.name for p in named.iterdir() if p.is_file()), "/sys/fs/cgroup/systemd", c)
        else:
            # The container's unified cgroup: runc puts it there on this hybrid host too.
            _check_delegated(Path(f"/sys/fs/cgroup/unified{path}"),
                             ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"], "/sys/fs/cgroup", c)


def test_userns_container_on_a_pure_v2_host(bundle):
    """runc and its hook in a mount namespace whose /sys/fs/cgroup is cgroup2; the same
    hierarchy is /sys/fs/cgroup/unified in the test's (the host's) view."""
    path = f"/copyup-test-{uuid.uuid4().hex[:12]}"
    _userns_config(bundle, "unified", path)
    with RuncContainer(bundle, cgroup_v2=True) as c:
        c.start()
        _check_copy(c)
        _check_delegated(Path(f"/sys/fs/cgroup/unified{path}"),
                         ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"], "/sys/fs/cgroup", c)
