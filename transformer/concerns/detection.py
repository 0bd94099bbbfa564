"""Is PID 1 of this container systemd? (patches/detection.json)"""

from __future__ import annotations

import posixpath
import shlex
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ConfigError
from ..pointer import pointer
from ..rootfs import ResolveError, RootfsView
from .environment import env_value

if TYPE_CHECKING:
    from ..policy import Reader

_TRUE = ("true", "enabled", "yes", "1")
_FALSE = ("false", "disabled", "no", "0")


class DetectionPolicy(NamedTuple):
    why: str
    init_paths: tuple[str, ...]
    init_basenames: tuple[str, ...]
    # optOutEnv.name and optOutEnv.value
    opt_out_env_name: str
    opt_out_env_value: str
    annotation: str
    never_init: tuple[str, ...] = ()
    shells: tuple[str, ...] = ()


def parse(r: Reader) -> DetectionPolicy:
    return r.record(DetectionPolicy, sub={"opt_out_env_": r.obj("optOutEnv")})


# Detection runs before every concern and decides whether they run at all.
DOCUMENTS = {"detection": parse}


class Detection(NamedTuple):
    systemd: bool
    reason: str


def _unwrap_shell(args: list[str], shells: tuple[str, ...]) -> tuple[str | None, str]:
    """The command a `sh -c '...'` wrapper execs, or args[0] itself."""
    if len(args) >= 3 and posixpath.basename(args[0]) in shells:
        flag = args[1]
        if flag.startswith("-") and not flag.startswith("--") and "c" in flag[1:]:
            try:
                words = shlex.split(args[2])
            except ValueError:
                return None, f"cannot parse the {args[0]} -c command"
            # Skip `exec` and leading VAR=value assignments: `exec /sbin/init` is the idiom.
            while words and (words[0] == "exec" or ("=" in words[0] and not words[0].startswith(("/", "=")))):
                words.pop(0)
            if not words:
                return None, f"the {args[0]} -c command is empty"
            return words[0], f"{args[0]} -c runs {words[0]!r}"
    return args[0], f"process.args[0] is {args[0]!r}"


def _classify(command: str, rootfs: RootfsView, policy: DetectionPolicy) -> tuple[bool, str]:
    if command in policy.never_init:
        return False, f"{command} is a runtime-provided init, not systemd"
    resolved = command
    how = ""
    if command.startswith("/"):
        try:
            resolved = rootfs.resolve(command)
        except ResolveError:
            return False, f"{command} does not resolve inside the rootfs (symlink loop)"
        if resolved != command:
            how = f" (a link to {resolved} inside the rootfs)"
            if resolved in policy.never_init:
                return False, f"{command}{how} is a runtime-provided init"
        elif not rootfs.exists(command):
            how = f" (not in the {rootfs.label}; judged by name)"
    if resolved in policy.init_paths or posixpath.basename(resolved) in policy.init_basenames:
        return True, f"{command}{how} is systemd or init"
    return False, f"{command}{how} is not systemd or init"


def detect(config: dict[str, Any], rootfs: RootfsView, policy: DetectionPolicy, force: bool) -> Detection:
    if force:
        return Detection(True, "--force")
    annotation = (config.get("annotations") or {}).get(policy.annotation)
    if annotation is not None:
        value = annotation.strip().lower()
        if value in _TRUE:
            return Detection(True, f"annotation {policy.annotation}={annotation}")
        if value in _FALSE:
            return Detection(False, f"opted out by annotation {policy.annotation}={annotation}")
        raise ConfigError(
            f"must be true or false, not {annotation!r}", pointer=pointer(("annotations", policy.annotation))
        )
    process = config.get("process") or {}
    env = process.get("env") or []
    value = env_value(env, policy.opt_out_env_name)
    # The whole value, case-insensitively: "not-disabled" or "disabledX" do not opt out.
    if value is not None and value.lower() == policy.opt_out_env_value.lower():
        return Detection(False, f"opted out by env {policy.opt_out_env_name}={value}")
    args = process.get("args")
    if not args:
        return Detection(False, "the config has no process.args")
    command, how = _unwrap_shell(args, policy.shells)
    if command is None:
        return Detection(False, how)
    systemd, why = _classify(command, rootfs, policy)
    if command != args[0]:
        why = f"{how}; {why}"
    return Detection(systemd, why)
