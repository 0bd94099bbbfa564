"""Crash safety of `apply`: a failure or a SIGKILL at any step of writing leaves every
file of the bundle the complete old version or the complete new one; the next run
cleans what an interrupted one left; concurrent applies are serialised by a lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import transformer.bundle as bundle_mod
from tests.harness.bundles import make_systemd_bundle
from tests.harness.mounts import tmpfs
from tests.harness.runner import HOOK_OPTS, assert_one_line, cli
from tests.harness.skips import skip_or_fail
from tests.harness.trees import manifest
from transformer.bundle import TMP_SUFFIX
from transformer.cli import main

ARGS = ("--cgroup", "v1", *HOOK_OPTS, "--container-id", "crash-test")


def files_of(bundle: Path) -> dict[str, bytes]:
    """Every regular file of the bundle outside the rootfs, by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(bundle):
        if Path(dirpath) == bundle:
            dirnames[:] = [d for d in dirnames if d != "rootfs"]
        for name in filenames:
            p = Path(dirpath, name)
            out[str(p.relative_to(bundle))] = p.read_bytes()
    return out


def temporaries(bundle: Path) -> list[str]:
    return sorted(k for k in files_of(bundle) if k.endswith(TMP_SUFFIX))


def assert_old_or_new(bundle: Path, old: dict[str, bytes], new: dict[str, bytes]) -> str:
    """Each file the complete old or the complete new version; config.json parses."""
    now = {k: v for k, v in files_of(bundle).items() if not k.endswith(TMP_SUFFIX)}
    assert set(now) <= set(old) | set(new), set(now) - set(old) - set(new)
    for name in set(old) | set(new):
        assert now.get(name) in (old.get(name), new.get(name)), f"{name} is neither old nor new"
    json.loads(now["config.json"])
    return "new" if now["config.json"] == new["config.json"] else "old"


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> tuple[dict, dict, list]:
    """(old files, new files, the disk steps of one apply) of a fresh bundle."""
    b = make_systemd_bundle(tmp_path_factory.mktemp("versions") / "bundle")
    old = files_of(b)
    steps: list[tuple[str, str]] = []
    saved = bundle_mod.before_step
    bundle_mod.before_step = lambda step, path: steps.append((step, str(Path(path).relative_to(b))))
    try:
        assert main(["apply", str(b), *ARGS]) == 0
    finally:
        bundle_mod.before_step = saved
    new = files_of(b)
    assert new["config.json"] != old["config.json"] and len(new) > len(old)
    return old, new, steps


@pytest.fixture
def fresh(tmp_path: Path):
    return make_systemd_bundle(tmp_path / "bundle")


def test_every_write_step_is_exercised(versions):
    _, new, steps = versions
    kinds = {s for s, _ in steps}
    assert {"create", "write", "fsync", "rename", "fsync-dir", "mkdir"} <= kinds, kinds
    renamed = {p for s, p in steps if s == "rename"}
    assert renamed == set(new), "every file of the new version, and only those, is renamed into place"
    assert steps[-2:] == [("rename", "config.json"), ("fsync-dir", ".")], "config.json must be written last"


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_failure_at_every_step(versions, tmp_path: Path, capsys, code: int):
    old, new, steps = versions
    for index, (step, where) in enumerate(steps):
        b = make_systemd_bundle(tmp_path / f"b{index}")

        def fail(s, path, _n=[0]):
            if _n[0] == index:
                _n[0] += 1
                raise OSError(code, os.strerror(code), str(path))
            _n[0] += 1

        bundle_mod.before_step = fail
        try:
            rc = main(["apply", str(b), *ARGS])
        finally:
            bundle_mod.before_step = bundle_mod._no_fault
        err = capsys.readouterr().err
        assert rc == 2, (step, where, err)
        assert err.count("\n") == 1 and os.strerror(code) in err and "Traceback" not in err, err
        assert_old_or_new(b, old, new)
        assert temporaries(b) == [], (step, where, "a failed write left its temporary file")
        # The next run completes the job.
        assert main(["apply", str(b), *ARGS]) == 0
        capsys.readouterr()
        assert files_of(b) == new


class ApplyChild:
    """`apply` of one bundle in a forked child: main() of this process, so no interpreter
    start, and the seams of this process to synchronise on.  The child tells the parent
    where it is by writing one byte to a pipe, never by the parent waiting a while:

    - ``die_at=N``: it SIGKILLs itself just before disk step N (transformer.bundle's
      before_step seam);
    - ``tell_at=N``: it writes b"s" just before disk step N, and goes on;
    - ``tell_locked_out=True``: it writes b"l" when flock(2) first finds the bundle
      locked by another holder, and goes on waiting for the lock.

    Its stderr goes to a file (``stderr()``); ``wait()`` returns its wait status."""

    def __init__(self, b: Path, *, die_at: int | None = None, tell_at: int | None = None,
                 tell_locked_out: bool = False) -> None:
        fd, name = tempfile.mkstemp(prefix="apply-child-", suffix=".stderr", dir=b.parent)
        os.close(fd)
        self._stderr = Path(name)
        readable, writable = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never return into pytest
            try:
                # Only its pipe, as subprocess's close_fds would leave: a descriptor of the
                # parent's (a lock the test holds) must not live on in the child.
                for fd in map(int, os.listdir("/proc/self/fd")):
                    if fd > 2 and fd != writable:
                        with contextlib.suppress(OSError):  # the listing's own, closed already
                            os.close(fd)
                sys.stdout, sys.stderr = open(os.devnull, "w"), open(self._stderr, "w")
                steps = [0]

                def seam(step, path):
                    if steps[0] == die_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    if steps[0] == tell_at:
                        os.write(writable, b"s")
                    steps[0] += 1

                bundle_mod.before_step = seam
                if tell_locked_out:
                    real_flock, told = fcntl.flock, []

                    def flock(fd, operation):
                        try:
                            return real_flock(fd, operation)
                        except BlockingIOError:
                            if not told:
                                told.append(os.write(writable, b"l"))
                            raise

                    fcntl.flock = flock
                code = main(["apply", str(b), *ARGS])
                sys.stderr.flush()
                os._exit(code)
            finally:
                os._exit(99)
        os.close(writable)
        self._told = readable

    def told(self, deadline: float = 60) -> bytes:
        """The byte the child wrote; b"" if it exited first. Fails after ``deadline``
        seconds without either (a child stuck where it should not be)."""
        ready, _, _ = select.select([self._told], [], [], deadline)
        assert ready, f"child {self.pid} said nothing and did not exit for {deadline} s"
        return os.read(self._told, 1)

    def running(self) -> bool:
        return os.waitpid(self.pid, os.WNOHANG) == (0, 0)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)  # the child we forked, by its pid

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        os.close(self._told)
        return status

    def stderr(self) -> str:
        return self._stderr.read_text()


def test_sigkill_before_every_step_then_next_run_cleans_up(versions, tmp_path: Path, capsys):
    old, new, steps = versions
    left_behind = 0
    for index, (step, where) in enumerate(steps):
        b = make_systemd_bundle(tmp_path / f"k{index}")
        status = ApplyChild(b, die_at=index).wait()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (step, status)
        assert_old_or_new(b, old, new)
        left_behind += bool(temporaries(b))
        assert main(["apply", str(b), *ARGS]) == 0
        capsys.readouterr()
        assert files_of(b) == new and temporaries(b) == []
    assert left_behind > 0, "no kill landed between a temporary file's creation and its rename"


def test_200_sigkills_at_random_moments(versions, tmp_path: Path, capsys):
    """Each child is killed as soon as it has reached a disk step drawn at random: the
    kill lands within that step or a later one, wherever the scheduler has the child."""
    old, new, steps = versions
    b = make_systemd_bundle(tmp_path / "bundle")
    rng = random.Random(int(os.environ.get("OCI_SYSTEMD_CRASH_SEED", "6")))
    outcomes = {"old": 0, "new": 0}
    stale = 0
    for _ in range(200):
        at = rng.randrange(len(steps))
        child = ApplyChild(b, tell_at=at)
        reached = child.told()
        child.kill()
        child.wait()
        # Leftovers of earlier kills only add steps (unlink-stale) before the first
        # write: every child reaches each step of a plain apply.
        assert reached == b"s", f"the child ended before disk step {at}: {child.stderr()}"
        outcomes[assert_old_or_new(b, old, new)] += 1
        stale = max(stale, len(temporaries(b)))
        (b / "config.json").write_bytes(old["config.json"])  # old again; leftovers stay
    assert main(["apply", str(b), *ARGS]) == 0
    capsys.readouterr()
    assert files_of(b) == new and temporaries(b) == [], "the next run must clean stale temporary files"
    assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes
    print(f"200 SIGKILLs over {len(steps)} disk steps: {outcomes}, up to {stale} stale temporaries")


# -- real file systems: a tiny tmpfs (ENOSPC), a read-only one (EROFS), no permission ------


def _fill(directory: Path, leave: int) -> None:
    """Fill the file system of directory until only about `leave` bytes stay free."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))


@pytest.mark.parametrize("leave", [0, 4096, 8192, 16384])
def test_enospc_on_a_tiny_tmpfs(versions, tmp_path: Path, leave: int):
    old, new, _ = versions
    with tmpfs(tmp_path / "tiny", "size=512k") as mnt:
        b = make_systemd_bundle(mnt / "bundle")
        _fill(mnt, leave)
        result = cli("apply", str(b), *ARGS)
        if leave == 0:
            assert result.returncode == 2, "a full file system must make apply fail"
        if result.returncode != 0:
            assert_one_line(result, "oci-systemd", 2, "No space left on device")
        print(f"ENOSPC leaving {leave} bytes: exit {result.returncode}")
        assert_old_or_new(b, old, new)
        assert temporaries(b) == []
        (mnt / "filler").unlink()
        assert cli("apply", str(b), *ARGS).returncode == 0
        assert files_of(b) == new


def test_erofs_read_only_bundle(tmp_path: Path):
    with tmpfs(tmp_path / "ro", "size=4m") as mnt:
        b = make_systemd_bundle(mnt / "bundle")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        before = manifest(b)
        result = cli("apply", str(b), *ARGS)
        assert_one_line(result, "oci-systemd", 2, "Read-only file system")
        assert manifest(b) == before


@pytest.mark.parametrize("where", ["bundle", "side-directory"])
def test_eacces_without_write_permission(versions, tmp_path: Path, where: str):
    """Root without CAP_DAC_OVERRIDE, so that modes apply; the side-file directory case
    fails after nothing (bundle) or after config.json stays old (side directory)."""
    old, new, _ = versions
    b = make_systemd_bundle(tmp_path / "bundle")
    target = b if where == "bundle" else b / "oci-systemd"
    target.mkdir(exist_ok=True)
    old = dict(old)
    os.chmod(target, 0o555)
    prefix: tuple = ()
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            skip_or_fail("setpriv (util-linux) is needed to drop root's DAC capabilities")
        prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--")
    try:
        before = manifest(b)
        result = cli("apply", str(b), *ARGS, prefix=prefix)
        assert_one_line(result, "oci-systemd", 2, "Permission denied")
        assert manifest(b) == before
    finally:
        os.chmod(target, 0o755)


# -- concurrency ----------------------------------------------------------------------


def test_concurrent_applies_all_finish_once(versions, tmp_path: Path):
    old, new, _ = versions
    b = make_systemd_bundle(tmp_path / "bundle")
    children = [ApplyChild(b) for _ in range(6)]
    results = [(child.wait(), child.stderr()) for child in children]
    assert all(os.waitstatus_to_exitcode(status) == 0 for status, _ in results), results
    assert files_of(b) == new and temporaries(b) == []
    again = cli("plan", str(b), *ARGS)
    assert again.returncode == 0 and again.stdout == b"[]\n", again.stderr


def _hold_lock(b: Path) -> int:
    fd = os.open(b, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_lock_serialises_apply(versions, tmp_path: Path):
    """While another holder has the bundle's lock, apply waits and writes nothing."""
    old, new, _ = versions
    b = make_systemd_bundle(tmp_path / "bundle")
    fd = _hold_lock(b)
    child = ApplyChild(b, tell_locked_out=True)
    try:
        assert child.told() == b"l", "apply did not try to take the lock"
        assert child.running(), "apply did not wait for the lock"
        assert files_of(b) == old, "apply wrote without the lock"
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(child.wait()) == 0, child.stderr()
    assert files_of(b) == new


def test_config_changed_while_waiting_for_the_lock_is_not_overwritten(tmp_path: Path):
    b = make_systemd_bundle(tmp_path / "bundle")
    fd = _hold_lock(b)
    child = ApplyChild(b, tell_locked_out=True)
    try:
        assert child.told() == b"l"  # apply has read and planned, and waits for the lock
        config = json.loads((b / "config.json").read_text())
        config["hostname"] = "edited-meanwhile"
        (b / "config.json").write_text(json.dumps(config))
        edited = (b / "config.json").read_bytes()
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(child.wait()) == 2
    err = child.stderr()
    assert err.count("\n") == 1 and "changed while oci-systemd was planning it" in err, err
    assert (b / "config.json").read_bytes() == edited


def test_lock_timeout_is_one_line(tmp_path: Path, monkeypatch, capsys):
    b = make_systemd_bundle(tmp_path / "bundle")
    before = manifest(b)
    monkeypatch.setattr(bundle_mod, "LOCK_TIMEOUT_SECONDS", 0.3)
    fd = _hold_lock(b)
    try:
        assert main(["apply", str(b), *ARGS]) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "held the bundle lock" in err, err
    assert manifest(b) == before
