"""--journal host with real runc: the container's journal outlives it on the host, and
`oci-systemd journal prune` removes only what oci-systemd made."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.harness import integrations, rootfs_cache, runc_harness
from tests.harness.runner import cli
from tests.harness.skips import need_tool, require_root, skip_or_fail


def test_host_journal_survives_the_container_and_is_pruned(tmp_path: Path):
    require_root()
    need_tool("runc", "runc")
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        skip_or_fail("the host has no journalctl (apt-get install -y systemd)")
    tarball = integrations.debian_tarball()
    host_journal = tmp_path / "host-journal"
    registry = tmp_path / "registry"
    policy = integrations.policy_with(tmp_path, hostDirectory=str(host_journal), registryDirectory=str(registry))
    bundle = integrations.runc_bundle(tarball, tmp_path / "bundle")
    try:
        r = cli("apply", str(bundle), "--journal", "host", "--policy", str(policy))
        assert r.returncode == 0, r.stderr
        machine_id = (bundle / "oci-systemd" / "machine-id").read_text().strip()
        directory = host_journal / machine_id
        assert directory.is_dir(), "apply must create the host directory the bind mount needs"
        assert json.loads((registry / machine_id).read_text())["directory"] == str(directory)
        config = json.loads((bundle / "config.json").read_text())
        binds = [m for m in config["mounts"] if m["source"] == str(directory)]
        assert [m["destination"] for m in binds] == [f"/var/log/journal/{machine_id}"]

        with runc_harness.RuncContainer(bundle) as c:
            c.start()
            state = c.wait_running(90)
            assert state == "running", c.diagnostics()
            c.exec("systemd-cat", "-t", "oci-systemd-test", "echo", f"hello from {c.id}", check=True)
            c.exec("journalctl", "--flush", check=False)
            c.kill(37)
            container_id = c.id
        # The container is gone; the host reads its journal.
        out = subprocess.run([journalctl, "-D", str(directory), "-o", "json", "--no-pager"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        entries = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        assert entries, "the host directory holds no journal"
        assert {e.get("_MACHINE_ID") for e in entries} == {machine_id}
        messages = [e.get("MESSAGE") for e in entries]
        assert f"hello from {container_id}" in messages
        boots = subprocess.run([journalctl, "-D", str(directory), "--list-boots", "--no-pager"],
                               capture_output=True, text=True, timeout=60)
        assert boots.returncode == 0 and len(boots.stdout.strip().splitlines()) >= 1, boots

        # journal prune: a young directory is kept; --older-than 0 removes it and its record.
        kept = cli("journal", "prune", "--policy", str(policy))
        assert kept.returncode == 0 and kept.stdout == b"" and directory.is_dir(), kept.stderr
        dry = cli("journal", "prune", "--older-than", "0", "--dry-run", "--policy", str(policy))
        assert dry.stdout.decode().split() == [str(directory)] and directory.is_dir()
        other = host_journal / ("ab" * 16)  # a journal oci-systemd did not make (no record)
        other.mkdir()
        pruned = cli("journal", "prune", "--older-than", "0", "--policy", str(policy))
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stdout.decode().split() == [str(directory)]
        assert not directory.exists() and not (registry / machine_id).exists()
        assert other.is_dir(), "prune removed a directory oci-systemd did not create"
    finally:
        rootfs_cache.remove_rootfs(bundle)
