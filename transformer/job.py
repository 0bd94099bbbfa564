"""The one-bundle job: read a bundle, plan it, write it (apply), and say what happened
as a typed result. It never prints: the shell and the batch runner decide how a
result reads on stdout and stderr, and the podman filter runs the same steps on a
config from stdin.

Everything here is edge (the disk, the host's probes); the decisions are the pure
core's, plan(config, rootfs, options).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal, NamedTuple

from .bundle import Bundle, read_bundle
from .draft import Note, Plan
from .errors import EXIT_INTERNAL, OciSystemdError, OptionsError, internal_error_line
from .options import Options

Command = Literal["plan", "apply", "review"]
# changed: the plan has ops; unchanged: a systemd container already ready; skipped:
# not a systemd container; failed: an error, named by the result's failure.
Status = Literal["changed", "unchanged", "skipped", "failed"]


def call_options(*, policy_dir: Path | None, cgroup: str, copy_up: str, hook_path: str | None,
                 container_id: str | None, tmpfs_size: str | None, capabilities: str | None, force: bool,
                 runtime: str, journal: str, host_os_release: str | None = None) -> Options:
    """Edge: the Options every bundle of one call shares, from the command line's values,
    with the policy loaded and the host probed once. Without a container ID the one
    here is a placeholder: Job.options_for gives each bundle its own."""
    from .options import normalise_capability
    from .policy import load_policy
    from .probe import cgroup_host, copyup_hook_command, os_release_fields, runtime_mount_options

    policy = load_policy(policy_dir)
    host = cgroup if cgroup != "auto" else cgroup_host()
    hook_command = (hook_path,) if hook_path is not None else None
    if hook_command is None:  # native mode too: a user namespace needs the helper
        hook_command = copyup_hook_command(policy.copy_up.hook_script)
    if copy_up == "native":
        supported = runtime_mount_options(runtime)
        if supported is not None and policy.copy_up.native_option not in supported:
            raise OptionsError(
                f"{runtime} does not support the {policy.copy_up.native_option} mount option; use --copy-up hook"
            )
    caps = None
    if capabilities is not None:
        caps = tuple(normalise_capability(c) for c in capabilities.split(",") if c.strip())
    return Options(
        policy=policy,
        container_id=container_id if container_id is not None else "-",
        cgroup=host,
        copy_up=copy_up,
        hook_command=hook_command,
        tmpfs_size=tmpfs_size,
        capabilities=caps,
        force=force,
        journal=journal,
        host_os_release=os_release_fields(host_os_release),
    )


@dataclasses.dataclass(frozen=True)
class Job:
    """What one call does to every bundle it is given."""

    command: Command
    options: Options  # shared by every bundle (see call_options)
    container_id_given: bool  # --container-id; else each bundle's ID is its path
    check: bool = False  # apply --check: write nothing
    review: bool = False  # review, apply --diff: explain the changes

    def options_for(self, bundle_path: str) -> Options:
        """The shared Options with this bundle's container ID."""
        if self.container_id_given:
            return self.options
        # Stable per bundle: two bundles of one image get two machine-ids, and the same
        # bundle keeps its identity across restarts, as a machine does.
        container_id = str(Path.cwd() if bundle_path == "-" else Path(bundle_path).resolve())
        return dataclasses.replace(self.options, container_id=container_id)


class Failure(NamedTuple):
    exit_code: int
    message: str  # one line: the error with its file and pointer, or the internal error
    internal: bool = False  # a bug (123), not bad input

    @property
    def line(self) -> str:
        """How stderr says it."""
        return self.message if self.internal else f"error: {self.message}"


class BundleResult(NamedTuple):
    """What one job did to one bundle. Values only, so that it comes back from a worker
    process as it is; the notes keep their kind until they are printed."""

    bundle: str  # as it was given
    label: str  # how messages name it: its config.json, or "-"
    status: Status = "failed"
    changes: int = 0
    notes: tuple[Note, ...] = ()
    machine_id: str | None = None
    patch: list[dict[str, Any]] | None = None  # plan
    review: dict[str, Any] | None = None  # review, apply --diff: review.review_data
    written: bool | None = None  # apply: whether the bundle was written
    failure: Failure | None = None

    def report_line(self) -> dict[str, Any]:
        """The bundle's line of --report."""
        line: dict[str, Any] = {"bundle": self.bundle, "status": self.status, "changes": self.changes}
        if self.failure is not None:
            return {**line, "exit": self.failure.exit_code, "error": self.failure.message}
        if self.written is not None:
            line["written"] = self.written
        return {**line, "machineId": self.machine_id}


def plan_bundle(bundle: Bundle, options: Options) -> Plan:
    """The core's plan of a bundle read from disk or stdin; its errors name the file."""
    from . import plan  # looked up at each call: tests replace plan.plan

    try:
        return plan.plan(bundle.config, bundle.rootfs, options)
    except OciSystemdError as exc:
        raise exc.naming(bundle.label) from None


def run(job: Job, bundle_path: str) -> BundleResult:
    """Plan, and for apply write, one bundle. A bad bundle becomes a failed result, so
    it never stops or touches the others; so does a bug, unless OCI_SYSTEMD_DEBUG asks
    for its traceback."""
    result = BundleResult(bundle_path, bundle_path)
    try:
        bundle = read_bundle(bundle_path)
        options = job.options_for(bundle_path)
        plan = plan_bundle(bundle, options)
        status: Status = "changed" if plan.ops else "unchanged" if plan.systemd else "skipped"
        result = result._replace(label=bundle.label, status=status, changes=len(plan.ops), notes=plan.notes)
        if job.command == "plan":
            result = result._replace(patch=plan.patch())
        if job.review:
            from .review import review_data

            result = result._replace(review=review_data(bundle.config, plan, bundle.label))
        if job.command == "apply":
            if not job.check:
                _write(bundle, plan, options)
            result = result._replace(written=bool(plan.ops) and not job.check)
        return result._replace(machine_id=_machine_id(bundle, plan, options))
    except OciSystemdError as exc:
        return result._replace(status="failed", failure=Failure(exc.exit_code, exc.one_line()))
    except Exception as exc:  # a bug in one bundle's run: say so, go on with the others
        if os.environ.get("OCI_SYSTEMD_DEBUG"):
            raise
        return result._replace(status="failed", failure=Failure(EXIT_INTERNAL, internal_error_line(exc), True))


def _write(bundle: Bundle, plan: Plan, options: Options) -> None:
    from . import hostjournal
    from .bundle import write_bundle

    hostjournal.create_directories(plan, bundle.label, options.policy)
    if plan.ops:
        # plan.config is the patch applied, op by op, by the planner itself; the golden
        # and property tests prove jsonpatch gives the same document for every case.
        write_bundle(bundle, plan.config, plan.side_files)


def _machine_id(bundle: Bundle, plan: Plan, options: Options) -> str | None:
    """The machine-id the plan gave the container (none for a container left alone)."""
    from .concerns.machine_id import choose

    return choose(bundle.config, options)[0] if plan.systemd else None
