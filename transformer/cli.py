"""The command line: a thin click shell around the pure core.

Everything here is edge: reading bundles, probing the host, printing. stdout carries
only the product (a patch, a review, a report); messages go to stderr as one line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .errors import EXIT_BAD_INPUT, EXIT_CHANGES, EXIT_INTERNAL, EXIT_OK, OciSystemdError, OptionsError

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


def transform_options(f: Callable) -> Callable:
    """The options every planning command shares."""
    decorators = [
        click.option("--cgroup", type=click.Choice(["v1", "v2", "auto"]), default="auto", show_default=True,
                     help="Host cgroup version; auto probes /sys/fs/cgroup where this command runs."),
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
                     help="Use the policy documents in DIR instead of the built-in patches/."),
        click.option("--runtime", default="runc", show_default=True, metavar="NAME",
                     help="Runtime probed for tmpcopyup support with --copy-up native."),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def build_options(bundle_path: str, kw: dict[str, Any]):
    """Edge: turn command-line values and host probes into the core's frozen Options."""
    from .options import Options, normalise_capability
    from .policy import load_policy
    from .probe import cgroup_version, copyup_hook_command, runtime_mount_options

    policy = load_policy(kw["policy_dir"])
    cgroup = kw["cgroup"] if kw["cgroup"] != "auto" else cgroup_version()
    hook_command = (kw["hook_path"],) if kw["hook_path"] is not None else None
    if kw["copy_up"] == "hook" and hook_command is None:
        hook_command = copyup_hook_command(policy.copy_up.hook_script)
    if kw["copy_up"] == "native":
        supported = runtime_mount_options(kw["runtime"])
        if supported is not None and policy.copy_up.native_option not in supported:
            raise OptionsError(
                f"{kw['runtime']} does not support the {policy.copy_up.native_option} mount option; use --copy-up hook"
            )
    container_id = kw["container_id"]
    if container_id is None:
        # Stable per bundle: two bundles of one image get two machine-ids, and the
        # same bundle keeps its identity across restarts, as a machine does.
        container_id = str(Path.cwd() if bundle_path == "-" else Path(bundle_path).resolve())
    caps = None
    if kw["capabilities"] is not None:
        caps = tuple(normalise_capability(c) for c in kw["capabilities"].split(",") if c.strip())
    return Options(
        policy=policy,
        container_id=container_id,
        cgroup=cgroup,
        copy_up=kw["copy_up"],
        hook_command=hook_command,
        tmpfs_size=kw["tmpfs_size"],
        capabilities=caps,
        force=kw["force"],
    )


def _plan(bundle_path: str, kw: dict[str, Any]):
    from .bundle import read_bundle
    from .plan import plan

    bundle = read_bundle(bundle_path)
    options = build_options(bundle_path, kw)
    try:
        result = plan(bundle.config, bundle.rootfs, options)
    except OciSystemdError as exc:
        if exc.file is None:
            exc.file = bundle.label
        raise
    for note in result.notes:
        if note.kind in ("warning", "info"):
            _say(f"{bundle.label}: {note.message}")
    return bundle, result


def _review_text(bundle, result, fmt: str = "text") -> str:
    from .review import render_text, review_data

    data = review_data(bundle.config, result, bundle.label)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    return render_text(data)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Make an OCI bundle ready to run systemd as PID 1 without --privileged.

    BUNDLE is a directory holding config.json and the rootfs; '-' reads a config on
    stdin and takes the working directory as the bundle.
    """


@cli.command("plan", epilog=EXIT_CODES)
@click.argument("bundle")
@transform_options
@click.option("-o", "--output", default="-", show_default=True, help="Write the patch here ('-': stdout).")
def plan_cmd(bundle: str, output: str, **kw: Any) -> None:
    """Print the RFC 6902 JSON patch that readies BUNDLE for systemd."""
    _, result = _plan(bundle, kw)
    _emit(json.dumps(result.patch(), indent=2, ensure_ascii=False) + "\n", output)


@cli.command("apply", epilog=EXIT_CODES)
@click.argument("bundle")
@transform_options
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when changes are pending.")
@click.option("--diff", "show_diff", is_flag=True, help="Print the review of the changes on stdout.")
def apply_cmd(bundle: str, check: bool, show_diff: bool, **kw: Any) -> None:
    """Write the transformed config.json and its side files into BUNDLE, atomically."""
    if bundle == "-":
        raise OptionsError("apply edits a bundle directory; use plan for a config on stdin")
    from .bundle import write_bundle

    loaded, result = _plan(bundle, kw)
    if show_diff:
        _emit(_review_text(loaded, result), "-")
    if not result.ops:
        if result.systemd:
            _say(f"{loaded.label}: already ready for systemd; nothing to change")
        return
    if check:
        _say(f"{loaded.label}: {len(result.ops)} changes pending")
        raise SystemExit(EXIT_CHANGES)
    # result.config is the patch applied, op by op, by the planner itself; the golden
    # and property tests prove jsonpatch gives the same document for every case.
    write_bundle(loaded, result.config, result.side_files)
    _say(f"{loaded.label}: applied {len(result.ops)} changes")


@cli.command("review", epilog=EXIT_CODES)
@click.argument("bundle")
@transform_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-o", "--output", default="-", show_default=True, help="Write the review here ('-': stdout).")
def review_cmd(bundle: str, fmt: str, output: str, **kw: Any) -> None:
    """Explain every change the patch would make, and why (rendered with deepdiff)."""
    loaded, result = _plan(bundle, kw)
    _emit(_review_text(loaded, result, fmt), output)


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


@cli.command("hooks-config", epilog=EXIT_CODES)
@click.option("--hook-path", metavar="PATH",
              help="Absolute path of oci-systemd-copyup (default: this install's hook.py run by this python -I -S).")
@click.option("-o", "--output", default="-", show_default=True, help="Write the file here ('-': stdout).")
def hooks_config_cmd(hook_path: str | None, output: str) -> None:
    """Print an oci-hooks(5) file that makes podman or CRI-O run the copy-up helper.

    \b
    Install it as /etc/containers/oci/hooks.d/oci-systemd-copyup.json (admin) or
    /usr/share/containers/oci/hooks.d/ (packages), or pass podman --hooks-dir DIR.
    """
    from .copyup.hooksconfig import hooks_config
    from .policy import load_policy
    from .probe import copyup_hook_command

    command = (hook_path,) if hook_path else copyup_hook_command(load_policy().copy_up.hook_script)
    if command is None:
        raise OptionsError("cannot find the copy-up helper; pass --hook-path")
    _emit(json.dumps(hooks_config(command), indent=2) + "\n", output)


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
    cases = _cases(directory)
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
    for case in _cases(directory):
        for name in golden.update(case, policy):
            _say(f"updated {case / name}")


def _cases(directory: Path) -> list[Path]:
    from . import golden

    if not directory.is_dir():
        raise OciSystemdError("is not a directory", file=str(directory))
    cases = golden.discover(directory)
    if not cases:
        raise OciSystemdError("holds no golden case (a directory with config.json)", file=str(directory))
    return cases


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
        message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        _say(f"internal error: {message} (set OCI_SYSTEMD_DEBUG=1 for a traceback)")
        return EXIT_INTERNAL


def entry() -> None:
    sys.exit(main())
