"""oci-systemd-copyup: the edge. argv, stdin and exit codes; the work is elsewhere.

Exit codes (runc shows the one stderr line when a hook fails, and does not start the
container on any non-zero code):
  0    copied, or nothing to copy (and, with a user namespace, the cgroup delegated)
  1    refused or failed: copy (target not a private tmpfs, tree does not fit, hostile
       path, owner not mapped), cgroup guard (bundle prepared for another kind of host)
       or delegation (root or the hook's own cgroup)
  2    bad input (usage, malformed state JSON, missing bundle or config, pid gone)
  123  internal error (a bug)
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:
    # Run as a file (python3 -I -S .../transformer/copyup/main.py): put the directory
    # holding the transformer package on sys.path, so the hook needs no site-packages.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from transformer import __version__
from transformer.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, CopyUpError, OciSystemdError, OptionsError

EXIT_OK = 0
EXIT_REFUSED = 1
PROG = "oci-systemd-copyup"
STAGES = ("prestart", "createRuntime")

USAGE = f"""\
usage: {PROG} --stage {{prestart|createRuntime}} [DEST ...] < OCI-STATE-JSON

Copy the image's content of each DEST (an absolute container path whose tmpfs the
runtime has just mounted) into that tmpfs, keeping owners, modes, times, xattrs,
symlinks, hardlinks and special files. Without DEST, every tmpfs of config.json on
/run, /run/lock, /tmp, /var/log/journal, /var/lib/systemd or /var/tmp.
Runs as an OCI prestart or createRuntime hook (runtime-spec config "hooks").

Every run first refuses a cgroup view of config.json this host cannot give. With a
user namespace, it copies as the container's root and gives the container's
cgroup to that root (delegation), even when there is nothing to copy.

exit codes: 0 copied or nothing to copy, 1 refused or failed (copy, cgroup guard
            or delegation), 2 bad input, 123 internal error
"""


def parse_argv(argv: list[str]) -> tuple[str, list[str]] | str:
    """(stage, dests) from argv (without argv[0]); or "help"/"version"."""
    from transformer.copyup.bundle_view import check_destination

    stage = None
    dests: list[str] = []
    args = list(argv)
    only_dests = False
    while args:
        arg = args.pop(0)
        if only_dests or not arg.startswith("-"):
            dests.append(check_destination(arg))
        elif arg == "--":
            only_dests = True
        elif arg in ("-h", "--help"):
            return "help"
        elif arg == "--version":
            return "version"
        elif arg == "--stage" or arg.startswith("--stage="):
            if stage is not None:
                raise OptionsError("--stage given twice")
            if arg == "--stage":
                if not args:
                    raise OptionsError("--stage needs a value: prestart or createRuntime")
                stage = args.pop(0)
            else:
                stage = arg.partition("=")[2]
            if stage not in STAGES:
                raise OptionsError(
                    f"unknown stage {stage!r}: copy-up runs as prestart or createRuntime "
                    "(the runtime's mount namespace is needed, before pivot_root)"
                )
        else:
            raise OptionsError(f"unknown option {arg!r} (see --help)")
    if stage is None:
        raise OptionsError("--stage is required: prestart or createRuntime")
    if len(set(dests)) != len(dests):
        raise OptionsError("a destination is given twice")
    return stage, dests


def run(argv: list[str], stdin: bytes) -> int:
    parsed = parse_argv(argv)
    if parsed == "help":
        sys.stdout.write(USAGE)
        return EXIT_OK
    if parsed == "version":
        sys.stdout.write(f"{PROG} {__version__}\n")
        return EXIT_OK
    _stage, dests = parsed
    from transformer.copyup.run import copy_up
    from transformer.copyup.state import parse_state

    for dest, stats in copy_up(parse_state(stdin), dests):
        if stats.dropped_xattrs:
            # runc shows a hook's stderr only when it fails; podman and a log see it here
            sys.stderr.write(f"{PROG}: note: {dest}: {stats.dropped_xattrs} user.* xattr(s) not copied: "
                             "the tmpfs does not support them (Linux < 6.6)\n")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        stdin = b""
        if not {"-h", "--help", "--version"} & set(argv):
            stdin = _read_stdin()
        return run(argv, stdin)
    except CopyUpError as e:
        return _fail(e.one_line(), EXIT_REFUSED)  # == CopyUpError.exit_code
    except OciSystemdError as e:
        return _fail(e.one_line(), e.exit_code or EXIT_BAD_INPUT)
    except Exception as e:  # a bug: still one line, never a traceback (runc shows stderr)
        msg = f"internal error: {type(e).__name__}: {e}".replace("\n", "\\n")
        return _fail(msg, EXIT_INTERNAL)


def _read_stdin() -> bytes:
    from transformer.errors import StateError

    try:
        # One byte more than parse_state accepts, so an oversized state is reported.
        return sys.stdin.buffer.read((1 << 20) + 1) if sys.stdin is not None else b""
    except (OSError, ValueError, AttributeError) as e:
        raise StateError(f"cannot read the OCI state from stdin: {e}") from None


def _fail(message: str, code: int) -> int:
    try:
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass
    return code


if __name__ == "__main__":
    sys.exit(main())
