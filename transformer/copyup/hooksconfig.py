"""The oci-hooks(5) file that makes podman or CRI-O inject the helper by itself.

Put the document in a hooks.d directory (/etc/containers/oci/hooks.d/ or
/usr/share/containers/oci/hooks.d/, or podman --hooks-dir DIR). The hook then gets no
DEST arguments: a hooks.d file cannot know the bundle's mounts, so the helper copies
into every tmpfs of config.json on a destination of patches/tmpfs.json
(bundle_view.policy_destinations).
"""

from __future__ import annotations

from transformer.errors import OptionsError

HOOKS_VERSION = "1.0.0"

# oci-hooks(5): "If the configured process.args[0] matches an entry" -- an unanchored
# POSIX ERE search (Go's regexp.MatchString in containers/common). Anchor both ends
# so "/sbin/init" and "init" match but "/usr/bin/not-init-really" does not.
COMMANDS = ("^(.*/)?init$", "^(.*/)?systemd$")

# prestart runs in the runtime's mount namespace before pivot_root, which is what the
# helper needs; oci-hooks(5) consumers (podman 4.3) accept it for every runtime.
STAGES = ("prestart",)

TIMEOUT_SECONDS = 30


def hooks_config(hook: str | tuple[str, ...]) -> dict:
    """An oci-hooks(5) 1.0.0 document injecting the helper as a prestart hook.

    ``hook`` is the helper's absolute path, or a command: an absolute program and its
    leading arguments (``("/usr/bin/python3", "-I", "-S", ".../hook.py")``)."""
    command = (hook,) if isinstance(hook, str) else tuple(hook)
    hook_path = command[0] if command else None
    if not isinstance(hook_path, str) or not hook_path.startswith("/") or "\0" in hook_path:
        # runtime-spec: a hook's path MUST be absolute.
        raise OptionsError(f"hook path {hook_path!r}: must be an absolute path")
    args = ["oci-systemd-copyup"] if len(command) == 1 else [hook_path.rsplit("/", 1)[-1], *command[1:]]
    return {
        "version": HOOKS_VERSION,
        "hook": {
            "path": hook_path,
            "args": [*args, "--stage", STAGES[0]],
            "timeout": TIMEOUT_SECONDS,
        },
        "when": {"commands": list(COMMANDS)},
        "stages": list(STAGES),
    }
