"""The command line: a thin click shell. It parses options, hands them to the one-bundle
job (job.py) through the batch runner (batch.py) or the podman filter (podman.py),
prints what they return, and maps errors to the documented exit codes.

stdout carries only the product (a patch, a review, a config, a report); messages go
to stderr, one line each. Nothing imports this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .cli_options import APPLY, BATCH_HELP, CLI_HELP, EXIT_CODES, FILTER, FILTER_HELP, GOLDEN, HOOKS_CONFIG
from .cli_options import HOOKS_CONFIG_HELP, JOURNAL_PRUNE, JOURNAL_PRUNE_HELP, PLAN, PROG, REVIEW, VALIDATE
from .errors import EXIT_BAD_INPUT, EXIT_CHANGES, EXIT_INTERNAL, EXIT_OK, OciSystemdError, internal_error_line


def _say(message: str) -> None:
    click.echo(f"{PROG}: {message}", err=True)


def _emit(text: str, output: str) -> None:
    """Write a product to stdout ('-') or, atomically, to the file OUTPUT."""
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from .bundle import write_atomic

    try:
        write_atomic(Path(output), text.encode("utf-8"), 0o644)
    except OSError as exc:
        raise OciSystemdError(f"cannot write ({exc.strerror})", file=output) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, help=CLI_HELP, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """The oci-systemd command; every command below is one of its subcommands."""


# ---- plan / apply / review: one bundle or many (batch.py runs them) -----------------
def batch_command(name: str, table: Callable) -> Callable:
    """A command over BUNDLE... with the options of TABLE; its help says how several run."""
    return lambda f: cli.command(name, help=f.__doc__ + "\n" + BATCH_HELP, epilog=EXIT_CODES)(table(f))


def _batch(command: str, bundles: tuple[str, ...], kw: dict[str, Any], *, jobs: int = 1, report: str | None = None,
           output: str = "-", fmt: str = "text", check: bool = False, show_diff: bool = False) -> None:
    from . import batch
    from .job import Job, call_options

    given = kw["container_id"] is not None
    unique = batch.bundles_to_run(command, bundles, given)
    job = Job(command, call_options(**kw), given, check=check, review=command == "review" or show_diff)
    summary = batch.Report(command, check=check, many=len(bundles) > 1)
    show_bar = summary.many and sys.stderr.isatty()
    bar = click.progressbar(length=len(unique), label=command, file=sys.stderr) if show_bar else None
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


@batch_command("plan", PLAN)
def plan_cmd(bundles: tuple[str, ...], output: str, jobs: int, report: str | None, **kw: Any) -> None:
    """Print the RFC 6902 JSON patch that readies BUNDLE for systemd."""
    _batch("plan", bundles, kw, jobs=jobs, report=report, output=output)


@batch_command("apply", APPLY)
def apply_cmd(bundles: tuple[str, ...], check: bool, show_diff: bool, jobs: int, report: str | None, **kw: Any) -> None:
    """Write the transformed config.json and its side files into BUNDLE, atomically."""
    _batch("apply", bundles, kw, jobs=jobs, report=report, check=check, show_diff=show_diff)


@batch_command("review", REVIEW)
def review_cmd(bundles: tuple[str, ...], fmt: str, output: str, jobs: int, report: str | None, **kw: Any) -> None:
    """Explain every change the patch would make, and why (rendered with deepdiff)."""
    _batch("review", bundles, kw, jobs=jobs, report=report, output=output, fmt=fmt)


# ---- filter and hooks-config: podman's precreate hook (podman.py) -------------------
@cli.command("filter", help=FILTER_HELP, epilog=EXIT_CODES)
@FILTER
def filter_cmd(side_dir: str | None, **kw: Any) -> None:
    from .job import call_options
    from .podman import filter_config

    filtered = filter_config(call_options(**kw), kw["container_id"] is not None, side_dir)
    for note in filtered.plan.notes:
        if note.kind == "warning":
            _say(f"-: {note.message}")
    sys.stdout.buffer.write(filtered.output)
    sys.stdout.flush()


@cli.command("hooks-config", help=HOOKS_CONFIG_HELP, epilog=EXIT_CODES)
@HOOKS_CONFIG
def hooks_config_cmd(hook_path: str | None, output: str, podman_dir: Path | None, filter_path: str | None,
                     journal: str) -> None:
    import json

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
@VALIDATE
def validate_cmd(bundle: str, schema_dir: Path | None, fmt: str) -> None:
    """Check BUNDLE's config.json against the official OCI runtime-spec JSON schema."""
    import json

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


# ---- journal prune and golden: maintenance ----------------------------------------
@cli.group("journal")
def journal_group() -> None:
    """Host journal directories made by --journal host."""


@journal_group.command("prune", help=JOURNAL_PRUNE_HELP, epilog=EXIT_CODES)
@JOURNAL_PRUNE
def journal_prune(days: float, dry_run: bool, policy_dir: Path | None) -> None:
    from . import hostjournal
    from .policy import load_policy

    removed, kept = hostjournal.prune(load_policy(policy_dir).journal, days, dry_run)
    for directory in removed:
        click.echo(str(directory))
    _say(f"journal prune: {'would remove' if dry_run else 'removed'} {len(removed)}, "
         f"kept {kept} (younger than {days:g} days)")


@cli.group("golden")
def golden_group() -> None:
    """Keep the expected transformation of bundles in code review."""


@golden_group.command("check", epilog=EXIT_CODES)
@GOLDEN
def golden_check(directory: Path, policy_dir: Path | None) -> None:
    """Compare each case's stored patch, config and review with a fresh plan."""
    from . import golden
    from .policy import load_policy

    policy = load_policy(policy_dir)
    cases = golden.cases(directory)
    failed = 0
    for case in cases:
        mismatches = golden.check(case, policy)
        sys.stdout.write("".join(m.unified_diff() for m in mismatches))
        failed += bool(mismatches)
    _say(f"{len(cases)} golden cases, {failed} differ")
    if failed:
        raise SystemExit(EXIT_CHANGES)


@golden_group.command("update", epilog=EXIT_CODES)
@GOLDEN
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
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
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
