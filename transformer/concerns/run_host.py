"""/run/host and the host's identity in PID 1's environment (patches/run-host.json).

systemd's container interface lets a manager tell the payload who runs it and on what
host.  Two of the /run/host files repeat values of PID 1's environment ($container,
$container_uuid), so this concern runs after environment and machine-id and writes
what PID 1 will really see, a value the config kept included.  The host's os-release is
bound from the host at run time; its ID fields in the environment can only be the
plan-time host's (Options.host_os_release), because a config's environment is fixed
before the runtime starts.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, NamedTuple

from .. import mounts
from ..draft import Draft
from .context import Context
from .environment import env_value, set_unless_set

if TYPE_CHECKING:
    from ..policy import AbsolutePath, FileName, Reader

CONCERN = "run-host"


class RunHostPolicy(NamedTuple):
    why: str
    directory: AbsolutePath
    options: tuple[str, ...]
    manager_env: str
    manager_source: FileName
    manager_why: str
    uuid_env: str
    uuid_source: FileName
    uuid_why: str
    os_release_source: AbsolutePath
    os_release_why: str
    host_env_prefix: str
    host_env_keys: tuple[str, ...]
    host_env_why: str


def parse(r: Reader) -> RunHostPolicy:
    return r.record(RunHostPolicy)


DOCUMENTS = {CONCERN: parse}


def parse_os_release(text: str) -> tuple[tuple[str, str], ...]:
    """KEY=VALUE lines of os-release(5), shell-quoted values unquoted; comments, blank
    and malformed lines skipped, as systemd's own parser skips them."""
    fields = []
    for line in text.splitlines():
        key, sep, raw = line.strip().partition("=")
        if not sep or not key or key.startswith("#") or not key.replace("_", "").isalnum():
            continue
        try:
            words = shlex.split(raw)
        except ValueError:
            continue  # an unbalanced quote
        fields.append((key, words[0] if len(words) == 1 else ""))
    return tuple(fields)


def contribute(draft: Draft, ctx: Context) -> None:
    policy = ctx.options.policy.run_host
    if not mounts.on_tmpfs(draft.doc["mounts"], policy.directory):
        # runc would create the mount points where /run/host really is: on the image, or
        # on the host through a bind
        draft.note("warning", CONCERN, f"{policy.directory} is not on a tmpfs mount; /run/host not provided")
    else:
        env = draft.get("process", "env") or []
        for name, source, why in ((policy.manager_env, policy.manager_source, policy.manager_why),
                                  (policy.uuid_env, policy.uuid_source, policy.uuid_why)):
            value = env_value(env, name)
            if value is None:
                draft.note("warning", CONCERN, f"no ${name}: {policy.directory}/{source} not provided")
                continue
            _bind(draft, ctx, f"{policy.directory}/{source}", ctx.options.side_source(source), why,
                  content=(value + "\n").encode("utf-8", "surrogateescape"))
        _bind(draft, ctx, f"{policy.directory}/os-release", policy.os_release_source, policy.os_release_why)
    host = dict(ctx.options.host_os_release)
    for key in policy.host_env_keys:
        if host.get(key):
            set_unless_set(draft, policy.host_env_prefix + key.lower(), host[key], CONCERN, policy.host_env_why)


def _bind(draft: Draft, ctx: Context, destination: str, source: str, why: str, content: bytes | None = None) -> None:
    mount = {"destination": destination, "type": "bind", "source": source,
             "options": list(ctx.options.policy.run_host.options)}
    if mounts.add_unless_mounted(draft, mount, CONCERN, why, ctx.resolve_quietly) and content is not None:
        draft.side_file(source, content, 0o444)
