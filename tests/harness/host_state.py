"""What a container run may leave behind on the host: a snapshot to compare before/after.

- the host's mount table (/proc/self/mountinfo, every line);
- /run, recursively, with type, mode, owner, size and mtime (a copy-up that wrote into
  ``/proc/<pid>/root/run`` before pivot_root would have written HERE, see PLATFORM.md);
  runc's own state directory /run/runc is left out: other containers, ours included while
  they run, keep their state there; that our container's entry is gone is checked apart;
- /tmp, the names and types of its top-level entries (their mtimes are left out: other
  programs' directories there change all the time; pytest's own base directory,
  /tmp/pytest-of-<user>, where the bundles live, is left out).  Only NEW entries count
  there: what other programs remove from /tmp is theirs.

On a machine shared with other sessions, other tools write to /tmp during a run.  New
/tmp entries named like those tools' own (``FOREIGN_TMP``, or the colon-separated globs in
$OCI_SYSTEMD_E2E_FOREIGN_TMP) are not ours and are ignored; a new Python-tempfile-like
``tmp*`` entry is ignored only when such a foreign entry appeared in the same window (pip
makes both), so a helper that leaks a temp directory on its own is still caught.  The
assertion message lists owner and ctime of every entry it reports.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path


def _entry(path: str) -> tuple:
    st = os.lstat(path)
    size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
    return (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_gid, size, st.st_mtime_ns)


def _names(path: str) -> tuple:
    return (stat.S_IFMT(os.lstat(path).st_mode),)


def _walk(root: str, *, depth: int | None, skip, entry=_entry) -> dict[str, tuple]:
    out: dict[str, tuple] = {}

    def rec(path: str, level: int) -> None:
        try:
            with os.scandir(path) as it:
                children = list(it)
        except OSError:
            return
        for e in children:
            if skip(e.path):
                continue
            try:
                out[e.path] = entry(e.path)
            except FileNotFoundError:
                continue
            if e.is_dir(follow_symlinks=False) and (depth is None or level < depth):
                rec(e.path, level + 1)

    rec(root, 1)
    return out


FOREIGN_TMP = tuple(filter(None, os.environ.get(
    "OCI_SYSTEMD_E2E_FOREIGN_TMP", "pip-*:bash_tool_*:bash_jobs.*").split(":")))


def _foreign(names: list[str]) -> set[str]:
    foreign = {n for n in names if any(fnmatch.fnmatch(os.path.basename(n), g) for g in FOREIGN_TMP)}
    if foreign:
        foreign |= {n for n in names if fnmatch.fnmatch(os.path.basename(n), "tmp?*")}
    return foreign


def _skip(path: str) -> bool:
    return (path == "/run/runc" or path.startswith("/run/runc/")
            or os.path.basename(path).startswith("pytest-of-") and os.path.dirname(path) == "/tmp")


@dataclass(frozen=True)
class HostSnapshot:
    mounts: frozenset[str]
    run: dict
    tmp: dict

    @classmethod
    def take(cls) -> "HostSnapshot":
        mounts = frozenset(Path("/proc/self/mountinfo").read_text().splitlines())
        return cls(mounts, _walk("/run", depth=None, skip=_skip), _walk("/tmp", depth=1, skip=_skip, entry=_names))

    def differences(self, later: "HostSnapshot") -> list[str]:
        """Human-readable differences; [] when the host looks the same."""
        out = [f"mount appeared: {m}" for m in sorted(later.mounts - self.mounts)]
        out += [f"mount vanished: {m}" for m in sorted(self.mounts - later.mounts)]
        for name, a, b in (("/run", self.run, later.run), ("/tmp", self.tmp, later.tmp)):
            new = sorted(set(b) - set(a))
            ignored = _foreign(new) if name == "/tmp" else set()
            for p in new:
                if p in ignored:
                    continue
                st = os.lstat(p) if os.path.lexists(p) else None
                who = f" (uid {st.st_uid}, ctime {st.st_ctime:.0f})" if st else ""
                out.append(f"{name}: left behind {p}{who}")
            if name == "/tmp":
                continue  # what others remove from /tmp is theirs; only leftovers count there
            out += [f"{name}: removed {p}" for p in sorted(set(a) - set(b))]
            out += [f"{name}: changed {p}: {a[p]} -> {b[p]}" for p in sorted(set(a) & set(b)) if a[p] != b[p]]
        return out
