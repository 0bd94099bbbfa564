"""Policy documents are validated when loaded, with the file and pointer at fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from transformer.concerns import CONCERNS, detection
from transformer.errors import OptionsError, PolicyError
from transformer.options import Options, normalise_capability
from transformer.policy import DOCUMENTS, Policy, default_policy_dir, field_name, load_policy, parse_policy

PATCHES = Path(__file__).resolve().parent.parent / "patches"


def docs() -> dict:
    return {name: json.loads((PATCHES / f"{name}.json").read_text()) for name in DOCUMENTS}


def test_every_concern_has_one_document():
    assert sorted(p.stem for p in PATCHES.glob("*.json")) == sorted(DOCUMENTS)
    assert default_policy_dir().resolve() == PATCHES.resolve()


def test_policy_has_one_field_per_document_in_reading_order():
    """Detection's document first, then each concern's, in the order of CONCERNS."""
    assert DOCUMENTS == tuple(detection.DOCUMENTS) + tuple(name for c in CONCERNS for name in c.DOCUMENTS)
    assert Policy._fields == ("origin", *(field_name(name) for name in DOCUMENTS))


@pytest.mark.parametrize(
    "name,mutate,pointer",
    [
        ("capabilities", lambda d: d["capabilities"].append("CAP_SYS_ADMIN"), "/capabilities/13"),
        ("capabilities", lambda d: d["capabilities"].append("CAP_AUDIT_WRITE"), "/capabilities/13"),
        ("capabilities", lambda d: d["capabilities"].__setitem__(0, "chown"), "/capabilities/0"),
        ("capabilities", lambda d: d["sets"].append("bogus"), "/sets/3"),
        ("tmpfs", lambda d: d["mounts"][0].__setitem__("destination", "run"), "/mounts/0/destination"),
        ("tmpfs", lambda d: d["mounts"][1]["options"].append("size=1g"), "/mounts/1/options/4"),
        ("tmpfs", lambda d: d.pop("defaultSize"), "/defaultSize"),
        ("cgroup-v1", lambda d: d["cgroupMountOptions"].remove("ro"), "/cgroupMountOptions"),
        ("cgroup-v1", lambda d: d.__setitem__("defaultCgroupsPath", "rel"), "/defaultCgroupsPath"),
        ("machine-id", lambda d: d.__setitem__("sideDirectory", "/abs"), "/sideDirectory"),
        ("machine-id", lambda d: d.__setitem__("source", "a/b"), "/source"),
        ("copy-up", lambda d: d["hook"].__setitem__("stage", "poststop"), "/hook/stage"),
        ("copy-up", lambda d: d["hook"].__setitem__("timeout", True), "/hook/timeout"),
        ("environment", lambda d: d["set"][0].__setitem__("name", "a=b"), "/set/0/name"),
        ("detection", lambda d: d.__setitem__("initPaths", "/sbin/init"), "/initPaths"),
        ("annotations", lambda d: d.__setitem__("set", {}), "/set"),
    ],
)
def test_invalid_policy_names_file_and_pointer(name, mutate, pointer):
    documents = docs()
    mutate(documents[name])
    with pytest.raises(PolicyError) as err:
        parse_policy(documents, "policy")
    assert err.value.file == f"policy/{name}.json"
    assert err.value.pointer == pointer


def test_partial_policy_dir_falls_back_to_builtin_documents(tmp_path: Path):
    (tmp_path / "p").mkdir()
    doc = json.loads((PATCHES / "tmpfs.json").read_text())
    doc["defaultSize"] = "8m"
    (tmp_path / "p" / "tmpfs.json").write_text(json.dumps(doc))
    policy = load_policy(tmp_path / "p")
    assert policy.tmpfs.default_size == "8m"
    assert policy.capabilities == load_policy().capabilities
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match="holds none"):
        load_policy(tmp_path / "empty")


def test_missing_and_broken_documents(tmp_path: Path):
    shutil.copytree(PATCHES, tmp_path / "p")
    (tmp_path / "p" / "tmpfs.json").write_text("{")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "p")
    with pytest.raises(PolicyError, match="not a directory"):
        load_policy(tmp_path / "nope")


def test_options_validated_when_built():
    policy = load_policy()
    with pytest.raises(OptionsError):
        Options(policy=policy, container_id="x", cgroup="v3")  # type: ignore[arg-type]
    with pytest.raises(OptionsError):
        Options(policy=policy, container_id="x", copy_up="rsync")  # type: ignore[arg-type]
    with pytest.raises(OptionsError):
        Options(policy=policy, container_id="x", capabilities=("CAP_SYS_ADMIN",))
    with pytest.raises(Exception):
        Options(policy=policy, container_id="x").cgroup = "v2"  # frozen


def test_normalise_capability():
    assert normalise_capability(" chown ") == "CAP_CHOWN"
    assert normalise_capability("CAP_KILL") == "CAP_KILL"


# --- a typo in policy is an error, never a rule silently switched off ------------------


UNKNOWN = "unknown field"


@pytest.mark.parametrize(
    "name,mutate,pointer,message",
    [
        # "copyup" for "copyUp": copy-up of /run would silently stop.
        ("tmpfs", lambda d: d["mounts"][0].__setitem__("copyup", d["mounts"][0].pop("copyUp")), "/mounts/0/copyup",
         UNKNOWN),
        # "readOnlyRoot" for "readonlyRoot": the read-only extras would silently go.
        ("tmpfs", lambda d: d.__setitem__("readOnlyRoot", d.pop("readonlyRoot")), "/readOnlyRoot", UNKNOWN),
        ("machine-id", lambda d: d.__setitem__("maskunits", []), "/maskunits", UNKNOWN),
        ("capabilities", lambda d: d["seccompGenerator"].__setitem__("fromsystemd", 1), "/seccompGenerator/fromsystemd",
         UNKNOWN),
        ("copy-up", lambda d: d["native"].__setitem__("options", "tmpcopyup"), "/native/options", UNKNOWN),
        ("annotations", lambda d: d["set"][1].__setitem__("equivalents", []), "/set/1/equivalents", UNKNOWN),
        # "why" only where the engine reads it: elsewhere it would show nowhere.
        ("detection", lambda d: d["optOutEnv"].__setitem__("why", "documentation only"), "/optOutEnv/why", UNKNOWN),
        ("journal", lambda d: d.__setitem__("$comment", ["a", "list"]), "/$comment", "must be a string"),
        ("environment", lambda d: d.__setitem__("concern", "tmpfs"), "/concern", "names the 'tmpfs' document"),
    ],
)
def test_unknown_field_is_refused_with_file_and_pointer(name, mutate, pointer, message):
    documents = docs()
    mutate(documents[name])
    with pytest.raises(PolicyError) as err:
        parse_policy(documents, "policy")
    assert (err.value.file, err.value.pointer) == (f"policy/{name}.json", pointer)
    assert message in err.value.message


@pytest.mark.parametrize(
    "name,mutate,pointer",
    [
        ("tmpfs", lambda d: d["mounts"][1].__setitem__("destination", "/run//lock"), "/mounts/1/destination"),
        ("tmpfs", lambda d: d["mounts"][0].__setitem__("destination", "/run/./x"), "/mounts/0/destination"),
        ("tmpfs", lambda d: d["mounts"][0].__setitem__("destination", "/run/x/.."), "/mounts/0/destination"),
        ("tmpfs", lambda d: d["mounts"][0].__setitem__("destination", "//run"), "/mounts/0/destination"),
        ("tmpfs", lambda d: d["readonlyRoot"][0].__setitem__("destination", "/var/tmp/"),
         "/readonlyRoot/0/destination"),
        ("machine-id", lambda d: d.__setitem__("unitDirectory", "/run/systemd/./system"), "/unitDirectory"),
        ("machine-id", lambda d: d.__setitem__("sideDirectory", "a//b"), "/sideDirectory"),
        ("machine-id", lambda d: d.__setitem__("sideDirectory", "a/../b"), "/sideDirectory"),
        ("machine-id", lambda d: d.__setitem__("sideDirectory", "."), "/sideDirectory"),
        ("cgroup-v1", lambda d: d.__setitem__("defaultCgroupsPath", "/a//{machineId}"), "/defaultCgroupsPath"),
        ("journal", lambda d: d.__setitem__("hostDirectory", "var/log/journal"), "/hostDirectory"),
    ],
)
def test_path_not_in_normal_form_is_refused(name, mutate, pointer):
    documents = docs()
    mutate(documents[name])
    with pytest.raises(PolicyError) as err:
        parse_policy(documents, "policy")
    assert (err.value.file, err.value.pointer) == (f"policy/{name}.json", pointer)


def test_documentation_keys_are_allowed():
    """$comment anywhere (a string) and, at the top, the document's own concern name."""
    documents = docs()
    for name, doc in documents.items():
        doc["$comment"] = f"{name}: a note for the reader"
        assert doc.get("concern", name) == name
    documents["tmpfs"]["mounts"][0]["$comment"] = "nested comments too"
    documents["environment"].pop("concern")
    assert parse_policy(documents) == parse_policy(docs())


def test_every_shipped_document_loads_and_every_key_is_read():
    """The shipped patches/ pass the unknown-field check (no key there is dead)."""
    policy = load_policy()
    assert policy.origin == str(default_policy_dir())
    assert policy.capabilities.seccomp_generator.content == (PATCHES / "seccomp-generator.sh").read_bytes()
