"""Each concern's rules, one small config at a time."""

from __future__ import annotations

import copy
import inspect
import json

import jsonpatch
import pytest

from tests.harness.planning import POLICY, SYSTEMD_ROOTFS, mounts_at, options, run, runc_config
from transformer import mounts
from transformer.concerns import CONCERNS
from transformer.concerns.cgroups import systemd_slice_path
from transformer.concerns.machine_id import choose, id_from_container_uuid, machine_id_for
from transformer.errors import ConfigError, OptionsError
from transformer.rootfs import DescribedRootfs

# --- mounts helpers ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,norm", [("/run", "/run"), ("/run/", "/run"), ("//run//lock/", "/run/lock"), ("/./tmp", "/tmp"), ("/", "/")]
)
def test_normalise(raw, norm):
    assert mounts.normalise(raw) == norm


def test_insertion_index_goes_before_nested_and_after_ancestors():
    ms = [{"destination": d} for d in ("/proc", "/run/.containerenv", "/sys", "/run/secrets")]
    assert mounts.insertion_index(ms, "/run") == 1
    assert mounts.insertion_index(ms, "/tmp") == 4
    later_ancestor = [{"destination": "/var/log/journal/x"}, {"destination": "/var"}]
    assert mounts.insertion_index(later_ancestor, "/var/log/journal") == 2


# --- tmpfs ---------------------------------------------------------------------


def test_tmpfs_added_with_modes_and_size():
    result = run(runc_config(root__readonly=False))
    for dest, mode in (("/run", "mode=755"), ("/tmp", "mode=1777"), ("/run/lock", "mode=755"), ("/var/log/journal", "mode=755")):
        (m,) = mounts_at(result, dest)
        assert m["type"] == "tmpfs" and {"nosuid", "nodev", mode, "size=64m"} <= set(m["options"])
    assert not mounts_at(result, "/var/lib/systemd"), "read-only extras need root.readonly"


def test_tmpfs_size_option_applies_to_every_tmpfs():
    result = run(runc_config(), tmpfs_size="16m")
    added = [m for m in result.config["mounts"] if m["type"] == "tmpfs" and m["destination"] not in ("/dev", "/dev/shm")]
    assert added and all("size=16m" in m["options"] for m in added)


def test_readonly_root_adds_var_lib_systemd_and_var_tmp():
    result = run(runc_config(root__readonly=True))
    assert mounts_at(result, "/var/lib/systemd") and mounts_at(result, "/var/tmp")
    assert "mode=1777" in mounts_at(result, "/var/tmp")[0]["options"]


@pytest.mark.parametrize("existing", ["/tmp", "/tmp/", "//tmp"])
def test_existing_mount_is_kept_comparing_normalised_paths(existing):
    config = runc_config()
    user = {"destination": existing, "type": "bind", "source": "/srv/tmp", "options": ["rbind"]}
    config["mounts"].append(user)
    result = run(config)
    assert [m for m in result.config["mounts"] if mounts.normalise(m["destination"]) == "/tmp"] == [user]
    assert any(n.kind == "kept" and "/tmp" in n.message for n in result.notes)


def test_tmpfs_inserted_before_podman_containerenv_bind():
    config = runc_config()
    config["mounts"].append({"destination": "/run/.containerenv", "type": "bind", "source": "/x", "options": ["bind"]})
    result = run(config)
    dests = [m["destination"] for m in result.config["mounts"]]
    assert dests.index("/run") < dests.index("/run/.containerenv") < dests.index("/run/lock")


def test_symlinked_destination_resolved_inside_rootfs():
    rootfs = DescribedRootfs({"/tmp": {"symlink": "/var/tmp"}, "/var/tmp": "dir", "/sbin/init": "file"})
    result = run(runc_config(root__readonly=False), rootfs)
    assert mounts_at(result, "/var/tmp") and not mounts_at(result, "/tmp")


def test_mount_label_adds_quoted_selinux_context():
    config = runc_config()
    config["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2"
    result = run(config)
    (m,) = mounts_at(result, "/run")
    assert 'context="system_u:object_r:container_file_t:s0:c1,c2"' in m["options"]


# --- cgroups -------------------------------------------------------------------


def test_v1_keeps_cgroup_ro_and_binds_only_own_name_systemd():
    result = run(runc_config(), cgroup="v1")
    (cg,) = mounts_at(result, "/sys/fs/cgroup")
    assert "ro" in cg["options"] and "rw" not in cg["options"]
    (sd,) = mounts_at(result, "/sys/fs/cgroup/systemd")
    path = result.config["linux"]["cgroupsPath"]
    assert sd["source"] == "/sys/fs/cgroup/systemd" + path and "rw" in sd["options"]
    assert sd["source"] != "/sys/fs/cgroup/systemd"
    binds = [m for m in result.config["mounts"] if m.get("source", "").startswith("/sys/fs/cgroup")]
    assert binds == [sd], "no other controller may be bound writable"


def test_v1_turns_a_rw_cgroup_mount_read_only():
    config = runc_config()
    for m in config["mounts"]:
        if m["destination"] == "/sys/fs/cgroup":
            m["options"] = ["nosuid", "rw"]
    result = run(config, cgroup="v1")
    (cg,) = mounts_at(result, "/sys/fs/cgroup")
    assert cg["options"] == ["nosuid", "ro"]
    assert any(op.op == "replace" and op.concern == "cgroup-v1" for op in result.ops)


def test_v1_uses_an_existing_cgroups_path():
    config = runc_config()
    config["linux"]["cgroupsPath"] = "/mine/ctr"
    result = run(config, cgroup="v1")
    assert mounts_at(result, "/sys/fs/cgroup/systemd")[0]["source"] == "/sys/fs/cgroup/systemd/mine/ctr"


def test_v1_relative_cgroups_path_is_refused():
    config = runc_config()
    config["linux"]["cgroupsPath"] = "relative/ctr"
    with pytest.raises(ConfigError) as err:
        run(config, cgroup="v1")
    assert err.value.pointer == "/linux/cgroupsPath"


@pytest.mark.parametrize(
    "path,expected",
    [
        ("machine.slice:libpod:abc", "/machine.slice/libpod-abc.scope"),
        ("a-b.slice:x:y", "/a.slice/a-b.slice/x-y.scope"),
        (":runc:id", "/system.slice/runc-id.scope"),
        ("-.slice::n", "/n.scope"),
    ],
)
def test_systemd_slice_path(path, expected):
    assert systemd_slice_path(path) == expected


def test_v2_adds_cgroup_namespace_and_rw_mount():
    result = run(runc_config(), cgroup="v2")
    assert {"type": "cgroup"} in result.config["linux"]["namespaces"]
    (cg,) = mounts_at(result, "/sys/fs/cgroup")
    assert "rw" in cg["options"] and "ro" not in cg["options"]
    assert not mounts_at(result, "/sys/fs/cgroup/systemd")
    assert "cgroupsPath" not in result.config["linux"]


# --- machine-id ----------------------------------------------------------------


@pytest.mark.parametrize(
    "cid,expected",
    [
        ("7fe469f72410a0f2568e085b9f8f6d337050f0a6827283dfc034d057c0bfd58a", "7fe469f72410a0f2568e085b9f8f6d33"),
        ("ABCDEF0123456789ABCDEF0123456789", "abcdef0123456789abcdef0123456789"),
    ],
)
def test_machine_id_from_hex_container_id(cid, expected):
    assert machine_id_for(cid) == expected


@pytest.mark.parametrize("cid", ["demo", "0" * 32, "0" * 64, "abc", "z" * 40, "/var/lib/bundles/web"])
def test_machine_id_hashed_otherwise(cid):
    mid = machine_id_for(cid)
    assert len(mid) == 32 and all(c in "0123456789abcdef" for c in mid) and mid != "0" * 32
    assert machine_id_for(cid) == mid  # stable
    assert mid != cid[:32]


def test_machine_ids_differ_per_container():
    assert machine_id_for("web-1") != machine_id_for("web-2")


def test_machine_id_bind_side_file_and_env_agree():
    result = run(runc_config(), container_id="7fe469f72410a0f2568e085b9f8f6d337050f0a6827283dfc034d057c0bfd58a")
    (m,) = mounts_at(result, "/etc/machine-id")
    assert m["type"] == "bind" and "ro" in m["options"] and not m["source"].startswith("/")
    side = {s.path: s for s in result.side_files}
    assert side[m["source"]].content == b"7fe469f72410a0f2568e085b9f8f6d33\n"
    assert "container_uuid=7fe469f72410a0f2568e085b9f8f6d33" in result.config["process"]["env"]


def test_machine_id_commit_unit_is_masked_inside_the_run_tmpfs():
    result = run(runc_config(root__readonly=False))
    dests = [m["destination"] for m in result.config["mounts"]]
    mask = "/run/systemd/system/systemd-machine-id-commit.service"
    assert dests.index("/run") < dests.index(mask)
    (m,) = mounts_at(result, mask)
    assert {s.path: s.content for s in result.side_files}[m["source"]] == b""


def test_no_mask_when_run_is_a_host_bind():
    config = runc_config()
    config["mounts"].append({"destination": "/run", "type": "bind", "source": "/srv/run", "options": ["rbind"]})
    result = run(config)
    assert not mounts_at(result, "/run/systemd/system/systemd-machine-id-commit.service")
    assert any(n.kind == "warning" and "not masked" in n.message for n in result.notes)


def test_choose_takes_the_configs_container_uuid_else_the_container_id():
    """The one machine-id choice that plan() and podman's filter share."""
    opts = options(container_id="web-1")
    config = runc_config()
    assert choose(config, opts) == (machine_id_for("web-1"), "from container ID 'web-1'")
    config["process"]["env"].append("container_uuid=12345678-1234-1234-1234-123456789ABC")
    assert choose(config, opts) == ("12345678123412341234123456789abc", "from the config's container_uuid")
    config["process"]["env"][-1] = "container_uuid=not-an-id"
    assert choose(config, opts) == (machine_id_for("web-1"), "from container ID 'web-1'")


def test_existing_container_uuid_wins_and_is_kept():
    config = runc_config()
    config["process"]["env"].append("container_uuid=12345678-1234-1234-1234-123456789abc")
    result = run(config)
    assert {s.path: s.content for s in result.side_files}["oci-systemd/machine-id"] == b"12345678123412341234123456789abc\n"
    assert sum(e.startswith("container_uuid=") for e in result.config["process"]["env"]) == 1


def test_id_from_container_uuid():
    assert id_from_container_uuid("0" * 32) is None
    assert id_from_container_uuid("not-a-uuid") is None


# --- capabilities, environment, annotations ------------------------------------


def test_capabilities_added_to_three_sets_keeping_user_caps():
    config = runc_config()
    config["process"]["capabilities"]["bounding"].append("CAP_SYS_PTRACE")
    result = run(config)
    caps = result.config["process"]["capabilities"]
    for name in ("bounding", "effective", "permitted"):
        assert set(POLICY.capabilities.capabilities) <= set(caps[name])
        assert "CAP_SYS_ADMIN" not in caps[name]
    assert "CAP_SYS_PTRACE" in caps["bounding"]
    withheld = set(POLICY.capabilities.withheld)
    assert caps["ambient"] == [c for c in runc_config()["process"]["capabilities"]["ambient"] if c not in withheld]


def test_capabilities_option_overrides_set():
    result = run(runc_config(), capabilities=("CAP_CHOWN",))
    assert result.config["process"]["capabilities"]["effective"] == ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"]


def test_audit_capabilities_are_withheld_from_every_set_with_the_reason():
    """runc spec grants CAP_AUDIT_WRITE in bounding, effective, permitted and ambient;
    systemd's container interface asks for none of CAP_AUDIT_*: each set loses it, by
    one replace per set whose reason the review prints beside each removal."""
    config = runc_config()
    config["process"]["capabilities"]["inheritable"] = ["CAP_AUDIT_READ", "CAP_KILL"]
    result = run(config)
    caps = result.config["process"]["capabilities"]
    for name, values in caps.items():
        assert not set(values) & set(POLICY.capabilities.withheld), (name, values)
    assert caps["inheritable"] == ["CAP_KILL"]
    replaces = [op for op in result.ops if op.op == "replace" and op.path.startswith("/process/capabilities/")]
    assert sorted(op.path for op in replaces) == [f"/process/capabilities/{n}" for n in
                                                   ("ambient", "bounding", "effective", "inheritable", "permitted")]
    assert all(op.why == POLICY.capabilities.withheld_why for op in replaces)
    assert run(result.config).ops == ()  # nothing left to withhold, nothing to add
    from transformer.review import review_data

    changes = review_data(config, result, "x")["changes"]
    removed = [c for c in changes if c["kind"] == "removed"]
    assert sorted(c["pointer"] for c in removed) == [f"/process/capabilities/{n}/0" for n in
                                                      ("ambient", "bounding", "effective", "inheritable", "permitted")]
    assert all(c["why"] == POLICY.capabilities.withheld_why for c in removed)
    # deepdiff, ignoring order, would pair a removed capability with an added one
    assert not [c for c in changes if c["kind"] == "changed" and "capabilities" in c["pointer"]], changes


def test_capabilities_option_naming_a_withheld_one_keeps_it():
    result = run(runc_config(), capabilities=("CAP_AUDIT_WRITE", "CAP_CHOWN"))
    for name in ("bounding", "effective", "permitted", "ambient"):
        assert "CAP_AUDIT_WRITE" in result.config["process"]["capabilities"][name], name
    assert not [op for op in result.ops if op.op == "replace"]


def test_sys_admin_is_refused_in_options():
    with pytest.raises(OptionsError):
        run(runc_config(), capabilities=("CAP_SYS_ADMIN",))


def test_container_env_added_unless_present():
    assert "container=oci" in run(runc_config()).config["process"]["env"]
    config = runc_config()
    config["process"]["env"].append("container=podman")
    env = run(config).config["process"]["env"]
    assert "container=podman" in env and "container=oci" not in env


def test_stop_signal_annotations():
    result = run(runc_config())
    assert result.config["annotations"]["org.opencontainers.image.stopSignal"] == "SIGRTMIN+3"
    assert result.config["annotations"]["org.systemd.property.KillSignal"] == "37"
    assert any(op.path == "/annotations" and op.value == {} for op in result.ops), "missing parent gets its own add"


def test_equivalent_stop_signal_kept_other_replaced():
    config = runc_config()
    config["annotations"] = {"org.opencontainers.image.stopSignal": "37"}
    assert run(config).config["annotations"]["org.opencontainers.image.stopSignal"] == "37"
    config["annotations"] = {"org.opencontainers.image.stopSignal": "SIGTERM"}
    result = run(config)
    assert result.config["annotations"]["org.opencontainers.image.stopSignal"] == "SIGRTMIN+3"
    assert any(op.op == "replace" and "SIGTERM" in op.why for op in result.ops)


# --- copy-up -------------------------------------------------------------------


def test_hook_mode_registers_prestart_helper_with_destinations():
    result = run(runc_config(root__readonly=False), hook_command=("/opt/bin/oci-systemd-copyup",))
    (hook,) = result.config["hooks"]["prestart"]
    assert hook["path"] == "/opt/bin/oci-systemd-copyup"
    assert hook["args"] == ["oci-systemd-copyup", "--stage", "prestart", "/run", "/run/lock", "/tmp", "/var/log/journal"]


def test_hook_mode_without_a_helper_path_is_an_options_error():
    with pytest.raises(OptionsError):
        run(runc_config(), hook_command=None)


def test_native_mode_adds_tmpcopyup_and_no_hook():
    result = run(runc_config(), copy_up="native")
    assert "hooks" not in result.config
    assert all("tmpcopyup" in m["options"] for m in result.config["mounts"] if m["destination"] in ("/run", "/tmp"))


def test_nothing_to_copy_registers_no_hook():
    config = runc_config(root__readonly=False)
    for dest in ("/run", "/run/lock", "/tmp", "/var/log/journal"):
        config["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": []})
    assert "hooks" not in run(config).config


# --- the whole plan ------------------------------------------------------------


@pytest.mark.parametrize("cgroup", ["v1", "v2"])
def test_ops_are_in_the_order_of_CONCERNS(cgroup):
    result = run(runc_config(), cgroup=cgroup, journal="host")
    order = [name for concern in CONCERNS for name in concern.DOCUMENTS]
    seen = [op.concern for op in result.ops]
    assert seen == sorted(seen, key=order.index)
    # Every concern had something to do, so the order was checked for each of them.
    assert set(seen) == set(order) - {"cgroup-v2" if cgroup == "v1" else "cgroup-v1"}


def test_every_concern_has_the_one_interface():
    for concern in CONCERNS:
        assert list(inspect.signature(concern.contribute).parameters) == ["draft", "ctx"], concern.__name__
        assert concern.DOCUMENTS, concern.__name__


def test_patch_applies_with_jsonpatch_and_is_idempotent():
    config = runc_config()
    result = run(config)
    patched = jsonpatch.apply_patch(config, result.patch())
    assert patched == result.config
    assert run(patched).patch() == []


def test_same_input_same_bytes():
    a = json.dumps(run(runc_config()).patch())
    b = json.dumps(run(runc_config()).patch())
    assert a == b


def test_annotation_pointer_is_escaped():
    policy_ann = [op for op in run(runc_config()).ops if op.path.startswith("/annotations/")]
    assert policy_ann and all("~1" not in op.path for op in policy_ann)  # keys without '/'
    from transformer.pointer import pointer

    assert pointer(["annotations", "oci-systemd/enabled", "a~b"]) == "/annotations/oci-systemd~1enabled/a~0b"


def test_plan_does_not_mutate_its_input():
    config = runc_config()
    before = copy.deepcopy(config)
    from transformer.plan import plan

    plan(config, SYSTEMD_ROOTFS, options())
    assert config == before


def test_hook_run_by_interpreter_isolated_and_recognised_again():
    command = ("/usr/bin/python3", "-I", "-S", "/usr/lib/python3/dist-packages/transformer/copyup/hook.py")
    result = run(runc_config(root__readonly=False), hook_command=command)
    (hook,) = result.config["hooks"]["prestart"]
    assert hook["path"] == "/usr/bin/python3"
    assert hook["args"][:6] == ["python3", "-I", "-S", command[3], "--stage", "prestart"]
    # Planned again (even with the console-script form), the registration is recognised.
    again = run(result.config, hook_command=("/usr/local/bin/oci-systemd-copyup",))
    assert again.patch() == []


def test_review_of_contradictory_ro_rw_shows_a_change_not_a_removal():
    from transformer.review import review_data

    config = runc_config()
    for m in config["mounts"]:
        if m["destination"] == "/sys/fs/cgroup":
            m["options"] = ["ro", "rw"]
    result = run(config, cgroup="v1")
    changes = review_data(config, result, "t")["changes"]
    assert not [c for c in changes if c["kind"] == "removed" and c["pointer"].startswith("/mounts/")]
    assert any(c["kind"] == "changed" and c["old"] == "rw" and c["new"] == "ro" for c in changes)


def test_review_of_ro_rw_on_a_mount_that_moved_shows_a_change():
    """The same replace, when mounts added before the cgroup mount moved it (a user's
    /run/lock bind makes /run go in front): the op's pointer is in the new document's
    terms, deepdiff's removal in the old one's. Found by the property test in CI."""
    from transformer.review import review_data

    config = runc_config()
    config["mounts"] = [
        {"destination": "/run/lock", "type": "bind", "source": "tmpfs"},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "tmpfs", "options": ["ro", "rw"]},
    ]
    result = run(config, cgroup="v1")
    assert [m["destination"] for m in result.config["mounts"]].index("/sys/fs/cgroup") > 1, "the mount did not move"
    changes = review_data(config, result, "t")["changes"]
    assert not [c for c in changes if c["kind"] == "removed" and c["pointer"].startswith("/mounts/")], changes
    moved = [c for c in changes if c["kind"] == "changed" and c["old"] == "rw" and c["new"] == "ro"]
    assert moved and moved[0]["concern"] != "unexplained", changes
