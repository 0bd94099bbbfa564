"""Shared helpers of tests/hardening (imported by name: tests/ has no __init__.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from planhelp import GOLDEN

# The copy-up suite's runc helpers (busybox images, Container) are reused here.
_COPYUP_TESTS = str(Path(__file__).resolve().parents[1] / "copyup")
if _COPYUP_TESTS not in sys.path:
    sys.path.append(_COPYUP_TESTS)

REPO = Path(__file__).resolve().parents[2]
HOOK_SCRIPT = REPO / "transformer" / "copyup" / "hook.py"
STATE_FILE = "<stdin: OCI state>"
# A fixed hook path keeps the plan independent of where this checkout lives.
HOOK_OPTS = ("--hook-path", "/usr/local/bin/oci-systemd-copyup")


def make_bundle(path: Path, config: dict | None = None) -> Path:
    """A bundle whose PID 1 is systemd (/sbin/init -> /lib/systemd/systemd)."""
    (path / "rootfs" / "lib" / "systemd").mkdir(parents=True)
    (path / "rootfs" / "sbin").mkdir()
    (path / "rootfs" / "lib" / "systemd" / "systemd").write_text("")
    os.symlink("/lib/systemd/systemd", path / "rootfs" / "sbin" / "init")
    if config is None:
        shutil.copy(GOLDEN / "runc-spec-init" / "config.json", path / "config.json")
    else:
        (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


def runc_spec_config() -> dict:
    return json.loads((GOLDEN / "runc-spec-init" / "config.json").read_text())


def cli(*args: str, stdin=None, cwd: Path | None = None, prefix: tuple = (), timeout: float = 60):
    """The CLI as a user runs it, in its own process (what a traceback would reach)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OCI_SYSTEMD_DEBUG", None)
    kw = {"input": stdin} if isinstance(stdin, (bytes, type(None))) else {"stdin": stdin}
    return subprocess.run([*prefix, sys.executable, "-m", "transformer", *args], capture_output=True,
                          cwd=cwd or REPO, env=env, timeout=timeout, **kw)


def hook(argv: list[str], stdin: bytes, timeout: float = 30):
    """The copy-up helper exactly as the transformer registers it (python -I -S hook.py)."""
    return subprocess.run([sys.executable, "-I", "-S", str(HOOK_SCRIPT), *argv], input=stdin,
                          capture_output=True, timeout=timeout)


def assert_one_line(result, prog: str, code: int, *fragments: str) -> str:
    """Exit code, exactly one line on stderr starting with the program's name and holding
    every fragment (the file, the JSON pointer, the reason), no traceback, no stdout."""
    err = result.stderr.decode(errors="replace")
    assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.endswith("\n"), f"expected one line on stderr, got {err!r}"
    assert err.startswith(f"{prog}: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert result.stdout == b"", result.stdout[:200]
    return err


def tree_digest(root: Path) -> dict[str, tuple]:
    """Every entry below root: type, mode, owner, size, mtime and content (or link
    target). Opened without following links and without blocking on FIFOs."""
    def entry(p: Path) -> tuple:
        st = p.lstat()
        content: bytes | str = b""
        if stat.S_ISREG(st.st_mode):
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                h = hashlib.sha256()
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
                content = h.hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(p)
        return (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, content)

    out = {".": entry(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = entry(p)
    return out


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def state(pid: int, bundle: Path | str, /, **changes) -> dict:
    doc = {"ociVersion": "1.0.2-dev", "id": f"hardening-{pid}", "status": "creating", "pid": pid, "bundle": str(bundle)}
    for key, value in changes.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc
