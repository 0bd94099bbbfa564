"""The OCI image pipeline: an image made with umoci from the Debian tree, then
unpack -> apply --check (1) -> apply -> apply --check (0) -> validate -> runc run -d."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.harness import integrations, rootfs_cache, runc_harness
from tests.harness.runner import cli
from tests.harness.skips import need_tool, require_root, skip_or_fail
from transformer.schema import DEFAULT_SCHEMA_DIR


def umoci(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    p = subprocess.run(["umoci", *args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"umoci {' '.join(args)} -> rc={p.returncode}\n{p.stderr}"
    return p


def test_umoci_pipeline(tmp_path: Path):
    require_root()
    need_tool("umoci", "umoci")
    need_tool("runc", "runc")
    if not (DEFAULT_SCHEMA_DIR / "config-schema.json").is_file():
        skip_or_fail("OCI schema not installed (golang-github-opencontainers-specs-dev)")
    tarball = integrations.debian_tarball()
    layout = tmp_path / "image"
    staging = tmp_path / "staging"
    bundle = tmp_path / "bundle"
    try:
        # The image: an empty one, the Debian tree as its layer, /sbin/init as its command.
        umoci("init", "--layout", str(layout))
        umoci("new", "--image", f"{layout}:base")
        umoci("unpack", "--image", f"{layout}:base", str(staging))
        rootfs_cache.remove_rootfs(staging / "rootfs")
        rootfs_cache.unpack(tarball, staging / "rootfs")
        umoci("repack", "--image", f"{layout}:debian", str(staging))
        umoci("config", "--image", f"{layout}:debian", "--config.cmd", "/sbin/init")

        # 1. unpack, as the pipeline does
        umoci("unpack", "--image", f"{layout}:debian", str(bundle))
        config = json.loads((bundle / "config.json").read_text())
        assert config["process"]["args"] == ["/sbin/init"]
        # umoci writes terminal: true; a detached runc run without a console needs false.
        config["process"]["terminal"] = False
        (bundle / "config.json").write_text(json.dumps(config, indent=2))

        # 2-4. apply --check says 1, apply writes, apply --check says 0
        check = cli("apply", "--check", str(bundle))
        assert check.returncode == 1, check.stderr
        assert b"changes pending" in check.stderr
        assert json.loads((bundle / "config.json").read_text()) == config, "--check wrote something"
        applied = cli("apply", str(bundle))
        assert applied.returncode == 0, applied.stderr
        again = cli("apply", "--check", str(bundle))
        assert again.returncode == 0, again.stderr

        # 5. validate against the OCI runtime-spec schema
        valid = cli("validate", str(bundle), "--format", "json")
        assert valid.returncode == 0, valid.stdout
        assert json.loads(valid.stdout)["valid"] is True

        # 6. runc run -d reaches running
        with runc_harness.RuncContainer(bundle) as c:
            c.start()
            state = c.wait_running(90)
            assert state == "running", c.diagnostics()
            assert c.failed_units() == []
            c.kill(37)
    finally:
        for d in (staging, bundle):
            rootfs_cache.remove_rootfs(d)
