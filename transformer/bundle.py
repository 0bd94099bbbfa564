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
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from .config import MAX_CONFIG_BYTES, parse_json
from .draft import SideFile
from .errors import BundleError, ConfigError
from .rootfs import EmptyRootfs, HostRootfs, RootfsView

CONFIG = "config.json"


class Bundle(NamedTuple):
    directory: Path | None  # None: config came from stdin outside any bundle
    label: str  # how messages name the config: a path, or "-"
    config: dict[str, Any]
    rootfs: RootfsView
    config_mode: int = 0o644


def _read_limited(stream: BinaryIO, label: str) -> bytes:
    data = stream.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; refusing to read it", file=label)
    return data


def read_config_file(path: Path) -> tuple[bytes, int]:
    """The bytes of a regular file, refusing links, FIFOs, directories and huge files
    before reading them (O_NONBLOCK: opening a FIFO must not hang)."""
    label = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BundleError("does not exist", file=label) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BundleError("is a symbolic link; oci-systemd only edits a regular config.json", file=label) from None
        raise BundleError(f"cannot be opened ({exc.strerror})", file=label) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
            raise BundleError(f"is {kind}", file=label)
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; refusing to read it", file=label)
        with os.fdopen(os.dup(fd), "rb") as stream:
            try:
                return _read_limited(stream, label), stat.S_IMODE(st.st_mode)
            except OSError as exc:
                raise BundleError(f"cannot be read ({exc.strerror})", file=label) from None
    finally:
        os.close(fd)


def _rootfs(directory: Path, config: dict[str, Any], label: str, required: bool) -> RootfsView:
    root_path = (config.get("root") or {}).get("path", "rootfs")
    path = Path(root_path) if os.path.isabs(root_path) else directory / root_path
    if not path.is_dir():
        if not required:
            return EmptyRootfs()
        raise BundleError(f"root.path {root_path!r}: {path} is not a directory", file=label, pointer="/root/path")
    return HostRootfs(path)


def _bundle_directory(path: str) -> Path:
    directory = Path(path)
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        raise BundleError(f"bundle {what}", file=path)
    return directory


def read_config(path: str) -> tuple[str, Any]:
    """Only the JSON of BUNDLE's config (or stdin), unchecked: for the schema check,
    which reports every problem itself."""
    if path == "-":
        return "-", parse_json(_read_limited(sys.stdin.buffer, "-"), "-")
    directory = _bundle_directory(path)
    data, _ = read_config_file(directory / CONFIG)
    return str(directory / CONFIG), parse_json(data, str(directory / CONFIG))


def read_bundle(path: str) -> Bundle:
    """BUNDLE is a directory holding config.json, or '-' for a config on stdin whose
    bundle is the working directory (podman's precreate contract)."""
    if path == "-":
        data = _read_limited(sys.stdin.buffer, "-")
        config = parse_json(data, "-")
        if not isinstance(config, dict):
            raise ConfigError("must be an object", file="-", pointer="/")
        return Bundle(None, "-", config, _rootfs(Path.cwd(), config, "-", required=False))
    directory = _bundle_directory(path)
    config_path = directory / CONFIG
    data, mode = read_config_file(config_path)
    # No check_config here: plan() checks the shape, and the CLI names the file.
    config = parse_json(data, str(config_path))
    if not isinstance(config, dict):
        raise ConfigError("must be an object", file=str(config_path), pointer="/")
    return Bundle(directory, str(config_path), config, _rootfs(directory, config, str(config_path), True), mode)


def dumps(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Temporary file in the same directory, fsync, rename, fsync the directory: a
    crash leaves the complete old file or the complete new one."""
    import tempfile  # only writers pay for it

    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".oci-systemd-tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_bundle(bundle: Bundle, config: dict[str, Any], side_files: tuple[SideFile, ...]) -> None:
    """Side files first, config.json last: the config never names a file that is missing."""
    assert bundle.directory is not None
    try:
        for side in side_files:
            target = bundle.directory / side.path
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if target.is_symlink() or (target.exists() and not target.is_file()):
                raise BundleError("exists and is not a regular file; refusing to replace it", file=str(target))
            write_atomic(target, side.content, side.mode)
        write_atomic(bundle.directory / CONFIG, dumps(config), bundle.config_mode)
    except OSError as exc:
        raise BundleError(f"cannot write ({exc.strerror})", file=exc.filename or str(bundle.directory)) from None
