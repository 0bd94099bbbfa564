"""systemd-nspawn, the reference peer of the benchmarks (bench_services.py, bench_ready.py),
started in a cgroup of its own.

With ``--keep-unit`` on a host without systemd, nspawn makes ``payload`` and
``supervisor`` below the cgroup it was started in: started from the root cgroup, every
nspawn on the machine would share /payload.  So each nspawn starts in a fresh cgroup of
one name in every hierarchy it uses (it mirrors its unified path into name=systemd):
the shell moves itself there, then execs nspawn, so the PID stays nspawn's.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tests.harness.bundles import sh_quote


def hierarchies() -> list[Path]:
    """The cgroup hierarchies nspawn places itself in: name=systemd and the unified one
    on a v1 (hybrid) host, /sys/fs/cgroup itself on a v2 host."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return [root]
    return [h for h in (root / "systemd", root / "unified") if (h / "cgroup.procs").exists()]


def own_cgroups(name: str) -> list[Path]:
    """``name`` in every hierarchy, made here (remove them with remove_cgroup)."""
    made: list[Path] = []
    try:
        for c in (h / name for h in hierarchies()):
            c.mkdir()
            made.append(c)
    except OSError:
        for c in made:
            remove_cgroup(c)
        raise
    return made


def started_in(cgroups: list[Path], argv: list[str]) -> list[str]:
    """``argv`` run by a shell that first moves itself into ``cgroups``."""
    enter = " && ".join(f"echo $$ > {sh_quote(str(c / 'cgroup.procs'))}" for c in cgroups)
    return ["sh", "-c", f'{enter} && exec "$@"', "sh", *argv]


def remove_cgroup(top: Path, wait: float = 10) -> None:
    """rmdir a cgroup made here and what nspawn and the container's systemd left below it
    (payload/init.scope, supervisor), deepest first.  A cgroup empties a moment after its
    last process is reaped, so EBUSY is retried for a while."""
    deadline = time.monotonic() + wait
    while top.exists():
        dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
        try:
            for d in dirs:
                d.rmdir()
        except FileNotFoundError:
            continue
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"{Path(sys.argv[0]).name}: left cgroup {top}: {e}", file=sys.stderr)
                return
            time.sleep(0.1)
