"""Policy as data: the JSON documents in patches/ become frozen, validated values.

Each document is one concern. Validation happens here, when the policy is loaded,
with the file and JSON pointer of the offending field, so that planning only applies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

from .errors import PolicyError
from .pointer import pointer

DOCUMENTS = (
    "detection",
    "tmpfs",
    "cgroup-v1",
    "cgroup-v2",
    "machine-id",
    "journal",
    "capabilities",
    "environment",
    "annotations",
    "copy-up",
)

# Policy files that are not JSON documents: the seccomp generator, a POSIX sh script.
ASSETS = ("seccomp-generator.sh",)

_CAP = re.compile(r"^CAP_[A-Z0-9_]+$")


class _Reader:
    """Typed field access into one policy document, raising PolicyError with a pointer."""

    def __init__(self, doc: Any, file: str, tokens: tuple = ()):
        self.doc, self.file, self.tokens = doc, file, tokens
        if not isinstance(doc, dict):
            self._fail("must be an object")

    def _fail(self, message: str, *more: str | int) -> None:
        raise PolicyError(message, file=self.file, pointer=pointer(self.tokens + more) or "/")

    def _get(self, key: str, kind: type | tuple, default: Any = ...) -> Any:
        if key not in self.doc:
            if default is ...:
                self._fail("is required", key)
            return default
        value = self.doc[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            self._fail(f"must be {_kind_name(kind)}", key)
        return value

    def str(self, key: str, default: Any = ...) -> str:
        return self._get(key, str, default)

    def bool(self, key: str, default: Any = ...) -> bool:
        return self._get(key, bool, default)

    def int(self, key: str, default: Any = ...) -> int:
        return self._get(key, int, default)

    def strs(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self._get(key, list, default)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self._fail("must be a string", key, i)
        return tuple(value)

    def path(self, key: str) -> str:
        value = self.str(key)
        if not value.startswith("/") or "/../" in value + "/" or value != "/" and value.endswith("/"):
            self._fail("must be a normalised absolute path", key)
        return value

    def obj(self, key: str) -> "_Reader":
        return _Reader(self._get(key, dict), self.file, self.tokens + (key,))

    def objs(self, key: str, default: Any = ...) -> list["_Reader"]:
        value = self._get(key, list, default)
        return [_Reader(item, self.file, self.tokens + (key, i)) for i, item in enumerate(value)]


def _kind_name(kind: type | tuple) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", list: "a list", dict: "an object"}
    return names.get(kind, "of another type")  # type: ignore[arg-type]


class DetectionPolicy(NamedTuple):
    why: str
    init_paths: tuple[str, ...]
    init_basenames: tuple[str, ...]
    never_init: tuple[str, ...]
    shells: tuple[str, ...]
    opt_out_env_name: str
    opt_out_env_value: str
    annotation: str


class TmpfsMount(NamedTuple):
    destination: str
    options: tuple[str, ...]
    copy_up: bool
    why: str
    size: str | None


class TmpfsPolicy(NamedTuple):
    why: str
    default_size: str
    mounts: tuple[TmpfsMount, ...]
    readonly_root: tuple[TmpfsMount, ...]


class CgroupV1Policy(NamedTuple):
    why: str
    mountpoint: str
    cgroup_mount_options: tuple[str, ...]
    read_only_why: str
    hierarchy: str
    hierarchy_options: tuple[str, ...]
    hierarchy_why: str
    default_cgroups_path: str
    cgroups_path_why: str
    namespace: str
    namespace_why: str
    # The newest systemd that runs on v1; a newer one gets the unified view or is refused.
    last_systemd: int
    last_systemd_why: str
    hybrid_why: str


class CgroupV2Policy(NamedTuple):
    why: str
    mountpoint: str
    mount_type: str
    mount_type_why: str
    cgroup_mount_options: tuple[str, ...]
    writable_why: str
    namespace: str
    namespace_why: str
    hybrid_why: str
    sys_bind_shadow_options: tuple[str, ...]
    sys_bind_shadow_why: str


class MachineIdPolicy(NamedTuple):
    why: str
    side_directory: str
    destination: str
    source: str
    options: tuple[str, ...]
    bind_why: str
    env: str
    env_why: str
    unit_directory: str
    mask_source: str
    mask_units: tuple[str, ...]
    mask_why: str


class JournalPolicy(NamedTuple):
    why: str
    destination: str
    host_directory: str
    options: tuple[str, ...]
    bind_why: str
    registry_directory: str
    registry_why: str


class SeccompGenerator(NamedTuple):
    from_systemd: int
    script: str  # a file of the policy directory, beside the documents
    source: str
    destination: str
    options: tuple[str, ...]
    why: str
    content: bytes | None  # the script itself, read by load_policy


class CapabilitiesPolicy(NamedTuple):
    why: str
    sets: tuple[str, ...]
    capabilities: tuple[str, ...]
    # Never granted to a container whose root is the host's root.
    forbidden: tuple[str, ...]
    # Added when the config has a user namespace (they act on its namespaces only).
    user_namespace: tuple[str, ...]
    user_namespace_why: str
    seccomp_generator: SeccompGenerator


class EnvVar(NamedTuple):
    name: str
    value: str
    why: str


class EnvironmentPolicy(NamedTuple):
    why: str
    set: tuple[EnvVar, ...]


class Annotation(NamedTuple):
    key: str
    value: str
    equivalent: tuple[str, ...]
    why: str


class AnnotationsPolicy(NamedTuple):
    why: str
    set: tuple[Annotation, ...]


class CopyUpPolicy(NamedTuple):
    why: str
    hook_stage: str
    hook_name: str
    hook_script: str
    hook_timeout: int
    hook_why: str
    delegate_why: str
    native_option: str
    native_why: str


class Policy(NamedTuple):
    origin: str
    detection: DetectionPolicy
    tmpfs: TmpfsPolicy
    cgroup_v1: CgroupV1Policy
    cgroup_v2: CgroupV2Policy
    machine_id: MachineIdPolicy
    journal: JournalPolicy
    capabilities: CapabilitiesPolicy
    environment: EnvironmentPolicy
    annotations: AnnotationsPolicy
    copy_up: CopyUpPolicy


def _detection(r: _Reader) -> DetectionPolicy:
    opt_out = r.obj("optOutEnv")
    return DetectionPolicy(
        why=r.str("why"),
        init_paths=r.strs("initPaths"),
        init_basenames=r.strs("initBasenames"),
        never_init=r.strs("neverInit", []),
        shells=r.strs("shells", []),
        opt_out_env_name=opt_out.str("name"),
        opt_out_env_value=opt_out.str("value"),
        annotation=r.str("annotation"),
    )


def _tmpfs_mounts(items: list[_Reader]) -> tuple[TmpfsMount, ...]:
    mounts = []
    for m in items:
        options = m.strs("options")
        for i, option in enumerate(options):
            if option.startswith("size="):
                m._fail("put the size in \"size\", not in options", "options", i)
        mounts.append(
            TmpfsMount(
                destination=m.path("destination"),
                options=options,
                copy_up=m.bool("copyUp", False),
                why=m.str("why"),
                size=m.str("size", None),
            )
        )
    return tuple(mounts)


def _tmpfs(r: _Reader) -> TmpfsPolicy:
    return TmpfsPolicy(
        why=r.str("why"),
        default_size=r.str("defaultSize"),
        mounts=_tmpfs_mounts(r.objs("mounts")),
        readonly_root=_tmpfs_mounts(r.objs("readonlyRoot", [])),
    )


def _cgroup_v1(r: _Reader) -> CgroupV1Policy:
    options = r.strs("cgroupMountOptions")
    if "ro" not in options:
        r._fail("must contain ro: a writable cgroup mount on v1 exposes every controller", "cgroupMountOptions")
    template = r.str("defaultCgroupsPath")
    if not template.startswith("/"):
        r._fail("must be an absolute cgroup path", "defaultCgroupsPath")
    return CgroupV1Policy(
        why=r.str("why"),
        mountpoint=r.path("mountpoint"),
        cgroup_mount_options=options,
        read_only_why=r.str("readOnlyWhy"),
        hierarchy=r.path("hierarchy"),
        hierarchy_options=r.strs("hierarchyOptions"),
        hierarchy_why=r.str("hierarchyWhy"),
        default_cgroups_path=template,
        cgroups_path_why=r.str("cgroupsPathWhy"),
        namespace=r.str("namespace"),
        namespace_why=r.str("namespaceWhy"),
        last_systemd=r.int("lastSystemd"),
        last_systemd_why=r.str("lastSystemdWhy"),
        hybrid_why=r.str("hybridWhy"),
    )


def _cgroup_v2(r: _Reader) -> CgroupV2Policy:
    mount_type = r.str("mountType")
    if mount_type != "cgroup2":
        # "cgroup" is every v1 controller on a v1 host; writable there it hands the
        # container its own limits.
        r._fail("must be cgroup2: type cgroup mounts every v1 controller on a v1 host", "mountType")
    return CgroupV2Policy(
        why=r.str("why"),
        mountpoint=r.path("mountpoint"),
        mount_type=mount_type,
        mount_type_why=r.str("mountTypeWhy"),
        cgroup_mount_options=r.strs("cgroupMountOptions"),
        writable_why=r.str("writableWhy"),
        namespace=r.str("namespace"),
        namespace_why=r.str("namespaceWhy"),
        hybrid_why=r.str("hybridWhy"),
        sys_bind_shadow_options=r.strs("sysBindShadowOptions"),
        sys_bind_shadow_why=r.str("sysBindShadowWhy"),
    )


def _machine_id(r: _Reader) -> MachineIdPolicy:
    side = r.str("sideDirectory")
    if side.startswith("/") or ".." in side.split("/") or not side:
        r._fail("must be a relative directory inside the bundle", "sideDirectory")
    for key in ("source", "maskSource"):
        if "/" in r.str(key):
            r._fail("must be a plain file name", key)
    return MachineIdPolicy(
        why=r.str("why"),
        side_directory=side,
        destination=r.path("destination"),
        source=r.str("source"),
        options=r.strs("options"),
        bind_why=r.str("bindWhy"),
        env=r.str("env"),
        env_why=r.str("envWhy"),
        unit_directory=r.path("unitDirectory"),
        mask_source=r.str("maskSource"),
        mask_units=r.strs("maskUnits", []),
        mask_why=r.str("maskWhy"),
    )


def _journal(r: _Reader) -> JournalPolicy:
    options = r.strs("options")
    if "bind" not in options and "rbind" not in options:
        r._fail("must contain bind: the host directory is bind-mounted", "options")
    return JournalPolicy(
        why=r.str("why"),
        destination=r.path("destination"),
        host_directory=r.path("hostDirectory"),
        options=options,
        bind_why=r.str("bindWhy"),
        registry_directory=r.path("registryDirectory"),
        registry_why=r.str("registryWhy"),
    )


def _capabilities(r: _Reader) -> CapabilitiesPolicy:
    caps = r.strs("capabilities")
    forbidden = r.strs("forbidden", ["CAP_SYS_ADMIN"])
    for i, cap in enumerate(caps):
        if not _CAP.match(cap):
            r._fail("is not a capability name (CAP_...)", "capabilities", i)
        if cap in forbidden or cap == "CAP_SYS_ADMIN":
            r._fail(f"{cap} is never granted by oci-systemd", "capabilities", i)
    sets = r.strs("sets")
    for i, name in enumerate(sets):
        if name not in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            r._fail("is not a capability set", "sets", i)
    userns = r.obj("userNamespace")
    userns_caps = userns.strs("capabilities")
    for i, cap in enumerate(userns_caps):
        if not _CAP.match(cap):
            userns._fail("is not a capability name (CAP_...)", "capabilities", i)
    generator = r.obj("seccompGenerator")
    for key in ("script", "source"):
        if "/" in generator.str(key):
            generator._fail("must be a plain file name", key)
    options = generator.strs("options")
    if "noexec" in options:
        generator._fail("must not contain noexec: systemd executes the generator", "options")
    return CapabilitiesPolicy(
        why=r.str("why"),
        sets=sets,
        capabilities=caps,
        forbidden=forbidden,
        user_namespace=userns_caps,
        user_namespace_why=userns.str("why"),
        seccomp_generator=SeccompGenerator(
            from_systemd=generator.int("fromSystemd"),
            script=generator.str("script"),
            source=generator.str("source"),
            destination=generator.path("destination"),
            options=options,
            why=generator.str("why"),
            content=None,
        ),
    )


def _environment(r: _Reader) -> EnvironmentPolicy:
    items = []
    for e in r.objs("set"):
        name = e.str("name")
        if not name or "=" in name:
            e._fail("must be a variable name without '='", "name")
        items.append(EnvVar(name=name, value=e.str("value"), why=e.str("why")))
    return EnvironmentPolicy(why=r.str("why"), set=tuple(items))


def _annotations(r: _Reader) -> AnnotationsPolicy:
    items = []
    for a in r.objs("set"):
        value = a.str("value")
        items.append(
            Annotation(key=a.str("key"), value=value, equivalent=a.strs("equivalent", [value]), why=a.str("why"))
        )
    return AnnotationsPolicy(why=r.str("why"), set=tuple(items))


def _copy_up(r: _Reader) -> CopyUpPolicy:
    hook, native = r.obj("hook"), r.obj("native")
    stage = hook.str("stage")
    if stage not in ("prestart", "createRuntime"):
        hook._fail("must be prestart or createRuntime (the stages that see the new mounts before pivot_root)", "stage")
    return CopyUpPolicy(
        why=r.str("why"),
        hook_stage=stage,
        hook_name=hook.str("name"),
        hook_script=hook.str("script"),
        hook_timeout=hook.int("timeout"),
        hook_why=hook.str("why"),
        delegate_why=hook.str("delegateWhy"),
        native_option=native.str("option"),
        native_why=native.str("why"),
    )


_PARSERS: dict[str, Callable[[_Reader], Any]] = {
    "detection": _detection,
    "tmpfs": _tmpfs,
    "cgroup-v1": _cgroup_v1,
    "cgroup-v2": _cgroup_v2,
    "machine-id": _machine_id,
    "journal": _journal,
    "capabilities": _capabilities,
    "environment": _environment,
    "annotations": _annotations,
    "copy-up": _copy_up,
}


def parse_policy(
    docs: dict[str, Any], origin: str = "<memory>", files: dict[str, str] | None = None,
    assets: dict[str, bytes] | None = None,
) -> Policy:
    """Pure: turn the already-loaded documents (name -> JSON value) into a Policy.
    `files` names where each document came from, for error messages; `assets` holds
    the non-JSON files the documents name (the seccomp generator script)."""
    parsed = {}
    for name in DOCUMENTS:
        file = (files or {}).get(name, f"{origin}/{name}.json")
        if name not in docs:
            raise PolicyError("policy document is missing", file=file)
        parsed[name.replace("-", "_")] = _PARSERS[name](_Reader(docs[name], file))
    generator = parsed["capabilities"].seccomp_generator
    if assets is not None:
        if generator.script not in assets:
            raise PolicyError("policy file is missing", file=f"{origin}/{generator.script}")
        parsed["capabilities"] = parsed["capabilities"]._replace(
            seccomp_generator=generator._replace(content=assets[generator.script])
        )
    return Policy(origin=origin, **parsed)


def default_policy_dir() -> Path:
    here = Path(__file__).resolve().parent
    # Installed wheel: transformer/patches; source checkout or editable install: ../patches.
    for candidate in (here / "patches", here.parent / "patches"):
        if (candidate / "tmpfs.json").is_file():
            return candidate
    raise PolicyError("the built-in policy (patches/) is not installed next to the package", file=str(here))


def load_policy(directory: Path | None = None) -> Policy:
    """Edge: read the policy documents (the built-in ones by default).

    A user's --policy DIR need only hold the documents it changes: each one present
    replaces the built-in document of the same name, the others stay built-in. So a
    concern added by an upgrade does not break a directory written before it."""
    builtin = default_policy_dir()
    directory = directory or builtin
    if not directory.is_dir():
        raise PolicyError("is not a directory", file=str(directory))
    if directory != builtin and not any((directory / f"{name}.json").is_file() for name in DOCUMENTS):
        raise PolicyError(f"holds none of the policy documents ({', '.join(DOCUMENTS)}.json)", file=str(directory))
    docs, files = {}, {}
    for name in DOCUMENTS:
        path = directory / f"{name}.json"
        if not path.exists() and directory != builtin:
            path = builtin / f"{name}.json"
        try:
            docs[name] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError("policy document is missing", file=str(path)) from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise PolicyError(f"cannot read policy: {exc}", file=str(path)) from None
        files[name] = str(path)
    assets = {}
    for name in ASSETS:
        path = directory / name
        if not path.exists() and directory != builtin:
            path = builtin / name
        try:
            assets[name] = path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"cannot read policy file ({exc.strerror})", file=str(path)) from None
    return parse_policy(docs, str(directory), files, assets)
