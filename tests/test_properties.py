"""Properties that hold for every config, checked with hypothesis (the dev, ci or fuzz
profile of tests/harness/profiles.py).

A patch never removes or alters a user's mounts, env or capabilities except where
the review says so; it is idempotent; it applies with jsonpatch; its output passes
the OCI schema; and no input makes the core fail with anything but our own error.
A config the core refuses is no example of the first two: hypothesis is told so
(reject) and draws another, and counts the refusals in its statistics.
"""

from __future__ import annotations

import copy
import json

import jsonpatch
from hypothesis import event, given, reject
from hypothesis import strategies as st

from tests.harness.planning import POLICY, SYSTEMD_ROOTFS, options, runc_config
from tests.harness.profiles import SETTINGS
from transformer.config import check_config
from transformer.errors import OciSystemdError
from transformer.mounts import normalise
from transformer.plan import plan
from transformer.review import review_data
from transformer.schema import DEFAULT_SCHEMA_DIR, load_validator, validate

VALIDATOR = load_validator() if (DEFAULT_SCHEMA_DIR / "config-schema.json").is_file() else None

DESTINATIONS = ["/run", "/run/", "/run/lock", "/run/.containerenv", "/run/secrets", "/tmp", "//tmp", "/data",
                "/var/log/journal", "/var/log/journal/x", "/etc/machine-id", "/sys/fs/cgroup", "/sys/fs/cgroup/systemd",
                "/var/lib/systemd", "/var/tmp", "/run/systemd/system/systemd-machine-id-commit.service"]
OPTIONS = ["ro", "rw", "nosuid", "nodev", "noexec", "bind", "rbind", "mode=700", "tmpcopyup", "size=1m"]
ARGS = [["/sbin/init"], ["/usr/sbin/init"], ["/lib/systemd/systemd", "--log-level=debug"], ["systemd"],
        ["/bin/sh", "-c", "exec /sbin/init"], ["/bin/sh", "-c", "echo ok"], ["/usr/bin/app"], ["/dev/init", "x"]]
ENV = ["container=podman", "container_uuid=0123456789abcdef0123456789abcdef", "oci-systemd-hook=disabled",
       "oci-systemd-hook=no", "FOO=bar", "container=", "HOME=/root"]
CAPS = ["CAP_CHOWN", "CAP_SYS_PTRACE", "CAP_KILL", "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SETUID"]

mount = st.fixed_dictionaries(
    {"destination": st.sampled_from(DESTINATIONS), "type": st.sampled_from(["bind", "tmpfs", "cgroup", "none"]),
     "source": st.sampled_from(["tmpfs", "/srv/x", "cgroup"])},
    optional={"options": st.lists(st.sampled_from(OPTIONS), max_size=4)},
)


@st.composite
def configs(draw):
    config = runc_config(root__readonly=draw(st.booleans()))
    config["process"]["args"] = draw(st.sampled_from(ARGS))
    config["process"]["env"] += draw(st.lists(st.sampled_from(ENV), max_size=3, unique=True))
    if draw(st.booleans()):
        config["mounts"] += draw(st.lists(mount, max_size=5))
    else:
        config["mounts"] = draw(st.lists(mount, max_size=5))
    for name in ("bounding", "effective", "permitted"):
        if draw(st.booleans()):
            config["process"]["capabilities"][name] = draw(st.lists(st.sampled_from(CAPS), unique=True))
    if draw(st.booleans()):
        del config["process"]["capabilities"]
    if draw(st.booleans()):
        config["linux"]["cgroupsPath"] = draw(st.sampled_from(["/a/b", "machine.slice:p:n", "/x"]))
    if draw(st.booleans()):
        config["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2"
    if draw(st.booleans()):
        config["annotations"] = draw(
            st.dictionaries(
                st.sampled_from(["org.opencontainers.image.stopSignal", "a/b", "oci-systemd/enabled", "x~y"]),
                st.sampled_from(["15", "37", "SIGRTMIN+3", "true", "false", ""]),
            )
        )
    if draw(st.booleans()):
        config["hooks"] = {"prestart": [{"path": "/usr/bin/other-hook", "args": ["other-hook"]}]}
    return config


option_sets = st.fixed_dictionaries(
    {"cgroup": st.sampled_from(["v1", "v2", "hybrid", "legacy"]), "copy_up": st.sampled_from(["hook", "native"]),
     "force": st.booleans(), "container_id": st.sampled_from(["a", "b" * 64, "7" * 40])}
)


def _planned(config, opts):
    """The plan of config; a config refused with our own error (an annotation that is
    not true/false, say) is not an example, and hypothesis draws another."""
    try:
        return plan(copy.deepcopy(config), SYSTEMD_ROOTFS, options(**opts))
    except OciSystemdError:
        event("refused with our own error")
        reject()


def _explained(result, pointer: str) -> bool:
    return any(op.at == pointer or pointer.startswith(op.at + "/") for op in result.ops)


@SETTINGS
@given(configs(), option_sets)
def test_never_removes_or_silently_alters_user_state(config, opts):
    result = _planned(config, opts)
    after = result.config
    # Mounts: every user mount is still there, in the same relative order; any change
    # to one of its fields is made by an op (and so shown in the review).
    positions = []
    remaining = list(enumerate(after.get("mounts", [])))
    for original in config.get("mounts", []):
        # The type may change only by an op: the unified view retypes cgroup to cgroup2.
        match = next((i for i, m in remaining if m["destination"] == original["destination"] and m.get("source") == original.get("source")), None)
        assert match is not None, f"user mount {original} disappeared"
        remaining = [(i, m) for i, m in remaining if i != match]
        positions.append(match)
        if after["mounts"][match].get("type") != original.get("type"):
            assert any(op.op == "replace" and op.at == f"/mounts/{match}/type" for op in result.ops)
            assert (original.get("type"), after["mounts"][match]["type"]) == ("cgroup", "cgroup2")
        if after["mounts"][match] != original:
            assert _explained(result, f"/mounts/{match}/options") or any(op.at.startswith(f"/mounts/{match}/") for op in result.ops)
    assert positions == sorted(positions), "user mounts were reordered"
    for entry in config["process"].get("env", []):
        assert entry in after["process"]["env"]
    # The user's capabilities stay, but for the withheld ones (CAP_AUDIT_*), which go
    # unless --capabilities names them
    withheld = set(POLICY.capabilities.withheld) - set(opts.get("capabilities") or ()) if result.systemd else set()
    for name, caps in (config["process"].get("capabilities") or {}).items():
        assert set(caps) - withheld <= set(after["process"]["capabilities"][name])
        assert not set(after["process"]["capabilities"][name]) & withheld
    added_caps = {c for caps in (after["process"].get("capabilities") or {}).values() for c in caps} - {
        c for caps in (config["process"].get("capabilities") or {}).values() for c in caps
    }
    # CAP_SYS_ADMIN only for a root that is not the host's: with a user namespace.
    userns = any(ns.get("type") == "user" for ns in (config.get("linux") or {}).get("namespaces") or [])
    assert userns or "CAP_SYS_ADMIN" not in added_caps
    for key, value in (config.get("annotations") or {}).items():
        if after["annotations"][key] != value:
            assert any(op.op == "replace" and op.path.startswith("/annotations/") for op in result.ops)
    # deepdiff's account of the change: nothing removed but a withheld capability,
    # everything explained.
    data = review_data(config, result, "property")
    assert not [c for c in data["changes"] if c["kind"] == "removed" and c["old"] not in withheld]
    assert not [c for c in data["changes"] if c["concern"] == "unexplained"], data["changes"]


@SETTINGS
@given(configs(), option_sets)
def test_idempotent_applies_and_schema_valid(config, opts):
    result = _planned(config, opts)
    patched = jsonpatch.apply_patch(config, result.patch())
    assert patched == result.config
    again = plan(copy.deepcopy(patched), SYSTEMD_ROOTFS, options(**opts))
    assert again.patch() == []
    if VALIDATOR is not None:
        assert validate(patched, VALIDATOR) == []
    # A v1 result never makes a cgroup mount on /sys/fs/cgroup writable.
    if opts["cgroup"] == "v1" and result.systemd:
        for m in patched["mounts"]:
            if normalise(m["destination"]) == "/sys/fs/cgroup" and m.get("type") in ("cgroup", "cgroup2"):
                assert "rw" not in m.get("options", [])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@st.composite
def mangled_configs(draw):
    """Real configs with one field replaced by arbitrary JSON."""
    config = runc_config()
    path = draw(st.sampled_from([("process", "args"), ("process", "env"), ("mounts",), ("mounts", 0),
                                 ("linux",), ("linux", "namespaces"), ("annotations",), ("hooks",), ("root",),
                                 ("process", "capabilities"), ("ociVersion",), ("process",)]))
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = draw(json_values)
    return config


@SETTINGS
@given(st.one_of(json_values, mangled_configs()), option_sets)
def test_any_json_is_planned_or_refused_with_our_error(value, opts):
    try:
        check_config(value, "config.json")
        plan(value, SYSTEMD_ROOTFS, options(**opts))
        event("planned")
    except OciSystemdError as exc:
        event("refused with our own error")
        assert "\n" not in exc.one_line()
