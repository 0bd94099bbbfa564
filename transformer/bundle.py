"""Edge: reading a bundle from disk and writing the result back, atomically.

Nothing here decides what to change; it only moves bytes between the disk and the
pure core, and refuses what it cannot read safely.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

from .config import check_config, parse_json
from .draft import SideFile
from .errors import BundleError, ConfigError
from .fsguard import read_config_file, read_limited, rootfs_dir
from .rootfs import EmptyRootfs, HostRootfs, RootfsView

CONFIG = "config.json"

# write_atomic names its temporary files .<name>.<random><TMP_SUFFIX>: a run killed
# before its rename leaves one behind, and the next apply (holding the lock, so no
# other apply is writing) removes them.
TMP_SUFFIX = ".oci-systemd-tmp"

# How long apply waits for another apply of the same bundle to finish.
LOCK_TIMEOUT_SECONDS = 60.0


def _no_fault(step: str, path: Path) -> None:
    pass


# Fault-injection seam: called before every step that touches the disk while writing
# ("mkdir", "create", "write", "fchmod", "fsync", "rename", "fsync-dir", "unlink-stale")
# with the path it is about. Tests replace it to raise OSError (EIO, ENOSPC, ...) at
# each step in turn and prove that every file stays the complete old or new version.
before_step: Callable[[str, Path], None] = _no_fault


class Bundle(NamedTuple):
    directory: Path | None  # None: config came from stdin outside any bundle
    label: str  # how messages name the config: a path, or "-"
    config: dict[str, Any]
    rootfs: RootfsView
    config_mode: int = 0o644
    # Exactly what was read: write_bundle's compare-and-swap, and the bytes the podman
    # filter gives back unchanged for a config that needs no change.
    config_bytes: bytes | None = None


def _rootfs(directory: Path, config: dict[str, Any], label: str, required: bool) -> RootfsView:
    # Read before plan() checks the shape, so the shape of root is checked here too.
    path = rootfs_dir(str(directory), config, label, required=required)
    return EmptyRootfs() if path is None else HostRootfs(Path(path))


def _bundle_directory(path: str) -> Path:
    directory = Path(path)
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise BundleError("bundle does not exist", file=path) from None
    except OSError as exc:  # EACCES on a parent, ELOOP, ENAMETOOLONG
        raise BundleError(f"bundle cannot be examined ({exc.strerror})", file=path) from None
    if not stat.S_ISDIR(st.st_mode):
        raise BundleError("bundle is not a directory", file=path)
    return directory


def read_config(path: str) -> tuple[str, Any]:
    """Only the JSON of BUNDLE's config (or stdin), unchecked: for the schema check,
    which reports every problem itself."""
    if path == "-":
        return "-", parse_json(read_limited(sys.stdin.buffer.read, "-"), "-")
    directory = _bundle_directory(path)
    data, _ = read_config_file(directory / CONFIG)
    return str(directory / CONFIG), parse_json(data, str(directory / CONFIG))


def read_bundle(path: str) -> Bundle:
    """BUNDLE is a directory holding config.json, or '-' for a config on stdin whose
    bundle is the working directory (podman's precreate contract). The config's shape
    is checked here, where its file is known, after the rootfs look-up."""
    if path == "-":
        data = read_limited(sys.stdin.buffer.read, "-")
        config = _object(parse_json(data, "-"), "-")
        rootfs = _rootfs(Path.cwd(), config, "-", required=False)
        check_config(config, "-")
        return Bundle(None, "-", config, rootfs, config_bytes=data)
    directory = _bundle_directory(path)
    config_path = directory / CONFIG
    data, mode = read_config_file(config_path)
    label = str(config_path)
    config = _object(parse_json(data, label), label)
    rootfs = _rootfs(directory, config, label, True)
    check_config(config, label)
    return Bundle(directory, label, config, rootfs, mode, data)


def _object(config: Any, label: str) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ConfigError("must be an object", file=label, pointer="/")
    return config


def dumps(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Temporary file in the same directory, fsync, rename, fsync the directory: a
    crash leaves the complete old file or the complete new one."""
    import tempfile  # only writers pay for it

    directory = path.parent
    before_step("create", path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as stream:
            before_step("write", Path(tmp))
            stream.write(data)
            stream.flush()
            before_step("fchmod", Path(tmp))
            os.fchmod(stream.fileno(), mode)
            before_step("fsync", Path(tmp))
            os.fsync(stream.fileno())
        before_step("rename", path)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # After the rename the new file is in place: a failing directory fsync is an error
    # to report, but the file is already the complete new version.
    before_step("fsync-dir", directory)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class _Lock:
    """An exclusive flock(2) on the bundle directory itself: no lock file is created
    (a refused bundle stays byte-identical), and the kernel drops the lock when its
    holder dies, even by SIGKILL, so a crashed apply never blocks the next one."""

    def __init__(self, directory: Path, timeout: float):
        self.directory = directory
        self.timeout = timeout
        self.fd = -1

    def __enter__(self) -> "_Lock":
        import fcntl

        self.fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    raise BundleError(
                        f"another oci-systemd apply has held the bundle lock for {self.timeout:.0f} s; "
                        "try again when it has finished",
                        file=str(self.directory),
                    ) from None
                time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing the only fd of the open file description unlocks


def lock_bundle(directory: Path, timeout: float | None = None) -> _Lock:
    """Serialise writers of one bundle: `with lock_bundle(dir): ...`."""
    return _Lock(directory, LOCK_TIMEOUT_SECONDS if timeout is None else timeout)


def remove_stale_temporaries(directory: Path, names: tuple[str, ...]) -> list[Path]:
    """Remove .<name>.*.oci-systemd-tmp left in `directory` by a killed run, for the
    files apply writes there. Only call it holding the bundle lock."""
    removed = []
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return removed
    prefixes = tuple(f".{name}." for name in names)
    for entry in entries:
        if entry.endswith(TMP_SUFFIX) and entry.startswith(prefixes):
            path = directory / entry
            before_step("unlink-stale", path)
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    os.unlink(path)
                    removed.append(path)
            except FileNotFoundError:
                pass  # gone already
    return removed


def write_bundle(bundle: Bundle, config: dict[str, Any], side_files: tuple[SideFile, ...]) -> None:
    """Side files first, config.json last: the config never names a file that is missing.

    Holding the bundle lock, it first removes temporaries of killed runs, then checks
    that config.json is still what read_bundle read. Two applies of one bundle started
    together plan the same result from the same input: the second finds the first's
    result already in place and writes nothing. A config changed by anything else in
    the meantime is refused rather than overwritten.
    """
    assert bundle.directory is not None
    new = dumps(config)
    config_path = bundle.directory / CONFIG
    try:
        with lock_bundle(bundle.directory):
            by_directory: dict[Path, list[str]] = {bundle.directory: [CONFIG]}
            for side in side_files:
                # Checked before anything is listed, removed or created in them.
                parts = _parts_below(bundle.directory, side.path)
                directory = _side_directory(bundle.directory, parts[:-1], create=False)
                if directory is not None:
                    by_directory.setdefault(directory, []).append(parts[-1])
            for directory, names in by_directory.items():
                remove_stale_temporaries(directory, tuple(names))
            if bundle.config_bytes is not None:
                current, _ = read_config_file(config_path)
                if current == new and _side_files_current(bundle.directory, side_files):
                    return  # another apply of the same input got here first
                if current != bundle.config_bytes:
                    raise BundleError(
                        "changed while oci-systemd was planning it; nothing written, run apply again",
                        file=str(config_path),
                    )
            _write_side_files(bundle.directory, side_files)
            write_atomic(config_path, new, bundle.config_mode)
    except OSError as exc:
        raise BundleError(f"cannot write ({exc.strerror})", file=exc.filename or str(bundle.directory)) from None


def write_side_files(top: Path, side_files: tuple[SideFile, ...]) -> None:
    """Write side files below `top` (each path relative to it, or absolute inside it)
    with the guards of write_bundle but not its lock: for side files that live outside
    any bundle (the podman filter's, under /run/oci-systemd). `top` itself is the
    caller's, as a bundle directory is: it is made when missing, links and all."""
    try:
        top.mkdir(mode=0o755, parents=True, exist_ok=True)
        _write_side_files(top, side_files)
    except OSError as exc:
        raise BundleError(f"cannot write ({exc.strerror})", file=exc.filename or str(top)) from None


def _write_side_files(top: Path, side_files: tuple[SideFile, ...]) -> None:
    for side in side_files:
        parts = _parts_below(top, side.path)
        directory = _side_directory(top, parts[:-1], create=True)
        assert directory is not None
        target = directory / parts[-1]
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise BundleError("exists and is not a regular file; refusing to replace it", file=str(target))
        write_atomic(target, side.content, side.mode)


def _parts_below(top: Path, path: str) -> tuple[str, ...]:
    """A side file's path as names below `top`."""
    target = Path(path)
    try:
        parts = target.relative_to(top).parts if target.is_absolute() else target.parts
    except ValueError:
        parts = ()
    if not parts or ".." in parts:
        raise BundleError(f"is not below {top}; refusing to write it", file=path)
    return parts


_O_PATH = getattr(os, "O_PATH", 0)


def _side_directory(top: Path, parts: tuple[str, ...], create: bool) -> Path | None:
    """top/parts, walked from an fd of `top` down with O_NOFOLLOW at every step; with
    `create`, each missing directory is made before the next step. A symlinked side
    directory would send the writes out of the bundle: it is refused before anything
    is created through it. None: a directory is missing (without `create`).

    The files are then written by path: only who can already rewrite config.json could
    swap a link in after this walk."""
    fd = os.open(top, _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, name in enumerate(parts, 1):
            path = top.joinpath(*parts[:depth])
            if create:
                before_step("mkdir", path)
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass  # a directory, or a link the open below refuses
            try:
                child = os.open(name, _O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise
                return None
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                what = "is a symbolic link" if os.path.islink(path) else "exists and is not a directory"
                raise BundleError(f"{what}; refusing to write through it", file=str(path)) from None
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return top.joinpath(*parts)


def _side_files_current(directory: Path, side_files: tuple[SideFile, ...]) -> bool:
    for side in side_files:
        try:
            with open(directory / side.path, "rb") as f:
                if f.read(len(side.content) + 1) != side.content:
                    return False
        except OSError:
            return False
    return True
