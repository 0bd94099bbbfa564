"""Properties over generated input, under the hypothesis profile of
OCI_SYSTEMD_HYPOTHESIS_PROFILE (dev, ci or fuzz: tests/harness/profiles.py):

- any JSON value (or any bytes) as config.json: the CLI succeeds or exits 2 with one
  line, never 123 and never a traceback;
- any config valid against the official OCI schema (drawn from the schema itself): the result
  is schema-valid and idempotent, or the config is refused with our own error;
- the result grants nothing beyond the policy (capabilities, host binds, writable
  cgroups, maskedPaths/readonlyPaths, namespaces and other privilege settings);
- the hook's state parser and the copy engine's path resolution take any input.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from hypothesis import assume, event, given, reject, settings
from hypothesis import strategies as st

from tests.harness.bundles import make_systemd_bundle
from tests.harness.planning import POLICY, SYSTEMD_ROOTFS, options, runc_config
from tests.harness.profiles import SETTINGS
from tests.harness.runner import cli
from transformer.config import check_config
from transformer.errors import OciSystemdError, StateError
from transformer.mounts import normalise
from transformer.plan import plan
from transformer.schema import DEFAULT_SCHEMA_DIR, load_validator, validate

# Each example of the schema-driven test costs more (big documents): a tenth of the count.
SCHEMA_SETTINGS = settings(SETTINGS, max_examples=max(30, SETTINGS.max_examples // 10))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@st.composite
def mangled(draw):
    """A real config with one node anywhere in it replaced by any JSON value."""
    config = runc_config()
    node, tokens = config, []
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
        tokens.append(key)
        node = node[key]
    if not tokens:
        return draw(json_values)
    parent = config
    for key in tokens[:-1]:
        parent = parent[key]
    parent[tokens[-1]] = draw(json_values)
    return config


def _encode(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


config_bytes = st.one_of(
    json_values.map(_encode),
    mangled().map(_encode),
    st.binary(max_size=200),
    mangled().map(_encode).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),  # truncated
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return make_systemd_bundle(tmp_path_factory.mktemp("prop") / "bundle")


@SETTINGS
@given(data=config_bytes, command=st.sampled_from(["plan", "review", "apply --check"]))
def test_any_config_succeeds_or_exits_2_in_one_line(scratch: Path, data: bytes, command: str):
    (scratch / "config.json").write_bytes(data)
    result = cli(*command.split(), str(scratch), "--cgroup", "v1", "--hook-path", "/usr/bin/h", "--container-id", "prop")
    rc, err = result.returncode, result.stderr.decode()
    assert rc in (0, 1, 2), (rc, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if rc == 2:
        assert err.count("\n") == 1 and err.startswith("oci-systemd: error: "), err
    assert (scratch / "config.json").read_bytes() == data


# -- the result grants nothing beyond the policy ---------------------------------------

CAPS = ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_BPF"]
DESTS = ["/run", "/tmp", "/sys/fs/cgroup", "/sys/fs/cgroup/systemd", "/etc/machine-id", "/var/log/journal",
         "/proc", "/data", "/run/lock", "/sys", "/dev/shm"]


@st.composite
def privileged_configs(draw):
    config = runc_config()
    linux = config["linux"]
    for name in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        if draw(st.booleans()):
            config["process"]["capabilities"][name] = draw(st.lists(st.sampled_from(CAPS), unique=True, max_size=4))
    if draw(st.booleans()):
        linux["maskedPaths"] = draw(st.lists(st.sampled_from(["/proc/kcore", "/sys/firmware", "/proc/keys"]),
                                             unique=True))
    if draw(st.booleans()):
        linux["readonlyPaths"] = draw(st.lists(st.sampled_from(["/proc/sys", "/proc/bus", "/sys/fs/cgroup"]),
                                               unique=True))
    if draw(st.booleans()):
        linux["namespaces"] = draw(st.lists(st.sampled_from(
            [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup", "user")]), max_size=7,
            unique_by=lambda n: n["type"]))
    config["root"]["readonly"] = draw(st.booleans())
    config["process"]["noNewPrivileges"] = draw(st.booleans())
    if draw(st.booleans()):
        config["mounts"].append({"destination": draw(st.sampled_from(DESTS)),
                                 "type": draw(st.sampled_from(["bind", "tmpfs", "cgroup", "cgroup2"])),
                                 "source": draw(st.sampled_from(["/", "/srv", "tmpfs", "cgroup"])),
                                 "options": draw(st.lists(st.sampled_from(["rw", "ro", "rbind", "nosuid"]),
                                                          max_size=3, unique=True))})
    if draw(st.booleans()):
        linux["cgroupsPath"] = draw(st.sampled_from(["/a/b", "system.slice:p:n", "/x"]))
    if draw(st.booleans()):
        linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    return config


option_sets = st.fixed_dictionaries({
    "cgroup": st.sampled_from(["v1", "v2", "hybrid", "legacy"]),
    "copy_up": st.sampled_from(["hook", "native"]),
    "force": st.booleans(),
    "container_id": st.sampled_from(["a", "f" * 64]),
    "journal": st.sampled_from(["tmpfs", "host"]),
})

UNCHANGED = [("process", "user"), ("process", "noNewPrivileges"), ("process", "apparmorProfile"),
             ("process", "selinuxLabel"), ("process", "rlimits"), ("linux", "seccomp"), ("linux", "devices"),
             ("linux", "uidMappings"), ("linux", "gidMappings"), ("linux", "sysctl"), ("linux", "resources"),
             ("root", "path")]


def _get(config, tokens):
    node = config
    for key in tokens:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _is_bind(mount) -> bool:
    return mount.get("type") == "bind" or bool({"bind", "rbind"} & set(mount.get("options") or []))


def _writable(mount) -> bool:
    return "ro" not in (mount.get("options") or [])


@SETTINGS
@given(config=privileged_configs(), opts=option_sets)
def test_result_grants_nothing_beyond_the_policy(config, opts):
    try:
        result = plan(copy.deepcopy(config), SYSTEMD_ROOTFS, options(**opts))
    except OciSystemdError:
        event("refused with our own error")
        reject()  # grants nothing at all: not an example of this property
    after = result.config
    # The view SYSTEMD_ROOTFS (no readable systemd version) gets on each host kind.
    view = "v1" if opts["cgroup"] in ("v1", "legacy") else "v2"
    userns = any(n.get("type") == "user" for n in config["linux"].get("namespaces", []))
    # Capabilities: a subset of the original's plus the policy's, per set; SYS_ADMIN
    # added only with a user namespace, where it is the container's own.
    before_caps = config["process"].get("capabilities") or {}
    for name, caps in (after["process"].get("capabilities") or {}).items():
        allowed = set(before_caps.get(name, [])) | set(POLICY.capabilities.capabilities)
        if userns:
            allowed |= set(POLICY.capabilities.user_namespace)
        assert set(caps) <= allowed, (name, set(caps) - allowed)
        added = set(caps) - set(before_caps.get(name, []))
        assert userns or not added & set(POLICY.capabilities.forbidden), added
    # Mounts: each user mount is kept (changed in place at most to lose rights), and
    # each added one is accounted for by the policy.
    remaining = list(config["mounts"])
    sides = {s.path for s in result.side_files}
    v1_dir = POLICY.cgroup_v1.hierarchy
    for mount in after["mounts"]:
        dest = normalise(mount["destination"])
        if mount in remaining:
            remaining.remove(mount)
            continue
        # The unified view retypes a cgroup mount on /sys/fs/cgroup to cgroup2 (safe on
        # every host); nothing else changes type.
        retyped = view == "v2" and dest == POLICY.cgroup_v2.mountpoint and mount.get("type") == "cgroup2"
        same = [m for m in remaining if (m["destination"], m.get("source")) == (mount["destination"], mount.get("source"))
                and (m.get("type") == mount.get("type") or retyped and m.get("type") == "cgroup")]
        if same:
            remaining.remove(same[0])
            v2_writable = view == "v2" and dest == POLICY.cgroup_v2.mountpoint
            assert v2_writable or not _writable(mount) or _writable(same[0]), ("widened", same[0], mount)
            continue
        if _is_bind(mount):
            source = mount.get("source", "")
            ok = (source in sides  # our machine-id file or masked unit, relative to the bundle
                  or (view == "v1" and source.startswith(v1_dir + "/") and dest == v1_dir)
                  or (opts["journal"] == "host" and source.startswith(POLICY.journal.host_directory.rstrip("/") + "/"))
                  or (source, dest) == (POLICY.run_host.os_release_source, POLICY.run_host.directory + "/os-release"))
            assert ok, f"bind of a host path the policy does not state: {mount}"
            if source == POLICY.run_host.os_release_source:
                assert not _writable(mount), mount  # the host's own os-release, read-only
            if source in sides:
                assert not _writable(mount), mount
        if dest == "/sys/fs/cgroup" or dest.startswith("/sys/fs/cgroup/"):
            if _writable(mount) and mount.get("type") in ("cgroup", "cgroup2", "bind", None):
                allowed = (view == "v1" and dest == v1_dir) or \
                          (view == "v2" and dest == POLICY.cgroup_v2.mountpoint)
                assert allowed, f"writable cgroup beyond the policy: {mount}"
    assert remaining == [], f"user mounts removed: {remaining}"
    # Never removed, never widened.
    for field in ("maskedPaths", "readonlyPaths"):
        assert set(config["linux"].get(field, [])) <= set(after["linux"].get(field, [])), field
    before_ns = {n["type"] for n in config["linux"].get("namespaces", [])}
    after_ns = {n["type"] for n in after["linux"].get("namespaces", [])}
    assert before_ns <= after_ns, "a namespace was removed"
    assert after_ns - before_ns <= {POLICY.cgroup_v2.namespace}, after_ns - before_ns
    if config["root"].get("readonly"):
        assert after["root"].get("readonly") is True
    for tokens in UNCHANGED:
        assert _get(after, tokens) == _get(config, tokens), tokens
    assert after.get("privileged") == config.get("privileged")


# -- any schema-valid config: the result is schema-valid and idempotent -----------------


def _oci_schema() -> dict | None:
    """The official schema with its file references inlined as local definitions (what
    hypothesis-jsonschema resolves)."""
    directory = Path(DEFAULT_SCHEMA_DIR)
    if not (directory / "config-schema.json").is_file():
        return None
    defs: dict = {}
    for name in ("defs.json", "defs-linux.json"):
        defs.update(json.loads((directory / name).read_text()).get("definitions", {}))
    schema = json.loads((directory / "config-schema.json").read_text())
    linux = json.loads((directory / "config-linux.json").read_text())

    def local(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and "#/definitions/" in ref:
                node = {**node, "$ref": "#/definitions/" + ref.split("#/definitions/")[1]}
            elif isinstance(ref, str) and ref.startswith("config-linux.json"):
                node = {k: v for k, v in linux.items() if k not in ("$schema", "$id", "id")}
            return {k: local(v) for k, v in node.items()}
        if isinstance(node, list):
            return [local(v) for v in node]
        return node

    schema = local(schema)
    schema["definitions"] = local(defs)
    schema.pop("$schema", None)
    schema.pop("$id", None)
    schema.pop("id", None)
    return schema


SCHEMA = _oci_schema()
VALIDATOR = load_validator() if SCHEMA is not None else None


def from_schema(node: dict, defs: dict, depth: int = 0) -> st.SearchStrategy:
    """A small JSON-schema-driven generator (type, properties, items, enum, const,
    pattern, minimum, $ref, oneOf/anyOf/allOf): what the OCI schema uses. Values it
    draws are checked against the real validator, so it may overshoot; it must not
    miss shapes. (hypothesis-jsonschema 0.23 fails on current hypothesis internals.)"""
    if "$ref" in node:
        return st.deferred(lambda: from_schema(defs[node["$ref"].split("/")[-1]], defs, depth + 1))
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    for key in ("oneOf", "anyOf"):
        if key in node:
            return st.one_of([from_schema(n, defs, depth + 1) for n in node[key]])
    if "allOf" in node:
        return from_schema(node["allOf"][0], defs, depth + 1)
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**node, "type": k}, defs, depth) for k in kind])
    if kind == "object" or "properties" in node:
        props = node.get("properties", {})
        required = [k for k in node.get("required", []) if k in props]
        if depth > 6:
            return st.fixed_dictionaries({k: from_schema(props[k], defs, depth + 1) for k in required})
        return st.fixed_dictionaries({k: from_schema(props[k], defs, depth + 1) for k in required},
                                     optional={k: from_schema(v, defs, depth + 1) for k, v in props.items()
                                               if k not in required})
    if kind == "array":
        items = node.get("items", {"type": "string"})
        return st.lists(from_schema(items, defs, depth + 1), min_size=node.get("minItems", 0), max_size=3)
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True)
        return st.sampled_from(["/run", "/tmp", "/", "rootfs", "/sbin/init", "a/b", "", "x=y", "CAP_KILL",
                                "tmpfs", "bind", "/sys/fs/cgroup", "ro", "rw", "..", "/run/lock/"]) | st.text(max_size=6)
    if kind == "integer":
        lo, hi = node.get("minimum", -(1 << 31)), node.get("maximum", (1 << 31) - 1)
        return st.integers(lo, hi)
    if kind == "number":
        return st.floats(node.get("minimum"), node.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.none() | st.booleans() | st.text(max_size=4)


def _schema_configs():
    # Only the parts the transformer reads or edits are generated from the schema; the
    # rest is runc's default, so examples stay small and meaningful.
    props = SCHEMA["properties"]
    return st.fixed_dictionaries({}, optional={k: from_schema(props[k], SCHEMA["definitions"])
                                               for k in ("root", "mounts", "annotations", "hooks", "hostname")
                                               if k in props})


@pytest.mark.skipif(SCHEMA is None, reason="OCI schema not installed")
def test_schema_is_available_where_required():
    assert VALIDATOR is not None


if SCHEMA is None:
    def test_schema_valid_configs_stay_valid_and_idempotent():
        from tests.harness.skips import skip_or_fail

        skip_or_fail("OCI schema not installed (golang-github-opencontainers-specs-dev)")
else:
    @SCHEMA_SETTINGS
    @given(generated=_schema_configs(), opts=option_sets)
    def test_schema_valid_configs_stay_valid_and_idempotent(generated, opts):
        config = runc_config()
        config.update(generated)
        config["ociVersion"] = "1.0.2"  # the schema's pattern-free string; ours knows 1.x.y
        assume(validate(config, VALIDATOR) == [])
        try:
            check_config(config, "config.json")
            result = plan(copy.deepcopy(config), SYSTEMD_ROOTFS, options(**{**opts, "force": True}))
        except OciSystemdError as exc:
            assert "\n" not in exc.one_line()
            event("refused with our error")
            return
        event("planned")
        assert validate(result.config, VALIDATOR) == [], "the result is not schema-valid"
        again = plan(copy.deepcopy(result.config), SYSTEMD_ROOTFS, options(**{**opts, "force": True}))
        assert again.patch() == [], "not idempotent"


# -- the hook's state parser and the copy engine's path resolution --------------------


state_docs = st.fixed_dictionaries(
    {},
    optional={"ociVersion": json_values | st.just("1.0.2"), "id": json_values | st.text(min_size=1),
              "status": st.sampled_from(["creating", "created", "running", "stopped"]) | json_values,
              "pid": st.integers(-5, 1 << 40) | json_values, "bundle": st.text() | st.just("/b") | json_values,
              "annotations": json_values, "root": json_values},
)


@SETTINGS
@given(raw=st.one_of(state_docs.map(_encode), st.binary(max_size=300),
                     state_docs.map(_encode).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n]))))
def test_state_parser_accepts_or_refuses_with_a_pointer(raw: bytes):
    from transformer.copyup.state import COPYABLE_STATUSES, parse_state

    try:
        s = parse_state(raw)
    except StateError as exc:
        line = exc.one_line()
        assert "\n" not in line and line.startswith("<stdin: OCI state>"), line
        return
    assert isinstance(s.pid, int) and s.pid > 0 and s.status in COPYABLE_STATUSES
    assert s.bundle.startswith("/") and "\0" not in s.bundle


path_parts = st.lists(st.sampled_from(["run", "..", ".", "", "lock", "etc", "a" * 300, "x\ny", "tmp"]), max_size=8)


@SETTINGS
@given(parts=path_parts)
def test_destination_check_accepts_only_normal_absolute_paths(parts):
    from transformer.copyup.bundle_view import check_destination
    from transformer.errors import OptionsError

    dest = "/" + "/".join(parts)
    try:
        got = check_destination(dest)
    except OptionsError as exc:
        assert "\n" not in exc.one_line().replace("\\n", "")
        return
    assert got == dest and os.path.normpath(dest) == dest and dest != "/" and ".." not in dest.split("/")


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory) -> tuple[Path, Path]:
    """An image whose links point out of it, at a canary outside."""
    top = tmp_path_factory.mktemp("resolve")
    canary = top / "outside"
    canary.mkdir()
    (canary / "secret").write_text("host\n")
    root = top / "rootfs"
    (root / "real" / "run").mkdir(parents=True)
    (root / "real" / "run" / "f").write_text("in image\n")
    os.symlink(str(canary), root / "abs")
    os.symlink("../../../../../" + str(canary).lstrip("/"), root / "dotdot")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("real", root / "rel")
    (root / "file").write_text("x")
    return root, canary


@SETTINGS
@given(parts=st.lists(st.sampled_from(["abs", "dotdot", "loop1", "rel", "real", "run", "file", "f", "secret",
                                       "nope"]), min_size=1, max_size=5))
def test_source_resolution_never_leaves_the_image(hostile_root, parts):
    """open_source walks fd-relative with O_NOFOLLOW: it returns an fd inside the image
    or None, or refuses; it never opens the canary outside."""
    from transformer.copyup.bundle_view import open_source
    from transformer.errors import CopyUpError

    root, canary = hostile_root
    rootfs_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = open_source(rootfs_fd, "/" + "/".join(parts))
    except (CopyUpError, OciSystemdError) as exc:
        assert "\n" not in exc.one_line()
        return
    finally:
        os.close(rootfs_fd)
    if fd is None:
        return
    try:
        st_fd = os.fstat(fd)
        assert (st_fd.st_dev, st_fd.st_ino) != (os.stat(canary).st_dev, os.stat(canary).st_ino)
        where = os.readlink(f"/proc/self/fd/{fd}")
        assert where.startswith(str(root) + "/") or where == str(root), where
    finally:
        os.close(fd)
