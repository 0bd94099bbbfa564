"""Running oci-systemd and oci-systemd-copyup the way a test needs them.

Most tests only look at what a user sees: the exit code, stdout and stderr.  ``cli`` and
``copyup`` give exactly that by calling the program's ``main()`` in this process with its
standard streams, working directory and environment swapped for the call: no interpreter
start (a third of a second each, hundreds of times a run).

A real child interpreter is used where the process itself is under test: ``process=True``
(an entry point, an interpreter's exit status), a ``prefix`` (``setpriv ...``: dropped
capabilities), a file object as stdin, or a call from a thread other than the main one
(the streams and the working directory are the whole process's).  ``user=(uid, gid)``
forks, drops to that user and runs ``main()`` of a world-readable copy of transformer:
what an unprivileged caller meets, without the child having to read this checkout, which
that user may not be able to enter (bug 6: a clone under root's 0700 home).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import io
import os
import pickle
import pkgutil
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

from tests.harness.paths import HOOK_SCRIPT, REPO, SOURCE

# The copy-up helper exactly as the transformer registers it: the interpreter itself,
# isolated and without site (what docs/copyup.md recommends for speed), running hook.py.
HOOK_ARGV = (sys.executable, "-I", "-S", str(HOOK_SCRIPT))
CLI_ARGV = (sys.executable, "-m", "transformer")
# A fixed hook path keeps a plan independent of where this checkout lives.
HOOK_OPTS = ("--hook-path", "/usr/local/bin/oci-systemd-copyup")


@dataclass(frozen=True)
class Result:
    """What a run of a program showed: its exit code and its two output streams."""

    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child interpreter that must import this
    checkout's transformer, with OCI_SYSTEMD_DEBUG removed (it turns one-line errors
    into tracebacks)."""
    full = {**os.environ, "PYTHONPATH": str(SOURCE), **(env or {})}
    full.pop("OCI_SYSTEMD_DEBUG", None)
    return full


def isolated_python(code: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of ``python -c code`` as isolated as the hook's ``-I -S``
    (no site, no user site, nothing from the working directory), that still imports
    this checkout's transformer: the only variable in its environment is PYTHONPATH."""
    return [sys.executable, "-s", "-S", "-P", "-c", code], {"PYTHONPATH": str(SOURCE)}


def cli(*args: str, stdin: bytes | IO[bytes] | None = None, cwd: os.PathLike | str | None = None,
        env: dict[str, str] | None = None, prefix: tuple[str, ...] = (), process: bool = False,
        user: tuple[int, int] | None = None, timeout: float = 120) -> Result:
    """``oci-systemd ARGS`` (see the module's docstring for where it runs)."""
    if prefix or process or not isinstance(stdin, (bytes, type(None))) or not _main_thread():
        return _subprocess([*prefix, *CLI_ARGV, *args], stdin, cwd or REPO, child_env(env), timeout)

    def run() -> Result:
        from transformer.cli import main

        return _in_process(args, main, list(args), stdin or b"", cwd, env, timeout)

    return _as_user(run, *user) if user else run()


def copyup(argv: list[str], stdin: bytes = b"", *, process: bool = False, timeout: float = 60) -> Result:
    """``oci-systemd-copyup ARGV < stdin``; as a process, exactly as runc runs the hook."""
    if process or not _main_thread():
        return _subprocess([*HOOK_ARGV, *argv], stdin, None, None, timeout)
    from transformer.copyup.main import main

    return _in_process(tuple(argv), main, list(argv), stdin, None, None, timeout)


def assert_one_line(result: Result, prog: str, code: int, *fragments: str) -> str:
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


# ---- the three ways to run ---------------------------------------------------------------


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _subprocess(argv: list[str], stdin, cwd, env, timeout: float) -> Result:
    kw = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin if stdin is not None else subprocess.DEVNULL}
    p = subprocess.run(argv, capture_output=True, cwd=cwd, env=env, timeout=timeout, **kw)
    return Result(tuple(argv), p.returncode, p.stdout, p.stderr)


class RunTimeout(BaseException):
    """Raised by SIGALRM in a run in this process that takes too long (a BaseException:
    the program's own ``except Exception`` must not turn it into an exit code)."""


def _in_process(args: tuple[str, ...], main: Callable[[list[str]], int], argv: list[str], stdin: bytes,
                cwd, env: dict[str, str] | None, timeout: float) -> Result:
    with _alarm(timeout, args), _environment(env), _working_directory(cwd), \
            _standard_streams(stdin) as (out, err):
        code = main(argv)
    return Result(args, code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _alarm(seconds: float, args: tuple[str, ...]) -> Iterator[None]:
    """What subprocess.run's timeout is to a child: a program that hangs (on a FIFO, a
    lock) fails its test instead of stopping the suite."""
    def expire(signum, frame):
        raise RunTimeout(f"{' '.join(args)}: still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _as_user(run: Callable[[], Result], uid: int, gid: int) -> Result:
    """``run()`` in a forked child that has dropped to uid and gid (no supplementary
    groups), running a copy of transformer that any user can read.

    The user may not be able to read this checkout (a clone in root's 0700 home), so
    the child imports the package, and finds its built-in policy, in a world-readable
    temporary copy, every module imported before it drops its privileges.  The
    dependencies it needs must be loaded already (an import inside a function of a
    third-party package would be read from the checkout's venv)."""
    top = Path(tempfile.mkdtemp(prefix="oci-systemd-as-user-"))
    try:
        top.chmod(0o755)
        shutil.copytree(SOURCE / "transformer", top / "transformer", ignore=shutil.ignore_patterns("__pycache__"))
        from transformer.policy import default_policy_dir

        if not (top / "transformer" / "patches").is_dir():  # a checkout keeps it beside the package
            shutil.copytree(default_policy_dir(), top / "patches")
        return _forked_as(run, uid, gid, top)
    finally:
        shutil.rmtree(top)


def _forked_as(run: Callable[[], Result], uid: int, gid: int, top: Path) -> Result:
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(readable)
            _import_transformer_from(top)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            outcome: object = run()
        except BaseException as exc:  # reported to the parent, which fails the test
            outcome = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                with os.fdopen(writable, "wb") as pipe:
                    pickle.dump(outcome, pipe)
            finally:
                os._exit(0)
    os.close(writable)
    with os.fdopen(readable, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    outcome = pickle.loads(data)
    assert isinstance(outcome, Result), f"the child running as {uid}:{gid} failed: {outcome}"
    return outcome


def _import_transformer_from(top: Path) -> None:
    """Replace this process's transformer modules by those of the copy under ``top``, all
    of them imported now (their submodules are found through the package's __path__)."""
    for name in [n for n in sys.modules if n == "transformer" or n.startswith("transformer.")]:
        del sys.modules[name]
    spec = importlib.machinery.PathFinder.find_spec("transformer", [str(top)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["transformer"] = package
    spec.loader.exec_module(package)
    for module in pkgutil.walk_packages(package.__path__, "transformer."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)


@contextlib.contextmanager
def _environment(env: dict[str, str] | None) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.pop("OCI_SYSTEMD_DEBUG", None)
    os.environ.update(env or {})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _working_directory(cwd) -> Iterator[None]:
    if cwd is None:
        yield
        return
    saved = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def _standard_streams(stdin: bytes) -> Iterator[tuple[io.BytesIO, io.BytesIO]]:
    """sys.stdin, stdout and stderr as an interpreter would set them up for a pipe:
    UTF-8 text over a binary buffer, not a terminal."""
    out, err = io.BytesIO(), io.BytesIO()
    streams = (io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"),
               io.TextIOWrapper(out, encoding="utf-8", write_through=True),
               io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True))
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        yield out, err
    finally:
        for stream in streams[1:]:
            stream.flush()
        sys.stdin, sys.stdout, sys.stderr = saved
        for stream in streams:
            stream.detach()  # the buffers stay readable
