"""Golden cases: a config in, the exact patch, config and review out, kept in review.

A case is a directory holding config.json, optional options.json and rootfs.json (a
DescribedRootfs), and the expected files: the patch, config and review of a plan, or
errors.txt, the one line a refused plan reports (kustomize keeps refusals as fixtures
the same way). The repository's own golden tests and the
`oci-systemd golden check|update` command share this code path.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, NamedTuple

from .bundle import dumps, read_config_file, write_atomic
from .config import parse_config, parse_json
from .errors import ConfigError, OciSystemdError
from .options import Options
from .plan import plan
from .policy import Policy
from .rootfs import DescribedRootfs, EmptyRootfs

EXPECTED = ("expected.patch.json", "expected.config.json", "review.txt")
ERRORS = "errors.txt"
DEFAULT_HOOK_PATH = "/usr/local/bin/oci-systemd-copyup"

_OPTION_KEYS = {"cgroup", "copyUp", "containerId", "hookPath", "tmpfsSize", "capabilities", "force", "journal",
                "hostOsRelease"}


class Mismatch(NamedTuple):
    case: str
    file: str
    expected: str | None
    actual: str

    def unified_diff(self) -> str:
        expected = (self.expected or "").splitlines(keepends=True)
        actual = self.actual.splitlines(keepends=True)
        return "".join(
            difflib.unified_diff(
                expected, actual, fromfile=f"{self.case}/{self.file} (expected)", tofile=f"{self.case}/{self.file} (actual)"
            )
        ) or f"{self.case}/{self.file}: missing\n"


def discover(directory: Path) -> list[Path]:
    """The case directories under directory (or directory itself if it is a case)."""
    if (directory / "config.json").is_file():
        return [directory]
    return sorted(p for p in directory.iterdir() if (p / "config.json").is_file())


def cases(directory: Path) -> list[Path]:
    """discover(), where finding no case is an error (a run of zero cases is no pass)."""
    if not directory.is_dir():
        raise OciSystemdError("is not a directory", file=str(directory))
    found = discover(directory)
    if not found:
        raise OciSystemdError("holds no golden case (a directory with config.json)", file=str(directory))
    return found


def _read_json(path: Path) -> Any:
    data, _ = read_config_file(path)
    return parse_json(data, str(path))


def case_options(case: Path, policy: Policy) -> Options:
    path = case / "options.json"
    raw: dict[str, Any] = _read_json(path) if path.is_file() else {}
    if not isinstance(raw, dict) or set(raw) - _OPTION_KEYS:
        raise ConfigError(f"must be an object with keys among {sorted(_OPTION_KEYS)}", file=str(path))
    caps = raw.get("capabilities")
    host = raw.get("hostOsRelease") or {}
    if not isinstance(host, dict) or not all(isinstance(v, str) for v in host.values()):
        raise ConfigError("hostOsRelease must be an object of os-release fields (KEY: value)", file=str(path))
    return Options(
        policy=policy,
        container_id=raw.get("containerId", case.name),
        cgroup=raw.get("cgroup", "v1"),
        copy_up=raw.get("copyUp", "hook"),
        hook_command=(raw.get("hookPath", DEFAULT_HOOK_PATH),),
        tmpfs_size=raw.get("tmpfsSize"),
        capabilities=tuple(caps) if caps is not None else None,
        force=bool(raw.get("force", False)),
        journal=raw.get("journal", "tmpfs"),
        # KEY -> value, as an os-release holds them: a case's host is fixed, not this machine's
        host_os_release=tuple(host.items()),
    )


def render(case: Path, policy: Policy) -> dict[str, str]:
    """The expected files' content, computed afresh from the case's inputs."""
    from .review import render_text, review_data

    data, _ = read_config_file(case / "config.json")
    config = parse_config(data, str(case / "config.json"))
    rootfs_path = case / "rootfs.json"
    rootfs = DescribedRootfs(_read_json(rootfs_path)) if rootfs_path.is_file() else EmptyRootfs()
    options = case_options(case, policy)
    try:
        result = plan(config, rootfs, options)
    except OciSystemdError as exc:
        return {ERRORS: exc.one_line() + "\n"}
    return {
        "expected.patch.json": json.dumps(result.patch(), indent=2, ensure_ascii=False) + "\n",
        "expected.config.json": dumps(result.config).decode("utf-8"),
        "review.txt": render_text(review_data(config, result, case.name)),
    }


def check(case: Path, policy: Policy) -> list[Mismatch]:
    mismatches = []
    rendered = render(case, policy)
    for name, actual in rendered.items():
        path = case / name
        expected = path.read_text(encoding="utf-8") if path.is_file() else None
        if expected != actual:
            mismatches.append(Mismatch(case.name, name, expected, actual))
    for name in (*EXPECTED, ERRORS):  # a plan that now succeeds, or now fails
        if name not in rendered and (case / name).is_file():
            mismatches.append(Mismatch(case.name, name, (case / name).read_text(encoding="utf-8"), ""))
    return mismatches


def update(case: Path, policy: Policy) -> list[str]:
    """Rewrite the expected files; return the names that changed."""
    changed = []
    rendered = render(case, policy)
    for name, actual in rendered.items():
        path = case / name
        if not path.is_file() or path.read_text(encoding="utf-8") != actual:
            write_atomic(path, actual.encode("utf-8"), 0o644)
            changed.append(name)
    for name in (*EXPECTED, ERRORS):
        if name not in rendered and (case / name).is_file():
            (case / name).unlink()
            changed.append(name)
    return changed
