"""The command line's declarations: the option tables its commands share, their long
help texts and the exit-code table that ends every --help. They are data for click,
kept apart so that cli.py reads as what each command does; cli.py applies them.

Of this package only errors is imported here: this module loads with every command,
even --help, so what a command needs beyond parsing is imported in its body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from .errors import EXIT_BAD_INPUT, EXIT_CHANGES, EXIT_INTERNAL, EXIT_OK

PROG = "oci-systemd"

CLI_HELP = """Make an OCI bundle ready to run systemd as PID 1 without --privileged.

    BUNDLE is a directory holding config.json and the rootfs; '-' reads a config on
    stdin and takes the working directory as the bundle.
    """

EXIT_CODES = f"""\b
Exit codes:
  {EXIT_OK}    success; nothing would change (--check), or the config is valid
  {EXIT_CHANGES}    changes are pending (apply --check), a golden case differs,
       or the config is invalid (validate)
  {EXIT_BAD_INPUT}    bad input: unreadable bundle, bad JSON, bad options, bad policy
  {EXIT_INTERNAL}  internal error (a bug; set OCI_SYSTEMD_DEBUG=1 for a traceback)
"""


def options(*decorators: Callable) -> Callable:
    """One decorator that applies DECORATORS as if written one above the other, the
    first on top, so that --help lists a table's options in the order written here."""

    def apply(f: Callable) -> Callable:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


DIRECTORY = click.Path(file_okay=False, path_type=Path)
POLICY = click.option("--policy", "policy_dir", type=DIRECTORY, metavar="DIR")
FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)

# The options every planning command (plan, apply, review, filter) shares.
TRANSFORM = options(
    click.option("--cgroup", type=click.Choice(["auto", "v2", "hybrid", "legacy", "v1"]), default="auto",
                 show_default=True,
                 help="The host's cgroups: auto probes /sys/fs/cgroup where this command runs; v2, hybrid or "
                      "legacy name the host's kind; v1 asks for the v1 view on any v1 host."),
    click.option("--copy-up", "copy_up", type=click.Choice(["hook", "native"]), default="hook", show_default=True,
                 help="hook: register oci-systemd-copyup as a prestart hook; native: runc/crun's tmpcopyup."),
    click.option("--hook-path", metavar="PATH",
                 help="Absolute path of oci-systemd-copyup for the hook (default: this install's hook.py run by this python -I -S)."),
    click.option("--container-id", metavar="ID",
                 help="Container ID the machine-id is derived from (default: the bundle's absolute path)."),
    click.option("--tmpfs-size", metavar="SIZE", help="Size of every added tmpfs (default: the policy's, 64m)."),
    click.option("--capabilities", metavar="CAP,...", help="Replace the policy's capability set (CAP_SYS_ADMIN is refused)."),
    click.option("--force", is_flag=True, help="Treat the container as systemd whatever its command."),
    click.option("--policy", "policy_dir", metavar="DIR", type=DIRECTORY,
                 help="Policy documents in DIR replace the built-in patches/ documents of the same name."),
    click.option("--runtime", default="runc", show_default=True, metavar="NAME",
                 help="Runtime probed for tmpcopyup support with --copy-up native."),
    click.option("--journal", type=click.Choice(["tmpfs", "host"]), default="tmpfs", show_default=True,
                 help="tmpfs: the journal dies with the container; host: bind /var/log/journal/<machine-id> "
                      "of the host (see `oci-systemd journal prune`)."),
    click.option("--host-os-release", "host_os_release", metavar="FILE|none",
                 help="The os-release whose ID fields become $container_host_* (default: this machine's "
                      "/etc/os-release, else /usr/lib/os-release); name the file of the host that will run the "
                      "bundle when preparing it elsewhere, or 'none'. /run/host/os-release is always the running "
                      "host's."),
)

# plan, apply and review take BUNDLE... and run them through the batch runner.
BATCH = options(
    click.argument("bundles", nargs=-1, required=True, metavar="BUNDLE..."),
    TRANSFORM,
    click.option("-j", "--jobs", type=click.IntRange(min=0), default=1, show_default=True, metavar="N",
                 help="Bundles handled in parallel (0: one per CPU)."),
    click.option("--report", metavar="FILE",
                 help="Write one JSON line per bundle (bundle, status, changes, error) to FILE ('-': stdout)."),
)

PLAN = options(
    BATCH,
    click.option("-o", "--output", default="-", show_default=True,
                 help="Write the patch here ('-': stdout); with several bundles one JSON line each."),
)
APPLY = options(
    BATCH,
    click.option("--check", is_flag=True, help="Write nothing; exit 1 when changes are pending."),
    click.option("--diff", "show_diff", is_flag=True, help="Print the review of the changes on stdout."),
)
REVIEW = options(
    BATCH,
    FORMAT,
    click.option("-o", "--output", default="-", show_default=True, help="Write the review here ('-': stdout)."),
)

# Appended to the help of plan, apply and review.
BATCH_HELP = """
    Several BUNDLEs are handled in one call (see --jobs): a bad bundle is reported and
    the others go on; a summary (changed, unchanged, skipped, failed) ends on stderr,
    with a progress bar when stderr is a terminal. The exit status is that of the
    worst bundle."""

FILTER = options(
    TRANSFORM,
    click.option("--side-dir", metavar="DIR",
                 help="Where the side files (machine-id, masked unit) go (default: /run/oci-systemd/<machine-id>)."),
)

FILTER_HELP = """Read a config.json on stdin, write the transformed config on stdout.

    \b
    The contract of podman's precreate hook stage (oci-hooks(5)); see
    `oci-systemd hooks-config --podman DIR`. A config that needs no change is
    written back byte for byte. The machine-id derives from the engine's container
    ID (in linux.cgroupsPath) or, failing that, from root.path. Side files are
    written to --side-dir and bound from there by absolute path, because the
    runtime's bundle directory is not known to a precreate hook (podman 4.3 runs it
    in podman's own working directory). A relative root.path is relative to the
    working directory.
    """

HOOKS_CONFIG = options(
    click.option("--hook-path", metavar="PATH",
                 help="Absolute path of oci-systemd-copyup (default: this install's hook.py run by this python -I -S)."),
    click.option("-o", "--output", default="-", show_default=True, help="Write the file here ('-': stdout)."),
    click.option("--podman", "podman_dir", metavar="DIR", type=DIRECTORY,
                 help="Write a hooks.d directory: 50-oci-systemd-filter.json (precreate filter) and "
                      "50-oci-systemd-copyup.json (prestart copy-up)."),
    click.option("--filter-path", metavar="PATH",
                 help="Absolute oci-systemd program for the precreate filter (default: this python -I -m transformer)."),
    click.option("--journal", type=click.Choice(["tmpfs", "host"]), default="tmpfs", show_default=True,
                 help="--journal for the filter."),
)

HOOKS_CONFIG_HELP = """Print an oci-hooks(5) file that makes podman or CRI-O run the copy-up helper.

    \b
    Install it as /etc/containers/oci/hooks.d/oci-systemd-copyup.json (admin) or
    /usr/share/containers/oci/hooks.d/ (packages), or pass podman --hooks-dir DIR.
    With --podman DIR, write both hooks.d files podman needs into DIR: the
    precreate filter (the whole transformation; podman >= 4 runs precreate hooks)
    and the prestart copy-up helper (also what CRI-O, which has no precreate
    stage, can use).
    """

VALIDATE = options(
    click.argument("bundle"),
    click.option("--schema-dir", type=DIRECTORY, metavar="DIR",
                 help="Directory of the runtime-spec schema (default: Debian's golang-github-opencontainers-specs-dev)."),
    FORMAT,
)

JOURNAL_PRUNE = options(
    click.option("--older-than", "days", type=click.FloatRange(min=0), default=30, show_default=True, metavar="DAYS",
                 help="Remove a directory when nothing in it changed for DAYS days (0: all of them)."),
    click.option("--dry-run", is_flag=True, help="Only print what would be removed."),
    POLICY,
)

JOURNAL_PRUNE_HELP = """Remove the host journal directories of containers that are gone.

    \b
    Only directories registered by oci-systemd (apply or filter with --journal host,
    one file each under the policy's registryDirectory, /var/lib/oci-systemd/journal)
    are considered, never the host's own journal or another tool's. A directory goes
    when its newest file is older than --older-than; journald writes at every boot
    and shutdown, so a running container's journal is younger than its uptime.
    Prints each removed directory on stdout.
    """

# golden check and golden update: a folder of cases, and the policy to plan them with.
GOLDEN = options(click.argument("directory", type=DIRECTORY), POLICY)
