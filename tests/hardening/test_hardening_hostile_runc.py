"""Hostile images end to end: the transformer's own `apply` (rootfs look-ups) and the
copy-up helper it registers, under real runc, against images crafted to escape.

Every case hashes host files before and after (the files an escape would reach, plus a
canary directory the image's links point at) and requires them byte-identical. A case
either starts (and then the container sees only image content) or is refused with the
helper's one line: never a write outside the container.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.harness.bundles import runc_spec
from tests.harness.copyup import make_busybox_rootfs
from tests.harness.runc_harness import RuncContainer, host_cgroup_mode, require_runc
from tests.harness.runner import cli
from tests.harness.skips import require_root
from tests.harness.trees import manifest, sha256_file

pytestmark = [pytest.mark.root, pytest.mark.e2e]

HOST_FILES = ["/etc/shadow", "/etc/passwd", "/etc/hostname", "/etc/machine-id", "/etc/hosts"]


# Names the images put in their /run and /tmp: none may appear in the host's.
IMAGE_NAMES = {"abs", "rel", "loop-a", "loop-b", "dir-link", "secret", "run2"}


def _host_state(canary: Path) -> dict:
    """Host files an escape would reach, the canary tree, and the image's names in the
    host's /run and /tmp (other processes may create entries there meanwhile)."""
    out = {p: sha256_file(p) for p in HOST_FILES if os.path.isfile(p)}
    out["canary"] = manifest(canary)
    for d in ("/run", "/tmp"):
        out[d] = sorted(IMAGE_NAMES & set(os.listdir(d)))
    return out


def _apply(bundle: Path, *extra: str):
    return cli("apply", str(bundle), "--cgroup", host_cgroup_mode(), "--container-id", uuid.uuid4().hex, *extra)


def _bundle(tmp_path: Path) -> Path:
    require_root()
    require_runc()
    b = tmp_path / "bundle"
    b.mkdir()
    b.chmod(0o755)
    make_busybox_rootfs(b / "rootfs")
    runc_spec(b, ["sleep", "600"], readonly=False)
    return b


def _canary(tmp_path: Path) -> Path:
    canary = tmp_path / f"canary-{uuid.uuid4().hex[:8]}"
    (canary / "run").mkdir(parents=True)
    (canary / "run" / "secret").write_text("host secret\n")
    (canary / "tmp").mkdir()
    (canary / "etc").mkdir()
    (canary / "etc" / "machine-id").write_text("0" * 32 + "\n")
    return canary


def _image(rootfs: Path, case: str, canary: Path) -> None:
    def link(path: str, target: str):
        p = rootfs / path.lstrip("/")
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)

    dotdot = "../" * 12 + str(canary).lstrip("/")
    if case == "run-absolute-link":
        link("/run", str(canary / "run"))
    elif case == "run-dotdot-chain":
        link("/run", dotdot + "/run")
    elif case == "tmp-absolute-link":
        link("/tmp", str(canary / "tmp"))
    elif case == "tmp-dotdot-chain":
        link("/tmp", dotdot + "/tmp")
    elif case == "run-link-loop":
        link("/run", "/run2")
        link("/run2", "/run")
    elif case == "var-parent-link":
        link("/var", str(canary))
        (canary / "log" / "journal").mkdir(parents=True)
        (canary / "log" / "journal" / "x").write_text("host journal\n")
    elif case == "machine-id-absolute-link":
        link("/etc/machine-id", str(canary / "etc" / "machine-id"))
    elif case == "machine-id-dotdot-link":
        link("/etc/machine-id", dotdot + "/etc/machine-id")
    elif case == "machine-id-is-a-directory":
        (rootfs / "etc" / "machine-id").mkdir(parents=True)
    elif case == "run-is-a-file":
        (rootfs / "run").write_text("not a directory\n")
    elif case == "tmp-is-a-file":
        (rootfs / "tmp").write_text("not a directory\n")
    elif case == "run-content-links-out":
        (rootfs / "run").mkdir()
        os.symlink(str(canary / "run" / "secret"), rootfs / "run" / "abs")
        os.symlink(dotdot + "/run/secret", rootfs / "run" / "rel")
        os.symlink("loop-b", rootfs / "run" / "loop-a")
        os.symlink("loop-a", rootfs / "run" / "loop-b")
        os.symlink(str(canary / "run"), rootfs / "run" / "dir-link")
    else:
        raise AssertionError(case)


CASES = ["run-absolute-link", "run-dotdot-chain", "tmp-absolute-link", "tmp-dotdot-chain", "run-link-loop",
         "var-parent-link", "machine-id-absolute-link", "machine-id-dotdot-link", "machine-id-is-a-directory",
         "run-is-a-file", "tmp-is-a-file", "run-content-links-out"]


@pytest.mark.parametrize("case", CASES)
def test_hostile_image_under_runc(tmp_path: Path, case: str):
    b = _bundle(tmp_path)
    canary = _canary(tmp_path)
    _image(b / "rootfs", case, canary)
    before = _host_state(canary)
    applied = _apply(b, "--force")
    err = applied.stderr.decode(errors="replace")
    assert "Traceback" not in err and applied.returncode in (0, 2), err
    if applied.returncode == 2:  # refused by the transformer: one line, nothing written
        assert err.count("\n") == 1, err
    else:
        with RuncContainer(b) as c:
            result = c.start(check=False)
            out = result.stdout
            assert "Traceback" not in out, out
            if result.returncode == 0:
                # (Read through /proc/<pid>/root, an absolute link in the image would
                # resolve against the host's root: only fd-safe checks and runc exec here.)
                root = c.root()
                if case == "run-content-links-out":
                    assert os.readlink(root / "run" / "abs") == str(canary / "run" / "secret")
                    assert os.readlink(root / "run" / "loop-a") == "loop-b"
                if case.startswith("machine-id") and case != "machine-id-is-a-directory":
                    mid = (b / "oci-systemd" / "machine-id").read_text()
                    seen = subprocess.run(["runc", "exec", c.id, "cat", "/etc/machine-id"], capture_output=True,
                                          timeout=30).stdout.decode()
                    assert seen == mid, (seen, mid)  # our bind, inside the container's own tree
                    assert (canary / "etc" / "machine-id").read_text() == "0" * 32 + "\n"
            elif "oci-systemd-copyup" in out:
                # The helper refused: its one line is what runc shows.
                line = next(l for l in out.splitlines() if "oci-systemd-copyup" in l)
                assert any(r in line for r in ("is a symlink", "not a directory", "not a tmpfs",
                                               "Too many levels")), line
    assert _host_state(canary) == before, "a host file changed"


def test_init_pointing_outside_the_rootfs_is_resolved_inside(tmp_path: Path):
    """/sbin/init -> ../../<host dir>/bin/app, where the host's bin/app is a link to
    /lib/systemd/systemd. Followed on the host it would count as systemd; resolved inside
    the rootfs it is 'app', not systemd: nothing is added and nothing on the host moves.
    runc, which resolves it inside the container too, fails to start it."""
    b = _bundle(tmp_path)
    canary = _canary(tmp_path)
    (canary / "bin").mkdir()
    os.symlink("/lib/systemd/systemd", canary / "bin" / "app")
    rootfs = b / "rootfs"
    (rootfs / "sbin").mkdir(exist_ok=True)
    os.symlink("../" * 12 + str(canary).lstrip("/") + "/bin/app", rootfs / "sbin" / "init")
    config = json.loads((b / "config.json").read_text())
    config["process"]["args"] = ["/sbin/init"]
    (b / "config.json").write_text(json.dumps(config))
    before_bundle, before = manifest(b), _host_state(canary)
    applied = _apply(b)
    assert applied.returncode == 0, applied.stderr
    assert b"not a systemd container" in applied.stderr, applied.stderr
    assert manifest(b) == before_bundle
    with RuncContainer(b) as c:
        assert c.start(check=False).returncode != 0, "runc must not find an init outside the rootfs"
    assert _host_state(canary) == before
