"""The cgroup model: which view each (host kind, systemd version) gets, a cgroup
namespace in every view, and what a user namespace adds."""

from __future__ import annotations

import pytest

from tests.harness.planning import POLICY, mounts_at, options, run, runc_config
from transformer.concerns.cgroups import choose_view
from transformer.errors import OptionsError
from transformer.rootfs import DescribedRootfs
from transformer.systemd_version import SystemdVersion

# (host, systemd version) -> view, or None for a refusal at plan time
TABLE = [
    ("v2", 247, "unified"), ("v2", 262, "unified"), ("v2", None, "unified"),
    ("hybrid", 247, "v1"), ("hybrid", 257, "v1"), ("hybrid", 258, "unified"), ("hybrid", 262, "unified"),
    ("hybrid", None, "unified"),
    ("legacy", 252, "v1"), ("legacy", 257, "v1"), ("legacy", 258, None), ("legacy", None, "v1"),
    ("v1", 252, "v1"), ("v1", 262, None), ("v1", None, "v1"),
]


@pytest.mark.parametrize("host,version,view", TABLE, ids=[f"{h}-{v}" for h, v, _ in TABLE])
def test_view_table(host, version, view):
    systemd = SystemdVersion(version, f"/usr/lib/systemd/libsystemd-shared-{version}.so") if version else None
    opts = options(cgroup=host)
    if view is None:
        with pytest.raises(OptionsError) as refused:
            choose_view(opts, systemd)
        message = refused.value.one_line()
        assert f"systemd {version}" in message and "257 or older" in message and "\n" not in message
    else:
        chosen = choose_view(opts, systemd)
        assert chosen.view == view
        assert chosen.why  # the review says why


def _rootfs(version: int | None) -> DescribedRootfs:
    description = {"/sbin/init": {"symlink": "/lib/systemd/systemd"}, "/lib/systemd/systemd": "file"}
    if version:
        description[f"/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-{version}.so"] = "file"
    return DescribedRootfs(description)


def _namespaces(result) -> list[str]:
    return [ns["type"] for ns in result.config["linux"]["namespaces"]]


@pytest.mark.parametrize("host,version", [("v2", 262), ("hybrid", 252), ("hybrid", 262), ("legacy", 252), ("v1", 247)])
def test_every_view_has_a_cgroup_namespace(host, version):
    result = run(runc_config(), rootfs=_rootfs(version), cgroup=host)
    assert _namespaces(result).count("cgroup") == 1


def test_unified_view_is_cgroup2_and_never_type_cgroup():
    """type cgroup would be every v1 controller, writable, on a v1 host."""
    result = run(runc_config(), rootfs=_rootfs(262), cgroup="hybrid")
    at = mounts_at(result, "/sys/fs/cgroup")
    assert [m["type"] for m in at] == ["cgroup2"]
    assert "rw" in at[0]["options"] and "ro" not in at[0]["options"]
    assert mounts_at(result, "/sys/fs/cgroup/systemd") == []
    assert "cgroupsPath" not in result.config["linux"]


def test_v1_view_keeps_controllers_read_only():
    result = run(runc_config(), rootfs=_rootfs(252), cgroup="hybrid")
    at = mounts_at(result, "/sys/fs/cgroup")
    assert [m["type"] for m in at] == ["cgroup"] and "ro" in at[0]["options"]
    own = mounts_at(result, "/sys/fs/cgroup/systemd")
    assert len(own) == 1 and "rw" in own[0]["options"]
    assert own[0]["source"] == "/sys/fs/cgroup/systemd" + result.config["linux"]["cgroupsPath"]


def test_refused_image_changes_nothing():
    config = runc_config()
    before = repr(config)
    with pytest.raises(OptionsError):
        run(config, rootfs=_rootfs(262), cgroup="legacy")
    assert repr(config) == before


def _userns(config):
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    return config


@pytest.mark.parametrize("copy_up", ["hook", "native"])
@pytest.mark.parametrize("host,version", [("hybrid", 252), ("hybrid", 262), ("v2", 262)])
def test_user_namespace_registers_the_helper_in_every_copy_up_mode(copy_up, host, version):
    result = run(_userns(runc_config()), rootfs=_rootfs(version), cgroup=host, copy_up=copy_up)
    hooks = result.config["hooks"]["prestart"]
    assert len(hooks) == 1 and hooks[0]["path"] == "/usr/bin/oci-systemd-copyup"
    dests = hooks[0]["args"][3:]
    if copy_up == "native":
        assert dests == []  # the runtime copies; the helper delegates
        assert all("tmpcopyup" in m["options"] for m in mounts_at(result, "/run"))
    else:
        assert "/run" in dests
    facts = dict(result.facts)
    assert facts["user namespace"] == "yes: the container's root is host uid 100000, gid 200000"


def test_native_mode_without_user_namespace_has_no_hook():
    result = run(runc_config(), rootfs=_rootfs(252), cgroup="hybrid", copy_up="native")
    assert "hooks" not in result.config or not result.config["hooks"].get("prestart")


def test_journal_host_directory_belongs_to_the_mapped_root():
    result = run(_userns(runc_config()), rootfs=_rootfs(257), cgroup="v2", journal="host")
    (directory,) = result.host_directories
    assert (directory.uid, directory.gid) == (100000, 200000)
    result = run(runc_config(), rootfs=_rootfs(257), cgroup="v2", journal="host")
    (directory,) = result.host_directories
    assert (directory.uid, directory.gid) == (0, 0)


def test_policy_refuses_a_cgroup_typed_unified_mount():
    from transformer.errors import PolicyError
    from transformer.policy import parse_policy, load_policy, DOCUMENTS, default_policy_dir
    import json

    docs = {name: json.loads((default_policy_dir() / f"{name}.json").read_text()) for name in DOCUMENTS}
    docs["cgroup-v2"]["mountType"] = "cgroup"
    with pytest.raises(PolicyError) as refused:
        parse_policy(docs)
    assert refused.value.one_line() == (
        "<memory>/cgroup-v2.json: /mountType: must be cgroup2: type cgroup mounts every v1 controller on a v1 host")
    assert load_policy() == POLICY


def _rootless_config() -> dict:
    """runc 1.1.5's ``spec --rootless`` (golden/runc-rootless-init): /sys is an rbind of
    the host's /sys, since there is no network namespace to mount a sysfs in."""
    import json

    from tests.harness.paths import GOLDEN

    return json.loads((GOLDEN / "runc-rootless-init" / "config.json").read_text())


def test_rootless_sys_bind_gets_a_tmpfs_under_the_cgroup2_mount():
    """On the root of the host's cgroup2 mount (under the /sys bind) the kernel refuses a
    second cgroup2 mount with EBUSY: a tmpfs comes first, then the cgroup2 mount."""
    result = run(_rootless_config(), rootfs=_rootfs(252), cgroup="v2")
    at = mounts_at(result, "/sys/fs/cgroup")
    assert [m["type"] for m in at] == ["tmpfs", "cgroup2"]
    assert "rw" in at[1]["options"]
    sys_index = next(i for i, m in enumerate(result.config["mounts"]) if m["destination"] == "/sys")
    first = next(i for i, m in enumerate(result.config["mounts"]) if m["destination"] == "/sys/fs/cgroup")
    assert sys_index < first


def test_rootless_tmpfs_is_added_once():
    """Planning the result again changes nothing (the tmpfs is recognised as ours)."""
    once = run(_rootless_config(), rootfs=_rootfs(252), cgroup="v2").config
    again = run(once, rootfs=_rootfs(252), cgroup="v2")
    assert [m["type"] for m in mounts_at(again, "/sys/fs/cgroup")] == ["tmpfs", "cgroup2"]
    assert not any(op["path"].startswith("/mounts") for op in again.patch())


@pytest.mark.parametrize("host", ["v2", "hybrid"])
def test_own_sysfs_gets_no_tmpfs(host):
    """With a network namespace the container mounts a sysfs of its own, where
    /sys/fs/cgroup is an empty directory: nothing is added there but the cgroup2 mount."""
    result = run(runc_config(), rootfs=_rootfs(262), cgroup=host)
    assert [m["type"] for m in mounts_at(result, "/sys/fs/cgroup")] == ["cgroup2"]
