"""Side files go through one guarded writer, for apply and for the podman filter: a
symlinked side directory is refused before anything is created through it, and the
filter prints exactly its plan's patch applied, with the side files where that plan
says they are."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonpatch
import pytest

from tests.harness.paths import GOLDEN
from tests.harness.shell import HOOK, run, systemd_bundle
from tests.harness.trees import manifest as tree
from transformer import podman
from transformer.concerns.machine_id import machine_id_for
from transformer.job import Failure, Job, call_options
from transformer.job import run as run_job


def apply_job(side_dir: str) -> Job:
    """apply, with the side files in side_dir below each bundle."""
    options = call_options(policy_dir=None, cgroup="v1", copy_up="hook", hook_path=HOOK[1], container_id=None,
                           tmpfs_size=None, capabilities=None, force=False, runtime="runc", journal="tmpfs")
    return Job("apply", dataclasses.replace(options, side_dir=side_dir), False)


def test_apply_refuses_a_nested_side_directory_below_a_link_before_creating_anything(tmp_path):
    """Bug 5: the side directory state/oci-systemd with state a link out of the bundle."""
    bundle = systemd_bundle(tmp_path / "bundle")
    outside = tmp_path / "outside"
    outside.mkdir()
    (bundle / "state").symlink_to(outside)
    before = tree(tmp_path)
    result = run_job(apply_job("state/oci-systemd"), str(bundle))
    assert result.failure == Failure(2, f"{bundle / 'state'}: is a symbolic link; refusing to write through it")
    assert list(outside.iterdir()) == [], "apply created directories through the link"
    assert tree(tmp_path) == before


def test_apply_writes_a_nested_side_directory(tmp_path):
    bundle = systemd_bundle(tmp_path / "bundle")
    result = run_job(apply_job("state/oci-systemd"), str(bundle))
    assert result.failure is None and result.written
    assert (bundle / "state" / "oci-systemd" / "machine-id").read_text() == result.machine_id + "\n"
    config = json.loads((bundle / "config.json").read_text())
    assert {"destination": "/etc/machine-id", "type": "bind", "source": "state/oci-systemd/machine-id",
            "options": ["bind", "ro", "nosuid", "nodev", "noexec"]} in config["mounts"]


# ---- the podman filter: the same writer, and the plan's own sources -------------------

ENGINE_ID = "7fe469f72410a0f2568e085b9f8f6d33" + "7050f0a6827283dfc034d057c0bfd58a"


def podman_config(tmp_path: Path, **env: str) -> dict:
    """podman's config of a systemd container: its ID in cgroupsPath, an absolute rootfs."""
    config = json.loads((GOLDEN / "podman-init" / "config.json").read_text())
    config["root"] = {"path": str(systemd_bundle(tmp_path / "ctr") / "rootfs")}
    config["linux"]["cgroupsPath"] = "/libpod_parent/libpod-" + ENGINE_ID
    config["process"]["env"] = [e for e in config["process"]["env"] if not e.startswith(tuple(env))]
    config["process"]["env"] += [f"{k}={v}" for k, v in env.items()]
    return config


@pytest.fixture
def planned(monkeypatch) -> list:
    """Every Plan the core returns while the test runs."""
    import transformer.plan

    plans = []
    real = transformer.plan.plan

    def spy(*args, **kwargs):
        plans.append(real(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(transformer.plan, "plan", spy)
    return plans


def test_filter_prints_its_patch_applied(tmp_path, capfdbinary, monkeypatch, planned):
    """Bug 4: the filter rewrote mount sources after planning; its patch said otherwise."""
    config = podman_config(tmp_path)
    side = tmp_path / "side"
    code, out, err = run(capfdbinary, monkeypatch, "filter", *HOOK, "--side-dir", str(side),
                         stdin=json.dumps(config).encode())
    assert code == 0, err
    (plan,) = planned
    printed = json.loads(out)
    assert printed == jsonpatch.apply_patch(config, plan.patch())
    assert {"destination": "/etc/machine-id", "type": "bind", "source": str(side / "oci-systemd" / "machine-id"),
            "options": ["bind", "ro", "nosuid", "nodev", "noexec"]} in printed["mounts"]
    for side_file in plan.side_files:  # every side file is where its mount says
        assert any(m.get("source") == side_file.path for m in printed["mounts"]), side_file.path
        assert Path(side_file.path).read_bytes() == side_file.content


def test_filter_names_the_side_directory_after_the_machine_id_of_the_plan(tmp_path, capfdbinary, monkeypatch):
    """Bug 4: the side directory took its name from the container ID while the plan took
    the machine-id from the config's container_uuid."""
    kept = "0123456789abcdef0123456789abcdef"
    assert kept != machine_id_for(ENGINE_ID)
    monkeypatch.setattr(podman, "SIDE_ROOT", str(tmp_path / "run"))
    config = podman_config(tmp_path, container_uuid=kept)
    code, out, err = run(capfdbinary, monkeypatch, "filter", *HOOK, stdin=json.dumps(config).encode())
    assert code == 0, err
    (mount,) = [m for m in json.loads(out)["mounts"] if m["destination"] == "/etc/machine-id"]
    assert mount["source"] == str(tmp_path / "run" / kept / "oci-systemd" / "machine-id")
    assert Path(mount["source"]).read_text() == kept + "\n"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [kept]


@pytest.mark.parametrize("link", ["side", "side/oci-systemd"])
def test_filter_refuses_a_symlinked_side_directory(tmp_path, capfdbinary, monkeypatch, link):
    """Bug 4: the filter wrote its side files without write_bundle's guard."""
    outside = tmp_path / "outside"
    outside.mkdir()
    if link == "side/oci-systemd":
        (tmp_path / "side").mkdir()
    (tmp_path / link).symlink_to(outside)
    config = podman_config(tmp_path)
    before = tree(tmp_path)
    code, out, err = run(capfdbinary, monkeypatch, "filter", *HOOK, "--side-dir", str(tmp_path / "side"),
                         stdin=json.dumps(config).encode())
    assert code == 2 and out == b"", err
    assert err.count("\n") == 1 and "symbolic link" in err and str(tmp_path / link) in err, err
    assert tree(tmp_path) == before, "the filter wrote through the link"
