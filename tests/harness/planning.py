"""Builders for tests of the pure core: runc's default config, options, and a plan."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.harness.paths import GOLDEN
from transformer.options import Options
from transformer.plan import plan
from transformer.policy import load_policy
from transformer.rootfs import DescribedRootfs

POLICY = load_policy()
SYSTEMD_ROOTFS = DescribedRootfs({"/sbin/init": {"symlink": "/lib/systemd/systemd"}, "/lib/systemd/systemd": "file"})


def runc_config(**changes: Any) -> dict[str, Any]:
    """runc 1.1.5's default config with /sbin/init as PID 1 (kept in golden/ too);
    ``linux__cgroupsPath="/x"`` sets config["linux"]["cgroupsPath"]."""
    config = json.loads((GOLDEN / "runc-spec-init" / "config.json").read_text())
    for dotted, value in changes.items():
        node = config
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return config


def options(**kw: Any) -> Options:
    kw.setdefault("container_id", "unit-test")
    kw.setdefault("hook_command", ("/usr/bin/oci-systemd-copyup",))
    return Options(policy=kw.pop("policy", POLICY), **kw)


def run(config: dict[str, Any], rootfs=SYSTEMD_ROOTFS, **kw: Any):
    return plan(copy.deepcopy(config), rootfs, options(**kw))


def mounts_at(result, destination: str) -> list[dict[str, Any]]:
    return [m for m in result.config.get("mounts", []) if m["destination"] == destination]
