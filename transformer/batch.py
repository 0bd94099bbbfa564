"""The batch runner: one job over the bundles of a call, in worker processes when asked.

Each bundle runs on its own (job.run): an error becomes that bundle's result, so one
bad bundle never stops or touches the others. Results come back in the order the
bundles were given, whatever --jobs is, and a Report counts them the way black's
does: the summary, the --report lines and the exit status are read from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterator

from .errors import EXIT_CHANGES, EXIT_OK, OptionsError
from .job import BundleResult, Command, Job, run


def bundles_to_run(command: Command, bundles: tuple[str, ...], container_id_given: bool) -> list[str]:
    """The bundles of one call, each once, or an OptionsError for a call that cannot be."""
    if not bundles:
        raise OptionsError(f"{command} needs at least one BUNDLE")
    many = len(bundles) > 1
    if many and "-" in bundles:
        raise OptionsError("'-' (a config on stdin) cannot be mixed with other bundles")
    if many and container_id_given:
        raise OptionsError("--container-id names one container; with several bundles each gets its own from its path")
    if command == "apply" and "-" in bundles:
        raise OptionsError("apply edits a bundle directory; use plan for a config on stdin")
    unique: dict[str, str] = {}
    for b in bundles:  # the same bundle twice would be written twice at once
        unique.setdefault(b if b == "-" else os.path.realpath(b), b)
    return list(unique.values())


def results(job: Job, bundles: list[str], jobs: int) -> Iterator[BundleResult]:
    """Results in the order of `bundles`; with jobs > 1 from forked worker processes
    (planning is CPU-bound Python: threads would share one GIL)."""
    if jobs == 1 or len(bundles) == 1:
        yield from (run(job, b) for b in bundles)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, min(64, len(bundles) // (jobs * 8)))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork"),
                             initializer=_start_worker, initargs=(job,)) as pool:
        yield from pool.map(_run_in_worker, bundles, chunksize=chunk)


# A worker's job: set once in each worker process by the pool's initializer, so that
# a task carries only a bundle path. The calling process never sets it.
_worker_job: Job | None = None


def _start_worker(job: Job) -> None:
    global _worker_job
    _worker_job = job


def _run_in_worker(bundle: str) -> BundleResult:
    assert _worker_job is not None, "started without _start_worker"
    return run(_worker_job, bundle)


@dataclass
class Report:
    """The account of one call's bundles, in the manner of black's Report: it counts
    what `done` is given, says each bundle's messages, and renders the summary with
    str(report). Messages and the summary go to stderr, prefixed by the shell."""

    command: Command
    check: bool = False  # apply --check
    many: bool = False  # more than one bundle given: a summary, and fewer messages
    results: list[BundleResult] = field(default_factory=list)

    def done(self, result: BundleResult) -> None:
        self.results.append(result)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def messages(self, result: BundleResult) -> list[str]:
        """What stderr says about one bundle: its warnings and notes, what apply did
        (with one bundle; with many the summary counts it), and its error. With many,
        a skipped bundle's one note ("not a systemd container") is left to the summary,
        which counts it as skipped."""
        lines = []
        if not (self.many and result.status == "skipped"):
            lines += [f"{result.label}: {n.message}" for n in result.notes if n.kind in ("warning", "info")]
        if self.command == "apply" and not self.many and result.failure is None:
            if self.check and result.changes:
                lines.append(f"{result.label}: {result.changes} changes pending")
            elif result.written:
                lines.append(f"{result.label}: applied {result.changes} changes")
            elif result.status == "unchanged" and not self.check:
                lines.append(f"{result.label}: already ready for systemd; nothing to change")
        if result.failure is not None:
            lines.append(result.failure.line)
        return lines

    def report_lines(self) -> str:
        """--report: one JSON line a bundle, in the order given."""
        return "".join(json.dumps(r.report_line(), ensure_ascii=False) + "\n" for r in self.results)

    def __str__(self) -> str:
        pending = " (pending: --check wrote nothing)" if self.check else ""
        return (
            f"{len(self.results)} bundles: {self.count('changed')} changed{pending}, "
            f"{self.count('unchanged')} unchanged, {self.count('skipped')} skipped (not systemd), "
            f"{self.count('failed')} failed"
        )

    @property
    def return_code(self) -> int:
        """The worst bundle's exit code; else 1 when apply --check has changes pending."""
        failures = [r.failure.exit_code for r in self.results if r.failure is not None]
        if failures:
            return max(failures)
        if self.command == "apply" and self.check and self.count("changed"):
            return EXIT_CHANGES
        return EXIT_OK


def product(report: Report, fmt: str = "text") -> str:
    """stdout: the patch or review of each bundle that did not fail, in the order
    given. With many bundles a JSON product is one line a bundle."""
    ok = [r for r in report.results if r.failure is None]
    if report.command == "plan":
        if report.many:
            return "".join(json.dumps({"bundle": r.bundle, "patch": r.patch}, ensure_ascii=False) + "\n" for r in ok)
        return "".join(json.dumps(r.patch, indent=2, ensure_ascii=False) + "\n" for r in ok)
    if fmt == "json":
        indent = None if report.many else 2
        return "".join(json.dumps(r.review, indent=indent, ensure_ascii=False, default=str) + "\n" for r in ok)
    from .review import render_text

    return "".join(render_text(r.review) for r in ok if r.review is not None)
