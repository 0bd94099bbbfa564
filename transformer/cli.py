"""The command line: a thin click shell. It parses options, hands them to the one-bundle
job (job.py) through the batch runner (batch.py) or the podman filter (podman.py),
prints what they return, and maps errors to the documented exit codes.

stdout carries only the product (a patch, a review, a config, a report); messages go
to stderr, one line each. Nothing imports this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .errors import EXIT_BAD_INPUT, EXIT_CHANGES, EXIT_INTERNAL, EXIT_OK
from .errors import OciSystemdError, internal_error_line

PROG = "oci-systemd"

EXIT_CODES = f"""\b
Exit codes:
  {EXIT_OK}    success; nothing would change (--check), or the config is valid
  {EXIT_CHANGES}    changes are pending (apply --check), a golden case differs,
       or the config is invalid (validate)
  {EXIT_BAD_INPUT}    bad input: unreadable bundle, bad JSON, bad options, bad policy
  {EXIT_INTERNAL}  internal error (a bug; set OCI_SYSTEMD_DEBUG=1 for a traceback)
"""


def _say(message: str) -> None:
    click.echo(f"{PROG}: {message}", err=True)


def _emit(text: str, output: str) -> None:
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from .bundle import write_atomic

        path = Path(output)
        try:
            write_atomic(path, text.encode("utf-8"), 0o644)
        except OSError as exc:
            raise OciSystemdError(f"cannot write ({exc.strerror})", file=output) from None


def _stack(f: Callable, decorators: list[Callable]) -> Callable:
    """Apply decorators as if written one above the other, the first on top."""
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def transform_options(f: Callable) -> Callable:
    """The options every planning command shares."""
    return _stack(f, [
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
        click.option("--policy", "policy_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
                     help="Policy documents in DIR replace the built-in patches/ documents of the same name."),
        click.option("--runtime", default="runc", show_default=True, metavar="NAME",
                     help="Runtime probed for tmpcopyup support with --copy-up native."),
        click.option("--journal", type=click.Choice(["tmpfs", "host"]), default="tmpfs", show_default=True,
                     help="tmpfs: the journal dies with the container; host: bind /var/log/journal/<machine-id> "
                          "of the host (see `oci-systemd journal prune`)."),
    ])


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Make an OCI bundle ready to run systemd as PID 1 without --privileged.

    BUNDLE is a directory holding config.json and the rootfs; '-' reads a config on
    stdin and takes the working directory as the bundle.
    """


# ---- plan / apply / review: one bundle or many (batch.py runs them) -----------------

BATCH_HELP = """
    Several BUNDLEs are handled in one call (see --jobs): a bad bundle is reported and
    the others go on; a summary (changed, unchanged, skipped, failed) ends on stderr,
    with a progress bar when stderr is a terminal. The exit status is that of the
    worst bundle."""


def batch_command(name: str) -> Callable:
    """A command over BUNDLE...: the planning options, then --jobs and --report."""

    def decorate(f: Callable) -> click.Command:
        f = _stack(f, [
            click.argument("bundles", nargs=-1, required=True, metavar="BUNDLE..."),
            transform_options,
            click.option("-j", "--jobs", type=click.IntRange(min=0), default=1, show_default=True, metavar="N",
                         help="Bundles handled in parallel (0: one per CPU)."),
            click.option("--report", metavar="FILE",
                         help="Write one JSON line per bundle (bundle, status, changes, error) to FILE ('-': stdout)."),
        ])
        command = cli.command(name, epilog=EXIT_CODES)(f)
        command.help = (command.help or "") + "\n" + BATCH_HELP
        return command

    return decorate


def _batch(command: str, bundles: tuple[str, ...], kw: dict[str, Any], *, jobs: int = 1, report: str | None = None,
           output: str = "-", fmt: str = "text", check: bool = False, show_diff: bool = False) -> None:
    from . import batch
    from .job import Job, call_options

    given = kw["container_id"] is not None
    unique = batch.bundles_to_run(command, bundles, given)
    job = Job(command, call_options(**kw), given, check=check, review=command == "review" or show_diff)
    summary = batch.Report(command, check=check, many=len(bundles) > 1)
    bar = None
    if summary.many and sys.stderr.isatty():
        bar = click.progressbar(length=len(unique), label=command, file=sys.stderr)
    with bar or contextlib.nullcontext():
        for result in batch.results(job, unique, jobs or os.cpu_count() or 1):
            summary.done(result)
            for line in summary.messages(result):
                if bar is not None:
                    click.echo("", err=True)  # off the progress bar's line
                _say(line)
            if bar is not None:
                bar.update(1)
    out = batch.product(summary, fmt)
    if out or output != "-":
        _emit(out, output)
    if report is not None:
        _emit(summary.report_lines(), report)
    if summary.many:
        _say(str(summary))
    if summary.return_code != EXIT_OK:
        raise SystemExit(summary.return_code)


@batch_command("plan")
@click.option("-o", "--output", default="-", show_default=True,
              help="Write the patch here ('-': stdout); with several bundles one JSON line each.")
def plan_cmd(bundles: tuple[str, ...], output: str, jobs: int, report: str | None, **kw: Any) -> None:
    """Print the RFC 6902 JSON patch that readies BUNDLE for systemd."""
    _batch("plan", bundles, kw, jobs=jobs, report=report, output=output)


@batch_command("apply")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when changes are pending.")
@click.option("--diff", "show_diff", is_flag=True, help="Print the review of the changes on stdout.")
def apply_cmd(bundles: tuple[str, ...], check: bool, show_diff: bool, jobs: int, report: str | None, **kw: Any) -> None:
    """Write the transformed config.json and its side files into BUNDLE, atomically."""
    _batch("apply", bundles, kw, jobs=jobs, report=report, check=check, show_diff=show_diff)


@batch_command("review")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-o", "--output", default="-", show_default=True, help="Write the review here ('-': stdout).")
def review_cmd(bundles: tuple[str, ...], fmt: str, output: str, jobs: int, report: str | None, **kw: Any) -> None:
    """Explain every change the patch would make, and why (rendered with deepdiff)."""
    _batch("review", bundles, kw, jobs=jobs, report=report, output=output, fmt=fmt)


# ---- filter and hooks-config: podman's precreate hook (podman.py) -------------------

@cli.command("filter", epilog=EXIT_CODES)
@transform_options
@click.option("--side-dir", metavar="DIR",
              help="Where the side files (machine-id, masked unit) go (default: /run/oci-systemd/<machine-id>).")
def filter_cmd(side_dir: str | None, **kw: Any) -> None:
    """Read a config.json on stdin, write the transformed config on stdout.

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
    from .job import call_options
    from .podman import filter_config

    filtered = filter_config(call_options(**kw), kw["container_id"] is not None, side_dir)
    for note in filtered.plan.notes:
        if note.kind == "warning":
            _say(f"-: {note.message}")
    sys.stdout.buffer.write(filtered.output)
    sys.stdout.flush()


@cli.command("hooks-config", epilog=EXIT_CODES)
@click.option("--hook-path", metavar="PATH",
              help="Absolute path of oci-systemd-copyup (default: this install's hook.py run by this python -I -S).")
@click.option("-o", "--output", default="-", show_default=True, help="Write the file here ('-': stdout).")
@click.option("--podman", "podman_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Write a hooks.d directory: 50-oci-systemd-filter.json (precreate filter) and "
                   "50-oci-systemd-copyup.json (prestart copy-up).")
@click.option("--filter-path", metavar="PATH",
              help="Absolute oci-systemd program for the precreate filter (default: this python -I -m transformer).")
@click.option("--journal", type=click.Choice(["tmpfs", "host"]), default="tmpfs", show_default=True,
              help="--journal for the filter.")
def hooks_config_cmd(hook_path: str | None, output: str, podman_dir: Path | None, filter_path: str | None,
                     journal: str) -> None:
    """Print an oci-hooks(5) file that makes podman or CRI-O run the copy-up helper.

    \b
    Install it as /etc/containers/oci/hooks.d/oci-systemd-copyup.json (admin) or
    /usr/share/containers/oci/hooks.d/ (packages), or pass podman --hooks-dir DIR.
    With --podman DIR, write both hooks.d files podman needs into DIR: the
    precreate filter (the whole transformation; podman >= 4 runs precreate hooks)
    and the prestart copy-up helper (also what CRI-O, which has no precreate
    stage, can use).
    """
    from . import podman

    copyup = podman.copyup_hook_config(hook_path)
    if podman_dir is None:
        _emit(json.dumps(copyup, indent=2) + "\n", output)
        return
    podman.write_hooks_dir(podman_dir, copyup, filter_path, journal)
    _say(f"wrote {podman_dir / podman.FILTER_FILE} and {podman_dir / podman.COPYUP_FILE}")
    _say(f"install them in {podman.HOOKS_DIRS[0]} (packages) or {podman.HOOKS_DIRS[1]} (admin), "
         f"or run podman --hooks-dir {podman_dir}")


@cli.command("validate", epilog=EXIT_CODES)
@click.argument("bundle")
@click.option("--schema-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Directory of the runtime-spec schema (default: Debian's golang-github-opencontainers-specs-dev).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def validate_cmd(bundle: str, schema_dir: Path | None, fmt: str) -> None:
    """Check BUNDLE's config.json against the official OCI runtime-spec JSON schema."""
    from .bundle import read_config
    from .schema import load_validator, validate

    validator = load_validator(schema_dir)
    label, config = read_config(bundle)
    problems = validate(config, validator)
    if fmt == "json":
        out = {"bundle": label, "valid": not problems,
               "problems": [{"pointer": p.pointer, "message": p.message, "spec": p.spec} for p in problems]}
        _emit(json.dumps(out, indent=2) + "\n", "-")
    else:
        for p in problems:
            click.echo(f"{label}: {p.pointer}: {p.message} ({p.spec})")
        if not problems:
            click.echo(f"{label}: valid")
    if problems:
        raise SystemExit(EXIT_CHANGES)


# ---- journal prune -----------------------------------------------------------------

@cli.group("journal")
def journal_group() -> None:
    """Host journal directories made by --journal host."""


@journal_group.command("prune", epilog=EXIT_CODES)
@click.option("--older-than", "days", type=click.FloatRange(min=0), default=30, show_default=True, metavar="DAYS",
              help="Remove a directory when nothing in it changed for DAYS days (0: all of them).")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.option("--policy", "policy_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR")
def journal_prune(days: float, dry_run: bool, policy_dir: Path | None) -> None:
    """Remove the host journal directories of containers that are gone.

    \b
    Only directories registered by oci-systemd (apply or filter with --journal host,
    one file each under the policy's registryDirectory, /var/lib/oci-systemd/journal)
    are considered, never the host's own journal or another tool's. A directory goes
    when its newest file is older than --older-than; journald writes at every boot
    and shutdown, so a running container's journal is younger than its uptime.
    Prints each removed directory on stdout.
    """
    from . import hostjournal
    from .policy import load_policy

    removed, kept = hostjournal.prune(load_policy(policy_dir).journal, days, dry_run)
    for directory in removed:
        click.echo(str(directory))
    removed = len(removed)
    _say(f"journal prune: {'would remove' if dry_run else 'removed'} {removed}, kept {kept} (younger than {days:g} days)")


@cli.group("golden")
def golden_group() -> None:
    """Keep the expected transformation of bundles in code review."""


@golden_group.command("check", epilog=EXIT_CODES)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--policy", "policy_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR")
def golden_check(directory: Path, policy_dir: Path | None) -> None:
    """Compare each case's stored patch, config and review with a fresh plan."""
    from . import golden
    from .policy import load_policy

    policy = load_policy(policy_dir)
    cases = golden.cases(directory)
    failed = 0
    for case in cases:
        mismatches = golden.check(case, policy)
        for m in mismatches:
            sys.stdout.write(m.unified_diff())
        failed += bool(mismatches)
    _say(f"{len(cases)} golden cases, {failed} differ")
    if failed:
        raise SystemExit(EXIT_CHANGES)


@golden_group.command("update", epilog=EXIT_CODES)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--policy", "policy_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR")
def golden_update(directory: Path, policy_dir: Path | None) -> None:
    """Rewrite each case's expected files from a fresh plan."""
    from . import golden
    from .policy import load_policy

    policy = load_policy(policy_dir)
    for case in golden.cases(directory):
        for name in golden.update(case, policy):
            _say(f"updated {case / name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error becomes one line on stderr and a documented exit code."""
    try:
        cli.main(args=argv, prog_name=PROG, standalone_mode=False)
        return EXIT_OK
    except OciSystemdError as exc:
        _say(f"error: {exc.one_line()}")
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_BAD_INPUT
    except click.exceptions.Abort:
        _say("aborted")
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except BrokenPipeError:
        # The reader went away (| head): not our error. Silence the flush at exit too.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: say so in one line, never a traceback by default
        if os.environ.get("OCI_SYSTEMD_DEBUG"):
            raise
        _say(internal_error_line(exc))
        return EXIT_INTERNAL


def entry() -> None:
    sys.exit(main())
