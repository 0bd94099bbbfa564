"""The capability set systemd needs, and what follows from its limits
(patches/capabilities.json).

A container whose root is the host's root never gets CAP_SYS_ADMIN: with it, a mount of
cgroup v1 (release_agent) or a remount of /sys/fs/cgroup is a way out. With a user
namespace the container gets it (and CAP_SYS_PTRACE), acting on its own namespaces only,
as systemd-nspawn grants them; systemd >= 255 needs it for units with User= and a
seccomp setting. Without it, the seccomp generator keeps those units starting.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from .. import mounts
from ..draft import Draft
from ..errors import PolicyError
from .context import Context

if TYPE_CHECKING:
    from ..policy import AbsolutePath, FileName, Reader

CONCERN = "capabilities"

CAPABILITY_NAME = re.compile(r"^CAP_[A-Z0-9_]+$")
SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


class SeccompGenerator(NamedTuple):
    from_systemd: int
    script: FileName  # a file of the policy directory, beside the documents
    source: FileName
    destination: AbsolutePath
    options: tuple[str, ...]
    why: str
    content: bytes | None  # the script itself, None when the policy is parsed without its files


class CapabilitiesPolicy(NamedTuple):
    why: str
    sets: tuple[str, ...]
    capabilities: tuple[str, ...]
    # userNamespace.capabilities: added when the config has a user namespace (they act
    # on its namespaces only), and userNamespace.why
    user_namespace: tuple[str, ...]
    user_namespace_why: str
    seccomp_generator: SeccompGenerator
    # withheld.capabilities: removed from every set of the config (unless --capabilities
    # names them), and withheld.why
    withheld: tuple[str, ...]
    withheld_why: str
    # Never granted to a container whose root is the host's root.
    forbidden: tuple[str, ...] = ("CAP_SYS_ADMIN",)


def _capability_names(r: Reader, key: str) -> tuple[str, ...]:
    names = r.strs(key)
    for i, cap in enumerate(names):
        if not CAPABILITY_NAME.match(cap):
            r.fail("is not a capability name (CAP_...)", key, i)
    return names


def _parse_generator(g: Reader) -> SeccompGenerator:
    generator = g.record(SeccompGenerator, content=g.asset("script"))
    if "noexec" in generator.options:
        g.fail("must not contain noexec: systemd executes the generator", "options")
    return generator


def parse(r: Reader) -> CapabilitiesPolicy:
    userns = r.obj("userNamespace")
    withheld = r.obj("withheld")
    policy = r.record(
        CapabilitiesPolicy,
        sub={"user_namespace_": userns, "withheld_": withheld},
        capabilities=_capability_names(r, "capabilities"),
        user_namespace=_capability_names(userns, "capabilities"),
        withheld=_capability_names(withheld, "capabilities"),
        seccomp_generator=_parse_generator(r.obj("seccompGenerator")),
    )
    for i, cap in enumerate(policy.capabilities):
        if cap in policy.forbidden or cap == "CAP_SYS_ADMIN":
            r.fail(f"{cap} is never granted by oci-systemd", "capabilities", i)
        if cap in policy.withheld:
            r.fail(f"{cap} is both granted and withheld", "capabilities", i)
    for i, name in enumerate(policy.sets):
        if name not in SETS:
            r.fail("is not a capability set", "sets", i)
    return policy


DOCUMENTS = {CONCERN: parse}


def contribute(draft: Draft, ctx: Context) -> None:
    policy = ctx.options.policy.capabilities
    wanted = list(ctx.options.capabilities if ctx.options.capabilities is not None else policy.capabilities)
    why = policy.why
    if ctx.options.capabilities is not None:
        why = "the capability set given with --capabilities"
    if ctx.user_namespace:
        extra = [cap for cap in policy.user_namespace if cap not in wanted]
        wanted += extra
        if extra:
            why = why.rstrip(".") + f"; with a user namespace also {', '.join(extra)}: {policy.user_namespace_why}"
    if draft.get("process", "capabilities") is None:
        draft.ensure_object(("process",), CONCERN, "the config has no process section")
        draft.add(("process", "capabilities"), {}, CONCERN, "the config has no process.capabilities")
    _withhold(draft, ctx, wanted)
    for name in policy.sets:
        current = draft.get("process", "capabilities", name)
        if current is None:
            draft.add(("process", "capabilities", name), list(wanted), CONCERN, why)
            continue
        missing = [cap for cap in wanted if cap not in current]
        for cap in missing:
            draft.add(("process", "capabilities", name, "-"), cap, CONCERN, why)
        if not missing:
            draft.note("kept", CONCERN, f"{name} already holds every capability systemd needs")
    # Never widen the user's grant to CAP_SYS_ADMIN; say so if they granted it themselves.
    if not ctx.user_namespace:
        for name, caps in (draft.get("process", "capabilities") or {}).items():
            for cap in policy.forbidden:
                if cap in caps:
                    draft.note(
                        "warning", CONCERN,
                        f"the config itself grants {cap} in {name} to the host's root; kept, but systemd does not need it",
                    )
    _seccomp_generator(draft, ctx)


def _withhold(draft: Draft, ctx: Context, wanted: list[str]) -> None:
    """The withheld capabilities out of every set that holds them, one replace of that set
    each (the review shows each removal with the reason); --capabilities naming one keeps
    it, as the user's own explicit grant."""
    policy = ctx.options.policy.capabilities
    withheld = [cap for cap in policy.withheld if cap not in wanted]
    for name in SETS:
        current = draft.get("process", "capabilities", name)
        if not isinstance(current, list):
            continue
        kept = [cap for cap in current if cap not in withheld]
        if len(kept) != len(current):
            draft.replace(("process", "capabilities", name), kept, CONCERN, policy.withheld_why)


def _seccomp_generator(draft: Draft, ctx: Context) -> None:
    """Bind the generator into the /run tmpfs when PID 1 will lack CAP_SYS_ADMIN and the
    image's systemd is one that needs it (255 or later, or a version we cannot read)."""
    generator = ctx.options.policy.capabilities.seccomp_generator
    bounding = draft.get("process", "capabilities", "bounding") or []
    if "CAP_SYS_ADMIN" in bounding:
        return
    if ctx.systemd is not None and ctx.systemd.version < generator.from_systemd:
        return
    directory = mounts.normalise(generator.destination.rsplit("/", 1)[0])
    if not mounts.on_tmpfs(draft.doc["mounts"], directory):
        draft.note(
            "warning",
            CONCERN,
            f"{directory} is not on a tmpfs mount; no seccomp generator, so units with User= and seccomp "
            "settings may fail with 'Failed to keep CAP_SYS_ADMIN'",
        )
        return
    if generator.content is None:
        raise PolicyError("the seccomp generator script was not loaded with the policy", file=generator.script)
    source = ctx.options.side_source(generator.source)
    if mounts.add_unless_mounted(
        draft,
        {"destination": generator.destination, "type": "bind", "source": source, "options": list(generator.options)},
        CONCERN,
        generator.why,
    ):
        draft.side_file(source, generator.content, 0o555)
