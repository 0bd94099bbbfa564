"""The command line: a thin click shell around the pure core.

Everything here is edge: reading bundles, probing the host, printing. stdout carries
only the product (a patch, a review, a report); messages go to stderr as one line.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import sys
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_CHANGES,
    EXIT_INTERNAL,
    EXIT_OK,
    BundleError,
    ConfigError,
    OciSystemdError,
    OptionsError,
)

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
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def shared_options(kw: dict[str, Any]):
    """Edge: the Options every bundle of one call shares (policy loaded and host probed
    once), with a placeholder container ID that bundle_options() replaces."""
    from .options import Options, normalise_capability
    from .policy import load_policy
    from .probe import cgroup_host, copyup_hook_command, runtime_mount_options

    policy = load_policy(kw["policy_dir"])
    cgroup = kw["cgroup"] if kw["cgroup"] != "auto" else cgroup_host()
    hook_command = (kw["hook_path"],) if kw["hook_path"] is not None else None
    if hook_command is None:  # native mode too: a user namespace needs the helper
        hook_command = copyup_hook_command(policy.copy_up.hook_script)
    if kw["copy_up"] == "native":
        supported = runtime_mount_options(kw["runtime"])
        if supported is not None and policy.copy_up.native_option not in supported:
            raise OptionsError(
                f"{kw['runtime']} does not support the {policy.copy_up.native_option} mount option; use --copy-up hook"
            )
    caps = None
    if kw["capabilities"] is not None:
        caps = tuple(normalise_capability(c) for c in kw["capabilities"].split(",") if c.strip())
    return Options(
        policy=policy,
        container_id=kw["container_id"] if kw["container_id"] is not None else "-",
        cgroup=cgroup,
        copy_up=kw["copy_up"],
        hook_command=hook_command,
        tmpfs_size=kw["tmpfs_size"],
        capabilities=caps,
        force=kw["force"],
        journal=kw.get("journal") or "tmpfs",
    )


def bundle_options(shared, bundle_path: str, kw: dict[str, Any]):
    """The shared Options with this bundle's container ID."""
    import dataclasses

    if kw["container_id"] is not None:
        return shared
    # Stable per bundle: two bundles of one image get two machine-ids, and the same
    # bundle keeps its identity across restarts, as a machine does.
    container_id = str(Path.cwd() if bundle_path == "-" else Path(bundle_path).resolve())
    return dataclasses.replace(shared, container_id=container_id)


def build_options(bundle_path: str, kw: dict[str, Any]):
    """Edge: turn command-line values and host probes into the core's frozen Options."""
    return bundle_options(shared_options(kw), bundle_path, kw)


def _plan(bundle_path: str, kw: dict[str, Any], shared=None, say: Callable[[str], None] | None = None):
    from .bundle import read_bundle
    from .plan import plan

    say = say or _say
    bundle = read_bundle(bundle_path)
    options = bundle_options(shared if shared is not None else shared_options(kw), bundle_path, kw)
    try:
        result = plan(bundle.config, bundle.rootfs, options)
    except OciSystemdError as exc:
        if exc.file is None:
            exc.file = bundle.label
        raise
    for note in result.notes:
        if note.kind in ("warning", "info"):
            say(f"{bundle.label}: {note.message}")
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


# ---- plan / apply / review: one bundle or many -------------------------------------
#
# Each bundle is planned (and, for apply, written) on its own: an error is caught and
# becomes that bundle's record, so one bad bundle never stops or touches the others.
# stdout is assembled in the order the bundles were given, whatever --jobs is.

SUMMARY_KEYS = ("changed", "unchanged", "skipped", "failed")

# What one call does to every bundle; set before the workers fork, so that a worker
# only receives a bundle path.
_JOB: dict[str, Any] = {}


def batch_options(f: Callable) -> Callable:
    decorators = [
        click.option("-j", "--jobs", type=click.IntRange(min=0), default=1, show_default=True, metavar="N",
                     help="Bundles handled in parallel (0: one per CPU)."),
        click.option("--report", metavar="FILE",
                     help="Write one JSON line per bundle (bundle, status, changes, error) to FILE ('-': stdout)."),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def _internal_error_line(exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return f"internal error: {message} (set OCI_SYSTEMD_DEBUG=1 for a traceback)"


def _run_bundle(bundle_path: str) -> dict[str, Any]:
    """Plan (and apply) one bundle; never raises for a bad bundle. Returns its record:
    the JSON line of --report plus what to print ("stdout", "messages")."""
    job = _JOB
    command, kw = job["command"], job["kw"]
    messages: list[str] = []
    record: dict[str, Any] = {"bundle": bundle_path, "status": "failed", "changes": 0}
    stdout = ""
    try:
        loaded, result = _plan(bundle_path, kw, job["shared"], messages.append)
        record["changes"] = len(result.ops)
        record["status"] = "changed" if result.ops else "unchanged" if result.systemd else "skipped"
        if command == "plan":
            stdout = json.dumps(result.patch(), indent=2, ensure_ascii=False) + "\n"
        elif command == "review":
            stdout = _review_text(loaded, result, job["fmt"])
        elif command == "apply":
            if job["show_diff"]:
                stdout = _review_text(loaded, result)
            if job["check"]:
                if result.ops:
                    messages.append(f"{loaded.label}: {len(result.ops)} changes pending")
            else:
                from . import hostjournal

                hostjournal.create_directories(result, loaded.label, job["shared"].policy)
                if result.ops:
                    from .bundle import write_bundle

                    # result.config is the patch applied, op by op, by the planner
                    # itself; the golden and property tests prove jsonpatch gives the
                    # same document for every case.
                    write_bundle(loaded, result.config, result.side_files)
                    messages.append(f"{loaded.label}: applied {len(result.ops)} changes")
                elif result.systemd:
                    messages.append(f"{loaded.label}: already ready for systemd; nothing to change")
            record["written"] = bool(result.ops) and not job["check"]
        record["machineId"] = dict(result.facts).get("machine-id", "").split(" ")[0] or None
    except OciSystemdError as exc:
        record.update(status="failed", exit=exc.exit_code, error=exc.one_line())
        messages.append(f"error: {exc.one_line()}")
    except Exception as exc:  # a bug in one bundle's run: say so, go on with the others
        if os.environ.get("OCI_SYSTEMD_DEBUG"):
            raise
        record.update(status="failed", exit=EXIT_INTERNAL, error=_internal_error_line(exc))
        messages.append(record["error"])
    record["stdout"] = stdout
    record["messages"] = messages
    return record


def _results(bundles: list[str], jobs: int):
    """Records in the order of `bundles`; with jobs > 1 from forked worker processes
    (planning is CPU-bound Python: threads would share one GIL)."""
    if jobs == 1 or len(bundles) == 1:
        yield from map(_run_bundle, bundles)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, min(64, len(bundles) // (jobs * 8)))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        yield from pool.map(_run_bundle, bundles, chunksize=chunk)


def _batch(command: str, bundles: tuple[str, ...], kw: dict[str, Any], *, jobs: int = 1, report: str | None = None,
           output: str = "-", fmt: str = "text", check: bool = False, show_diff: bool = False) -> None:
    if not bundles:
        raise OptionsError(f"{command} needs at least one BUNDLE")
    many = len(bundles) > 1
    if many and "-" in bundles:
        raise OptionsError("'-' (a config on stdin) cannot be mixed with other bundles")
    if many and kw["container_id"] is not None:
        raise OptionsError("--container-id names one container; with several bundles each gets its own from its path")
    if command == "apply" and "-" in bundles:
        raise OptionsError("apply edits a bundle directory; use plan for a config on stdin")
    unique: list[str] = []
    seen: set[str] = set()
    for b in bundles:  # the same bundle twice would be written twice at once
        key = b if b == "-" else os.path.realpath(b)
        if key not in seen:
            seen.add(key)
            unique.append(b)
    _JOB.clear()
    _JOB.update(command=command, kw=kw, shared=shared_options(kw), fmt=fmt, check=check, show_diff=show_diff)
    jobs = jobs or os.cpu_count() or 1

    records: list[dict[str, Any]] = []
    progress = None
    if many and sys.stderr.isatty():
        progress = click.progressbar(length=len(unique), label=f"{command}", file=sys.stderr)
        progress.__enter__()
    try:
        for record in _results(unique, jobs):
            records.append(record)
            for line in record["messages"]:
                # One bundle: every message, as before. Many: errors and warnings only;
                # the rest is in the summary and the report.
                if not many or record["status"] == "failed" or line.startswith("error: ") or "warning" in line:
                    if progress is not None:
                        click.echo("", err=True)
                    _say(line)
            if progress is not None:
                progress.update(1)
    finally:
        if progress is not None:
            progress.__exit__(None, None, None)

    out = _stdout_for(command, records, many, fmt)
    if out or output != "-":
        _emit(out, output)
    if report is not None:
        lines = "".join(
            json.dumps({k: v for k, v in r.items() if k not in ("stdout", "messages")}, ensure_ascii=False) + "\n"
            for r in records
        )
        _emit(lines, report)
    counts = {k: sum(r["status"] == k for r in records) for k in SUMMARY_KEYS}
    if many:
        pending = " (pending: --check wrote nothing)" if check else ""
        _say(
            f"{len(records)} bundles: {counts['changed']} changed{pending}, {counts['unchanged']} unchanged, "
            f"{counts['skipped']} skipped (not systemd), {counts['failed']} failed"
        )
    failures = [r.get("exit", EXIT_BAD_INPUT) for r in records if r["status"] == "failed"]
    if failures:
        raise SystemExit(max(failures))
    if command == "apply" and check and counts["changed"]:
        raise SystemExit(EXIT_CHANGES)


def _stdout_for(command: str, records: list[dict[str, Any]], many: bool, fmt: str) -> str:
    ok = [r for r in records if r["status"] != "failed"]
    if not many:
        return "".join(r["stdout"] for r in ok)
    if command == "plan":
        # One JSON line per bundle: {"bundle": ..., "patch": [...]}.
        return "".join(json.dumps({"bundle": r["bundle"], "patch": json.loads(r["stdout"])}, ensure_ascii=False) + "\n"
                       for r in ok)
    if command == "review" and fmt == "json":
        return "".join(json.dumps(json.loads(r["stdout"]), ensure_ascii=False) + "\n" for r in ok)
    return "".join(r["stdout"] for r in ok)


BATCH_HELP = """
    Several BUNDLEs are handled in one call (see --jobs): a bad bundle is reported and
    the others go on; a summary (changed, unchanged, skipped, failed) ends on stderr,
    with a progress bar when stderr is a terminal. The exit status is that of the
    worst bundle."""


@cli.command("plan", epilog=EXIT_CODES)
@click.argument("bundles", nargs=-1, required=True, metavar="BUNDLE...")
@transform_options
@batch_options
@click.option("-o", "--output", default="-", show_default=True,
              help="Write the patch here ('-': stdout); with several bundles one JSON line each.")
def plan_cmd(bundles: tuple[str, ...], output: str, jobs: int, report: str | None, **kw: Any) -> None:
    """Print the RFC 6902 JSON patch that readies BUNDLE for systemd."""
    _batch("plan", bundles, kw, jobs=jobs, report=report, output=output)


plan_cmd.help = (plan_cmd.help or "") + "\n" + BATCH_HELP


@cli.command("apply", epilog=EXIT_CODES)
@click.argument("bundles", nargs=-1, required=True, metavar="BUNDLE...")
@transform_options
@batch_options
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when changes are pending.")
@click.option("--diff", "show_diff", is_flag=True, help="Print the review of the changes on stdout.")
def apply_cmd(bundles: tuple[str, ...], check: bool, show_diff: bool, jobs: int, report: str | None, **kw: Any) -> None:
    """Write the transformed config.json and its side files into BUNDLE, atomically."""
    _batch("apply", bundles, kw, jobs=jobs, report=report, check=check, show_diff=show_diff)


apply_cmd.help = (apply_cmd.help or "") + "\n" + BATCH_HELP


@cli.command("review", epilog=EXIT_CODES)
@click.argument("bundles", nargs=-1, required=True, metavar="BUNDLE...")
@transform_options
@batch_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-o", "--output", default="-", show_default=True, help="Write the review here ('-': stdout).")
def review_cmd(bundles: tuple[str, ...], fmt: str, output: str, jobs: int, report: str | None, **kw: Any) -> None:
    """Explain every change the patch would make, and why (rendered with deepdiff)."""
    _batch("review", bundles, kw, jobs=jobs, report=report, output=output, fmt=fmt)


review_cmd.help = (review_cmd.help or "") + "\n" + BATCH_HELP


# ---- filter: podman's precreate hook ---------------------------------------------------

_HEX64 = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
SIDE_ROOT = "/run/oci-systemd"


def runtime_container_id(config: dict[str, Any]) -> str | None:
    """The engine's container ID, when the config shows it: podman and CRI-O put the
    64-hex ID in linux.cgroupsPath (/libpod_parent/libpod-ID, machine.slice:libpod:ID,
    crio-ID.scope). Else the container's own root.path, unique per container."""
    linux = config.get("linux") if isinstance(config.get("linux"), dict) else {}
    found = _HEX64.search(str(linux.get("cgroupsPath") or ""))
    if found:
        return found.group(0)
    root = config.get("root") if isinstance(config.get("root"), dict) else {}
    path = root.get("path")
    return path if isinstance(path, str) and os.path.isabs(path) else None


@cli.command("filter", epilog=EXIT_CODES)
@transform_options
@click.option("--side-dir", metavar="DIR",
              help=f"Where the side files (machine-id, masked unit) go (default: {SIDE_ROOT}/<machine-id>).")
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
    from .bundle import write_atomic
    from .config import MAX_CONFIG_BYTES, parse_json
    from .plan import plan
    from .rootfs import EmptyRootfs, HostRootfs
    from .concerns.machine_id import machine_id_for

    data = sys.stdin.buffer.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; refusing to read it", file="-")
    config = parse_json(data, "-")
    if not isinstance(config, dict):
        raise ConfigError("must be an object", file="-", pointer="/")
    if kw["container_id"] is None:
        kw = dict(kw, container_id=runtime_container_id(config) or str(Path.cwd()))
    options = shared_options(kw)
    root_path = (config.get("root") or {}).get("path", "rootfs") if isinstance(config.get("root"), dict) else "rootfs"
    rootfs_dir = Path(root_path) if os.path.isabs(str(root_path)) else Path.cwd() / str(root_path)
    rootfs = HostRootfs(rootfs_dir) if rootfs_dir.is_dir() else EmptyRootfs()
    try:
        result = plan(config, rootfs, options)
    except OciSystemdError as exc:
        if exc.file is None:
            exc.file = "-"
        raise
    for note in result.notes:
        if note.kind == "warning":
            _say(f"-: {note.message}")
    if not result.ops:
        sys.stdout.buffer.write(data)  # unchanged: the very bytes podman sent
        sys.stdout.flush()
        return
    side = Path(side_dir or f"{SIDE_ROOT}/{machine_id_for(options.container_id)}")
    if not side.is_absolute():
        raise OptionsError(f"--side-dir must be absolute, not {str(side)!r}")
    new = result.config
    sources = {s.path for s in result.side_files}
    try:
        for s in result.side_files:
            target = side / s.path
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_atomic(target, s.content, s.mode)
    except OSError as exc:
        raise BundleError(f"cannot write ({exc.strerror})", file=exc.filename or str(side)) from None
    for mount in new.get("mounts") or []:
        if mount.get("source") in sources:
            mount["source"] = str(side / mount["source"])
    from . import hostjournal

    hostjournal.create_directories(result, f"container {options.container_id}", options.policy)
    sys.stdout.write(json.dumps(new, ensure_ascii=False) + "\n")
    sys.stdout.flush()


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


HOOKS_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")
FILTER_FILE = "50-oci-systemd-filter.json"
COPYUP_FILE = "50-oci-systemd-copyup.json"


def filter_hook_config(command: tuple[str, ...], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The oci-hooks(5) 1.0.0 document that runs `oci-systemd filter` at podman's
    precreate stage, for every container: the filter's own detection decides (it
    resolves symlinks in the rootfs and looks through sh -c), and it returns a
    non-systemd config byte for byte."""
    path = command[0]
    if not path.startswith("/"):
        raise OptionsError(f"filter path {path!r}: must be an absolute path")
    return {
        "version": "1.0.0",
        # args[0] is the absolute path: a venv's python finds its pyvenv.cfg from argv[0],
        # and hooks run with an empty environment (no PATH to search for "python3").
        "hook": {"path": path, "args": [path, *command[1:], "filter", *extra], "timeout": 30},
        "when": {"always": True},
        "stages": ["precreate"],
    }


def _default_filter_command() -> tuple[str, ...]:
    # -I: podman runs the hook in its own working directory, which must not end up
    # on sys.path (-m would put it there); site-packages, where we live, stays.
    return (str(Path(sys.executable).absolute()), "-I", "-m", "transformer")


@cli.command("hooks-config", epilog=EXIT_CODES)
@click.option("--hook-path", metavar="PATH",
              help="Absolute path of oci-systemd-copyup (default: this install's hook.py run by this python -I -S).")
@click.option("-o", "--output", default="-", show_default=True, help="Write the file here ('-': stdout).")
@click.option("--podman", "podman_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help=f"Write a hooks.d directory: {FILTER_FILE} (precreate filter) and {COPYUP_FILE} (prestart copy-up).")
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
    from .bundle import write_atomic
    from .copyup.hooksconfig import hooks_config
    from .policy import load_policy
    from .probe import copyup_hook_command

    command = (hook_path,) if hook_path else copyup_hook_command(load_policy().copy_up.hook_script)
    if command is None:
        raise OptionsError("cannot find the copy-up helper; pass --hook-path")
    copyup = hooks_config(command)
    if podman_dir is None:
        _emit(json.dumps(copyup, indent=2) + "\n", output)
        return
    extra = ("--journal", journal) if journal != "tmpfs" else ()
    filt = filter_hook_config((filter_path,) if filter_path else _default_filter_command(), extra)
    try:
        podman_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name, doc in ((FILTER_FILE, filt), (COPYUP_FILE, copyup)):
            write_atomic(podman_dir / name, (json.dumps(doc, indent=2) + "\n").encode("utf-8"), 0o644)
    except OSError as exc:
        raise BundleError(f"cannot write ({exc.strerror})", file=exc.filename or str(podman_dir)) from None
    _say(f"wrote {podman_dir / FILTER_FILE} and {podman_dir / COPYUP_FILE}")
    _say(f"install them in {HOOKS_DIRS[0]} (packages) or {HOOKS_DIRS[1]} (admin), or run podman --hooks-dir {podman_dir}")


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
