"""The bad-input corpus: configs given to the CLI and OCI states given to the hook.

Every case asserts the exit code, exactly one line on stderr naming the file and (where
the input has one) the JSON pointer, no traceback, and that every file of the bundle,
and every host file a case points at, is byte-identical afterwards. tests/test_cli.py
has the first ~40 cases; these are others (none repeats one of those).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.bundles import make_systemd_bundle
from tests.harness.copyup import STATE_FILE, state
from tests.harness.planning import runc_config
from tests.harness.runner import HOOK_OPTS, assert_one_line, cli, copyup
from tests.harness.skips import require_root, skip_or_fail
from tests.harness.trees import manifest, sha256_file

GOOD = json.dumps(runc_config(), indent=2).encode()


def _deep(n: int, open_: bytes, close: bytes, inner: bytes = b"") -> bytes:
    return open_ * n + inner + close * n


# -- config.json bytes: (data, fragments). A fragment starting with "/" is the pointer
# and is checked as ": /pointer: " so that it cannot match inside a path.
BYTES = {
    "truncated-object": (GOOD[: len(GOOD) // 2], ["is not JSON"]),
    "truncated-string": (b'{"ociVersion": "1.0', ["is not JSON", "Unterminated string"]),
    "truncated-after-comma": (b'{"ociVersion": "1.0.2",', ["is not JSON"]),
    "trailing-data": (GOOD + b"{}", ["is not JSON", "Extra data"]),
    "only-whitespace": (b" \n\t\r\n ", ["is empty"]),
    "nul-byte": (b"\0", ["is not JSON"]),
    "bom-before-real-config": (b"\xef\xbb\xbf" + GOOD, ["byte-order mark"]),
    "utf16le": (("\ufeff" + GOOD.decode()).encode("utf-16-le"), ["not UTF-8"]),
    "latin1-string": (b'{"ociVersion": "1.0.2", "hostname": "caf\xe9"}', ["not UTF-8"]),
    "overlong-utf8-slash": (b'{"ociVersion": "1.0.2", "hostname": "\xc0\xaf"}', ["not UTF-8"]),
    "cesu-surrogate-bytes": (b'{"ociVersion": "1.0.2", "hostname": "\xed\xa0\x80"}', ["not UTF-8"]),
    "escaped-lone-surrogate-env": (
        b'{"ociVersion": "1.0.2", "process": {"args": ["/sbin/init"], "env": ["A=\\ud800"]}}',
        ["/process/env/0", "surrogate"]),
    "escaped-lone-surrogate-key": (b'{"ociVersion": "1.0.2", "annotations": {"\\udfff": "x"}}', ["/annotations", "surrogate"]),
    "infinity": (b'{"ociVersion": "1.0.2", "process": {"rlimits": [{"hard": Infinity}]}}', ["Infinity"]),
    "minus-infinity": (b'{"ociVersion": "1.0.2", "x": -Infinity}', ["-Infinity"]),
    "nan-in-list": (b'{"ociVersion": "1.0.2", "linux": {"sysctl": {}}, "x": [1, NaN]}', ["NaN"]),
    "number-out-of-range": (b'{"ociVersion": "1.0.2", "process": {"oomScoreAdj": 1e99999}}',
                            ["/process/oomScoreAdj", "out of range"]),
    "integer-5000-digits": (b'{"ociVersion": "1.0.2", "x": ' + b"9" * 5000 + b"}", ["is not valid JSON"]),
    "deep-objects-100000": (_deep(100_000, b'{"a":', b"}", b"1"), ["nested too deeply"]),
    "deep-inside-args-100000": (b'{"ociVersion": "1.0.2", "process": {"args": ' + _deep(100_000, b"[", b"]") + b"}}",
                                ["nested too deeply"]),
    "duplicate-annotation": (b'{"ociVersion": "1.0.2", "annotations": {"a/b": "1", "a/b": "2"}}',
                             ["/annotations/a~1b", "duplicate key"]),
    "duplicate-args": (b'{"ociVersion": "1.0.2", "process": {"args": ["/sbin/init"], "args": ["/bin/sh"]}}',
                       ["/process/args", "duplicate key"]),
    "single-quotes": (b"{'ociVersion': '1.0.2'}", ["is not JSON"]),
    "comment": (b'// runc spec\n{"ociVersion": "1.0.2"}', ["is not JSON"]),
    "trailing-comma": (b'{"ociVersion": "1.0.2",}', ["is not JSON"]),
    "top-level-string": (b'"1.0.2"', ["must be an object"]),
    "top-level-null": (b"null", ["must be an object"]),
}


def _set(*tokens_and_value):
    *tokens, value = tokens_and_value

    def mutate(config):
        node = config
        for key in tokens[:-1]:
            node = node[key]
        if value is ...:
            del node[tokens[-1]]
        else:
            node[tokens[-1]] = value

    return mutate


# -- fields of a real runc config: (mutation, pointer, reason fragment)
FIELDS = {
    "ociVersion-number": (_set("ociVersion", 1), "/ociVersion", "must be a string"),
    "ociVersion-null": (_set("ociVersion", None), "/ociVersion", "not null"),
    "ociVersion-0.9": (_set("ociVersion", "0.9.0"), "/ociVersion", "not a runtime-spec version"),
    "ociVersion-two-parts": (_set("ociVersion", "1.0"), "/ociVersion", "not a runtime-spec version"),
    "ociVersion-v-prefix": (_set("ociVersion", "v1.0.2"), "/ociVersion", "not a runtime-spec version"),
    "ociVersion-empty": (_set("ociVersion", ""), "/ociVersion", "not a runtime-spec version"),
    "ociVersion-newline": (_set("ociVersion", "1.0.2\n"), "/ociVersion", "not a runtime-spec version"),
    "root-null": (_set("root", None), "/root", "must be an object"),
    "root-path-number": (_set("root", "path", 7), "/root/path", "string"),
    "root-path-null": (_set("root", "path", None), "/root/path", "string"),
    "root-path-empty": (_set("root", "path", ""), "/root/path", "non-empty"),
    "root-readonly-null": (_set("root", "readonly", None), "/root/readonly", "true or false"),
    "process-null": (_set("process", None), "/process", "not null"),
    "process-args-null": (_set("process", "args", None), "/process/args", "not null"),
    "process-args-1-null": (_set("process", "args", ["/sbin/init", None]), "/process/args/1", "string"),
    "process-args-0-empty": (_set("process", "args", [""]), "/process/args/0", "empty string"),
    "process-env-0-number": (_set("process", "env", [3]), "/process/env/0", "string"),
    "capabilities-null": (_set("process", "capabilities", None), "/process/capabilities", "not null"),
    "capabilities-effective-null": (_set("process", "capabilities", "effective", None),
                                    "/process/capabilities/effective", "not null"),
    "capabilities-bounding-number": (_set("process", "capabilities", "bounding", [21]),
                                     "/process/capabilities/bounding/0", "string"),
    "mounts-null": (_set("mounts", None), "/mounts", "not null"),
    "mounts-1-null": (_set("mounts", 1, None), "/mounts/1", "not null"),
    "mount-destination-null": (_set("mounts", 0, "destination", None), "/mounts/0/destination", "not null"),
    "mount-destination-number": (_set("mounts", 2, "destination", 5), "/mounts/2/destination", "string"),
    "mount-type-number": (_set("mounts", 0, "type", 9), "/mounts/0/type", "string"),
    "mount-source-null": (_set("mounts", 3, "source", None), "/mounts/3/source", "not null"),
    "mount-options-0-number": (_set("mounts", 1, "options", [1]), "/mounts/1/options/0", "string"),
    "mount-options-string": (_set("mounts", 1, "options", "nosuid,noexec"), "/mounts/1/options", "list of strings"),
    "mount-destination-empty": (_set("mounts", 0, "destination", ""), "/mounts/0/destination", "absolute"),
    "mount-destination-dotdot-relative": (_set("mounts", 0, "destination", "../etc"), "/mounts/0/destination", "absolute"),
    "mount-destination-slash-dotdot": (_set("mounts", 0, "destination", "/.."), "/mounts/0/destination", ".."),
    "mount-destination-dotdot-chain": (_set("mounts", 4, "destination", "/run/lock/../../../etc"),
                                       "/mounts/4/destination", ".."),
    "mount-destination-dot": (_set("mounts", 0, "destination", "."), "/mounts/0/destination", "absolute"),
    "mount-destination-relative-tmp": (_set("mounts", 5, "destination", "tmp/x"), "/mounts/5/destination", "absolute"),
    "mount-destination-trailing-dotdot": (_set("mounts", 1, "destination", "/dev/.."), "/mounts/1/destination", ".."),
    "linux-null": (_set("linux", None), "/linux", "not null"),
    "namespaces-null": (_set("linux", "namespaces", None), "/linux/namespaces", "not null"),
    "namespace-type-null": (_set("linux", "namespaces", 0, "type", None), "/linux/namespaces/0/type", "not null"),
    "namespace-missing-type": (_set("linux", "namespaces", 1, "type", ...), "/linux/namespaces/1/type", "required"),
    "mountLabel-number": (_set("linux", "mountLabel", 0), "/linux/mountLabel", "string"),
    "cgroupsPath-null": (_set("linux", "cgroupsPath", None), "/linux/cgroupsPath", "not null"),
    "annotations-null": (_set("annotations", None), "/annotations", "not null"),
    "annotation-value-null": (_set("annotations", {"org.example/x": None}), "/annotations/org.example~1x", "not null"),
    "hooks-null": (_set("hooks", None), "/hooks", "not null"),
    "hooks-prestart-null": (_set("hooks", {"prestart": None}), "/hooks/prestart", "not null"),
    "hook-path-number": (_set("hooks", {"prestart": [{"path": 1}]}), "/hooks/prestart/0/path", "string"),
    "hook-args-null-item": (_set("hooks", {"poststop": [{"path": "/x", "args": ["x", None]}]}),
                            "/hooks/poststop/0/args/1", "string"),
}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_systemd_bundle(tmp_path / "bundle")


def _refused(bundle: Path, commands, fragments, *, label: Path | None = None, watch=()) -> None:
    label = label or bundle / "config.json"
    before = manifest(bundle)
    watched = {p: sha256_file(p) for p in watch}
    for command in commands:
        result = cli(command, str(bundle), "--cgroup", "v1", *HOOK_OPTS)
        parts = [f": {f}: " if f.startswith("/") else f for f in fragments]
        assert_one_line(result, "oci-systemd", 2, f"oci-systemd: error: {label}", *parts)
    assert manifest(bundle) == before, "a refused bundle changed"
    assert {p: sha256_file(p) for p in watch} == watched, "a host file changed"


@pytest.mark.parametrize("name", sorted(BYTES))
def test_config_bytes_refused(bundle: Path, name: str):
    data, fragments = BYTES[name]
    (bundle / "config.json").write_bytes(data)
    _refused(bundle, ("apply",), fragments)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_config_fields_refused(bundle: Path, name: str):
    mutate, pointer, reason = FIELDS[name]
    config = runc_config()
    mutate(config)
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    _refused(bundle, ("apply",), [pointer, reason])


def test_refusals_agree_across_commands(bundle: Path):
    """plan, review and apply share one reading path: the same line for each."""
    (bundle / "config.json").write_bytes(BYTES["duplicate-annotation"][0])
    _refused(bundle, ("plan", "review", "apply"), ["/annotations/a~1b", "duplicate key"])


# -- config.json that is not a regular file ------------------------------------------


def _replace_config(bundle: Path, kind: str, tmp_path: Path) -> list[str]:
    cfg = bundle / "config.json"
    cfg.unlink()
    host = tmp_path / "host-config.json"
    host.write_bytes(GOOD)
    if kind == "symlink-to-valid-host-config":
        cfg.symlink_to(host)
        return [str(host)]
    if kind == "dangling-symlink":
        cfg.symlink_to(tmp_path / "nowhere.json")
    elif kind == "symlink-to-dev-zero":
        cfg.symlink_to("/dev/zero")
    elif kind == "relative-symlink-loop":
        cfg.symlink_to("config.json")
    elif kind == "directory-with-a-config-inside":
        cfg.mkdir()
        (cfg / "config.json").write_bytes(GOOD)
    elif kind == "unix-socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(cfg))
        s.close()
    elif kind == "character-device":
        require_root()
        os.mknod(cfg, stat.S_IFCHR | 0o644, os.makedev(1, 3))
    return []


@pytest.mark.parametrize("kind, fragment", [
    ("symlink-to-valid-host-config", "symbolic link"),
    ("dangling-symlink", "symbolic link"),
    ("symlink-to-dev-zero", "symbolic link"),
    ("relative-symlink-loop", "symbolic link"),
    ("directory-with-a-config-inside", "is a directory"),
    ("unix-socket", "is a socket, not a regular file"),
    ("character-device", "not a regular file"),
])
def test_config_not_a_regular_file(bundle: Path, tmp_path: Path, kind: str, fragment: str):
    watch = _replace_config(bundle, kind, tmp_path)
    _refused(bundle, ("apply",), [fragment], watch=watch)


def test_fifo_with_a_writer_is_refused_without_reading(bundle: Path):
    """A FIFO must be refused by its type; a writer on the other end changes nothing."""
    cfg = bundle / "config.json"
    cfg.unlink()
    os.mkfifo(cfg)
    # O_RDWR does not wait for a reader; the data sits in the pipe before the digest.
    writer = subprocess.Popen(["sh", "-c", f"exec 3<>'{cfg}'; printf '{{}}' >&3; echo ready; exec sleep 30"],
                              stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline() == b"ready\n"
        _refused(bundle, ("plan", "apply"), ["is a FIFO"])
    finally:
        writer.kill()  # by the pid we started
        writer.wait()


# -- a 200 MB config is refused at once, without reading it into memory --------------


# Runs argv[2:] with the inherited stdin, then writes its children's peak RSS (KiB) to
# argv[1]. A small wrapper, not the test process: a child forked from pytest carries
# pytest's own high-water RSS through exec (the kernel keeps the larger of the two), so
# RUSAGE_CHILDREN here would report the suite's size, not the CLI's.
_PEAK_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)


def _child_peak_rss_kib(run, peak_file: Path) -> tuple[object, int]:
    """run(prefix) runs the CLI behind the prefix; returns its result and peak RSS."""
    result = run((sys.executable, "-I", "-S", "-c", _PEAK_WRAPPER, str(peak_file)))
    return result, int(peak_file.read_text())


@pytest.mark.parametrize("how", ["file-validate", "file-review", "stdin-plan"])
def test_200mb_config_refused_without_reading_it(bundle: Path, tmp_path: Path, how: str):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:  # real bytes, not sparse: a reader would really pay for them
        f.write(b'{"ociVersion": "1.0.2", "x": "')
        block = b"y" * (1 << 20)
        for _ in range(200):
            f.write(block)
        f.write(b'"}')
    if how == "stdin-plan":
        with open(big, "rb") as stdin:
            result, peak = _child_peak_rss_kib(
                lambda prefix: cli("plan", "-", "--cgroup", "v1", *HOOK_OPTS, stdin=stdin, cwd=bundle, prefix=prefix),
                tmp_path / "peak")
        label = "-"
    else:
        shutil.move(big, bundle / "config.json")
        before = manifest(bundle)
        command = how.split("-")[1]
        result, peak = _child_peak_rss_kib(lambda prefix: cli(command, str(bundle), prefix=prefix),
                                                    tmp_path / "peak")
        label = str(bundle / "config.json")
        assert manifest(bundle) == before
    assert_one_line(result, "oci-systemd", 2, f"error: {label}: ", "larger than 4 MiB")
    # A reader of the whole file would need 200+ MB; the refusal needs the interpreter.
    assert peak < 120 * 1024, f"peak RSS {peak} KiB: the config was read into memory"


# -- the bundle and its rootfs --------------------------------------------------------


def _without_dac_override() -> tuple:
    """The prefix that runs the CLI as root without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH, so that the kernel enforces modes (nothing for a user)."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        skip_or_fail("setpriv (util-linux) is needed to drop root's privileges")
    return ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")


def test_bundle_without_permission_to_read(bundle: Path):
    """A bundle directory (mode 0) its caller cannot enter."""
    os.chmod(bundle, 0)
    try:
        before = manifest(bundle)
        result = cli("apply", str(bundle), "--cgroup", "v1", *HOOK_OPTS, prefix=_without_dac_override())
        assert_one_line(result, "oci-systemd", 2, f"error: {bundle / 'config.json'}: ", "cannot be opened",
                        "Permission denied")
        assert manifest(bundle) == before
    finally:
        os.chmod(bundle, 0o755)


def test_bundle_below_a_directory_without_permission(tmp_path: Path):
    """The bundle's parent cannot be searched by the caller (a user pointing at root's
    tree): refused as bad input, not an internal error.  Root's caller is nobody, in a
    forked child of this process (cli(user=...)): an interpreter started as nobody would
    read this checkout, which nobody cannot do where it lives in a 0700 directory (a
    clone in root's home, or in a mktemp -d folder)."""
    parent = tmp_path / "private"
    bundle = make_systemd_bundle(parent / "bundle")
    tmp_path.chmod(0o755)
    os.chmod(parent, 0o700)
    before = manifest(parent)
    nobody = (65534, 65534) if os.geteuid() == 0 else None
    result = cli("apply", str(bundle), "--cgroup", "v1", *HOOK_OPTS, user=nobody)
    assert_one_line(result, "oci-systemd", 2, f"error: {bundle}: ", "bundle cannot be examined", "Permission denied")
    assert manifest(parent) == before


@pytest.mark.parametrize("kind", ["absolute-host-file", "dangling-symlink", "fifo", "relative-dotdot-file"])
def test_rootfs_not_a_directory(bundle: Path, tmp_path: Path, kind: str):
    config = runc_config()
    host = tmp_path / "host-file"
    host.write_text("host content\n")
    if kind == "absolute-host-file":
        config["root"]["path"] = str(host)
    elif kind == "dangling-symlink":
        os.symlink(tmp_path / "gone", bundle / "rootfs-link")
        config["root"]["path"] = "rootfs-link"
    elif kind == "fifo":
        os.mkfifo(bundle / "rootfs-fifo")
        config["root"]["path"] = "rootfs-fifo"
    else:
        config["root"]["path"] = "../host-file"
    (bundle / "config.json").write_text(json.dumps(config))
    _refused(bundle, ("apply",), ["/root/path", "is not a directory"], watch=[host])


def test_bundle_is_a_fifo(tmp_path: Path):
    fifo = tmp_path / "bundle"
    os.mkfifo(fifo)
    result = cli("apply", str(fifo), "--cgroup", "v1", *HOOK_OPTS)
    assert_one_line(result, "oci-systemd", 2, f"error: {fifo}: ", "bundle is not a directory")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# == the hook's OCI state on stdin =====================================================


@pytest.fixture
def hook_bundle(tmp_path: Path) -> Path:
    """A bundle whose image has /run content: an accepted state would copy it."""
    b = tmp_path / "hookbundle"
    (b / "rootfs" / "run").mkdir(parents=True)
    (b / "rootfs" / "run" / "marker").write_bytes(b"image content\n")
    (b / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                                               "mounts": [{"destination": "/run", "type": "tmpfs"}]}))
    return b


def _good_state(bundle: Path, /, **changes) -> bytes:
    return json.dumps(state(os.getpid(), bundle, **changes)).encode()


STATE_BYTES = {
    "whitespace-only": (lambda b: b" \n\t ", "", "empty"),
    "truncated": (lambda b: _good_state(b)[:40], "", "malformed JSON"),
    "bom": (lambda b: b"\xef\xbb\xbf" + _good_state(b), "", "malformed JSON"),
    "latin1-id": (lambda b: _good_state(b).replace(b'"id": "', b'"id": "caf\xe9-'), "", "not UTF-8"),
    "nan-pid": (lambda b: _good_state(b).replace(f'"pid": {os.getpid()}'.encode(), b'"pid": NaN'), "", "malformed JSON"),
    "infinity-pid": (lambda b: _good_state(b).replace(f'"pid": {os.getpid()}'.encode(), b'"pid": Infinity'), "",
                     "malformed JSON"),
    "pid-1e999": (lambda b: _good_state(b).replace(f'"pid": {os.getpid()}'.encode(), b'"pid": 1e999'), "/pid",
                  "positive integer"),
    "deep-annotations-100000": (lambda b: _good_state(b)[:-1] + b', "annotations": ' + _deep(100_000, b'{"a":', b"}", b"1")
                                + b"}", "", "malformed JSON"),
    "duplicate-pid": (lambda b: _good_state(b)[:-1] + b', "pid": 1}', "/pid", "given twice"),
    "duplicate-bundle": (lambda b: _good_state(b)[:-1] + b', "bundle": "/"}', "/bundle", "given twice"),
    "duplicate-annotation": (lambda b: _good_state(b)[:-1] + b', "annotations": {"k": "1", "k": "2"}}',
                             "/annotations/k", "given twice"),
    "array": (lambda b: b"[" + _good_state(b) + b"]", "", "must be a JSON object"),
    "number": (lambda b: b"14103", "", "must be a JSON object"),
    "oversized-2mb": (lambda b: _good_state(b)[:-1] + b', "x": "' + b"a" * (2 << 20) + b'"}', "", "larger than"),
}

STATE_FIELDS = {
    "pid-float": (dict(pid=1.5), "/pid", "positive integer"),
    "pid-negative": (dict(pid=-1), "/pid", "positive integer"),
    "pid-null": (dict(pid=None), "/pid", "positive integer"),
    "pid-list": (dict(pid=[1]), "/pid", "positive integer"),
    "id-number": (dict(id=7), "/id", "non-empty string"),
    "id-nul": (dict(id="a\0b"), "/id", "NUL"),
    "status-null": (dict(status=None), "/status", "non-empty string"),
    "status-stopped-with-pid": (dict(status="stopped"), "/status", "before the container starts"),
    "status-running": (dict(status="running"), "/status", "before the container starts"),
    "bundle-null": (dict(bundle=None), "/bundle", "non-empty string"),
    "bundle-number": (dict(bundle=1), "/bundle", "non-empty string"),
    "bundle-missing": (dict(bundle=...), "/bundle", "missing"),
    "ociVersion-null": (dict(ociVersion=None), "/ociVersion", "non-empty string"),
    "annotations-string": (dict(annotations="k=v"), "/annotations", "object of strings"),
    "annotations-null-value": (dict(annotations={"k": None}), "/annotations", "object of strings"),
    "crun-root-number": (dict(status="created", root=5), "/root", "non-empty string"),
    "pid-beyond-pid-max": (dict(pid=(1 << 22) + 12345), "/pid", "is gone"),
}


def _hook_refused(bundle: Path, data: bytes, pointer: str, fragment: str, code: int = 2, watch=()) -> None:
    before = manifest(bundle)
    watched = {p: sha256_file(p) for p in watch}
    result = copyup(["--stage", "prestart", "/run"], data)
    where = f"oci-systemd-copyup: {STATE_FILE}: " + (f"{pointer}: " if pointer else "")
    assert_one_line(result, "oci-systemd-copyup", code, where, fragment)
    assert manifest(bundle) == before
    assert {p: sha256_file(p) for p in watch} == watched


@pytest.mark.parametrize("name", sorted(STATE_BYTES))
def test_state_bytes_refused(hook_bundle: Path, name: str):
    make, pointer, fragment = STATE_BYTES[name]
    _hook_refused(hook_bundle, make(hook_bundle), pointer, fragment)


@pytest.mark.parametrize("name", sorted(STATE_FIELDS))
def test_state_fields_refused(hook_bundle: Path, name: str):
    changes, pointer, fragment = STATE_FIELDS[name]
    _hook_refused(hook_bundle, _good_state(hook_bundle, **changes), pointer, fragment)


def test_state_pid_of_a_reaped_child(hook_bundle: Path):
    child = subprocess.Popen(["true"])
    child.wait()
    _hook_refused(hook_bundle, _good_state(hook_bundle, pid=child.pid), "/pid", f"pid {child.pid} is gone")


def _host_view(hook_bundle: Path) -> Path:
    return hook_bundle / "rootfs" / "run"


@pytest.mark.parametrize("who", ["host-init", "kthreadd", "private-mount-namespace"])
def test_state_pid_that_is_not_a_container(hook_bundle: Path, who: str):
    """A pid whose mount namespace holds no container tmpfs on <rootfs>/run: the host's
    own pid 1, a kernel thread, or a process alone in a private mount namespace. The
    helper refuses (exit 1) and writes nothing, neither into the image nor the host."""
    require_root()
    holder = None
    if who == "host-init":
        pid = 1
    elif who == "kthreadd":
        pid = 2
        if not os.path.isdir("/proc/2") or "kthreadd" not in Path("/proc/2/comm").read_text():
            skip_or_fail("pid 2 is not kthreadd here (a pid namespace?)")
    else:
        # "ready" comes from inside the new namespace (unshare execs sh, which execs sleep)
        holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", "echo ready; exec sleep 60"],
                                  stdout=subprocess.PIPE)
        assert holder.stdout.readline() == b"ready\n"
        pid = holder.pid
        assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    try:
        before = manifest(hook_bundle)
        result = copyup(["--stage", "prestart", "/run"], _good_state(hook_bundle, pid=pid))
        err = result.stderr.decode(errors="replace")
        assert result.returncode in (1, 2), err
        assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("oci-systemd-copyup: "), err
        assert any(reason in err for reason in ("not a tmpfs", "cannot open /proc/", "not the mount")), err
        assert manifest(hook_bundle) == before
    finally:
        if holder is not None:
            holder.kill()  # by the pid we started
            holder.wait()
            holder.stdout.close()


def test_state_bundle_whose_config_is_a_fifo(hook_bundle: Path):
    """The helper must not hang on a FIFO named config.json (runc would wait the hook's
    whole timeout, then fail the start with no reason given)."""
    (hook_bundle / "config.json").unlink()
    os.mkfifo(hook_bundle / "config.json")
    before = manifest(hook_bundle)
    result = copyup(["--stage", "prestart", "/run"], _good_state(hook_bundle), process=True, timeout=20)
    assert_one_line(result, "oci-systemd-copyup", 2, "config.json", "not a regular file")
    assert manifest(hook_bundle) == before
