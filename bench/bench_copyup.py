#!/usr/bin/env python3
"""Benchmarks of the copy-up helper. Run as root: python3 bench/bench_copyup.py

Prints one line per figure: medians of runs interleaved side by side in this one
process, and their ratio (absolute times are noisy on these machines; ratios are not).
  1. copy throughput into a tmpfs: helper engine vs `cp -a` (goal >= 0.8x)
  2. nothing-to-copy start-up: the hook invocation vs `python3 -I -S -c pass` (goal <= 1.3x)
  3. `runc create` + `runc delete`: helper hook vs native tmpcopyup vs no copy-up
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "transformer" / "copyup" / "hook.py"
PY = sys.executable
RUNC = shutil.which("runc") or "/usr/sbin/runc"
BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)


def timed(argv, **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, **kw)
    return time.perf_counter() - t0


def line(name: str, a_name: str, a: list[float], b_name: str, b: list[float], goal: str = "") -> None:
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{name}: {a_name} median {ma * 1000:.1f} ms, {b_name} median {mb * 1000:.1f} ms, "
          f"ratio {ma / mb:.2f}x (n={len(a)}){' ' + goal if goal else ''}", flush=True)


def make_tree(top: Path) -> int:
    """10,000 small files in 100 directories plus 3 large ones: about 100 MB."""
    total = 0
    small = os.urandom(2048)
    for d in range(100):
        sub = top / f"dir{d:03}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f:03}").write_bytes(small[: 512 + (f * 13) % 1536])
            total += 512 + (f * 13) % 1536
    for i in range(3):
        (top / f"large{i}").write_bytes(os.urandom(32 << 20))
        total += 32 << 20
    return total


COPY_SNIPPET = (
    "import os, sys; sys.path.insert(0, sys.argv[1]);"
    "from transformer.copyup.engine import copy_tree;"
    "s = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY);"
    "d = os.open(sys.argv[3], os.O_RDONLY | os.O_DIRECTORY);"
    "copy_tree(s, d)"
)


def bench_throughput(work: Path, runs: int = 5) -> None:
    src = work / "src"
    total = make_tree(src)
    mnt = work / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g,nodev", "tmpfs", str(mnt)], check=True)
    try:
        helper, cp = [], []
        for i in range(runs + 1):
            for kind in ("helper", "cp") if i % 2 else ("cp", "helper"):
                dst = mnt / f"{kind}{i}"
                dst.mkdir()
                if kind == "helper":  # a whole process, start-up included, like cp
                    t = timed([PY, "-I", "-S", "-c", COPY_SNIPPET, str(REPO), str(src), str(dst)])
                else:
                    t = timed(["cp", "-a", f"{src}/.", str(dst)])
                if i:  # run 0 warms the page cache for both
                    (helper if kind == "helper" else cp).append(t)
                shutil.rmtree(dst)
        mh, mc = statistics.median(helper), statistics.median(cp)
        print(f"copy {total / 1e6:.0f} MB (10,000 small + 3 large files) into tmpfs: helper median "
              f"{mh * 1000:.0f} ms ({total / mh / 1e6:.0f} MB/s), cp -a median {mc * 1000:.0f} ms "
              f"({total / mc / 1e6:.0f} MB/s), throughput ratio helper/cp {mc / mh:.2f}x (goal >= 0.8x, n={runs})",
              flush=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def bench_startup(work: Path, runs: int = 41) -> None:
    bundle = work / "empty-bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/run", "type": "tmpfs"}, {"destination": "/tmp", "type": "tmpfs"}]}))
    state = json.dumps({"ociVersion": "1.0.2-dev", "id": "bench", "status": "creating",
                        "pid": os.getpid(), "bundle": str(bundle)}).encode()
    # What pip writes for a console script (it imports re, and runs site).
    wrapper = work / "oci-systemd-copyup"
    wrapper.write_text(f"#!{PY}\nimport re\nimport sys\nfrom transformer.copyup.main import main\n"
                       "if __name__ == '__main__':\n"
                       "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                       "    sys.exit(main())\n")
    wrapper.chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    forms = {
        "baseline": ([PY, "-I", "-S", "-c", "pass"], None),
        "direct": ([PY, "-I", "-S", str(MAIN), "--stage", "prestart", "/run", "/tmp"], None),
        "console": ([str(wrapper), "--stage", "prestart", "/run", "/tmp"], env),
    }
    shim = shutil.which("python3")
    if shim and os.path.realpath(shim) != os.path.realpath(PY):
        forms["path-python3"] = ([shim, "-I", "-S", "-c", "pass"], None)
    times = {k: [] for k in forms}
    for i in range(runs):
        for name, (argv, e) in forms.items():
            t0 = time.perf_counter()
            proc = subprocess.run(argv, input=state, env=e, capture_output=True)
            t = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed: {proc.stderr.decode()}")
            if i:
                times[name].append(t)
    line("nothing to copy, hook form `python3 -I -S hook.py`", "helper", times["direct"],
         f"`{PY} -I -S -c pass`", times["baseline"], "(goal <= 1.3x)")
    line("nothing to copy, pip console-script wrapper", "helper", times["console"],
         f"`{PY} -I -S -c pass`", times["baseline"], "(goal <= 1.3x)")
    if "path-python3" in times:
        line("nothing to copy, hook form vs `python3` found on PATH", "helper", times["direct"],
             f"`{shim} -I -S -c pass`", times["path-python3"])


def _bundle(dir: Path, rootfs: Path, mode: str) -> Path:
    b = dir / f"bundle-{mode}"
    b.mkdir()
    b.chmod(0o755)
    subprocess.run([RUNC, "spec", "--bundle", str(b)], check=True)
    c = json.loads((b / "config.json").read_text())
    c["root"] = {"path": str(rootfs), "readonly": False}
    c["process"]["terminal"] = False
    c["process"]["args"] = ["sleep", "600"]
    opts = ["nosuid", "nodev", "mode=755"] + (["tmpcopyup"] if mode == "tmpcopyup" else [])
    for dest in ("/run", "/run/lock", "/tmp"):
        c["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts})
    if mode == "helper":
        c["hooks"] = {"prestart": [{"path": PY, "args": ["python3", "-I", "-S", str(MAIN), "--stage", "prestart",
                                                         "/run", "/run/lock", "/tmp"], "timeout": 30}]}
    (b / "config.json").write_text(json.dumps(c))
    return b


def _systemd_bundles(work: Path) -> dict[str, Path] | None:
    """The same debootstrapped bookworm systemd bundle, transformed by oci-systemd in
    three forms: hook copy-up, native tmpcopyup, and the native form without
    tmpcopyup (no copy-up at all). None when no cached rootfs tarball exists."""
    sys.path.insert(0, str(REPO))
    try:
        from tests.harness import rootfs_cache
    except ImportError:
        return None
    tarball = rootfs_cache.find_tarball(rootfs_cache.RootfsSpec(release="bookworm"))
    if tarball is None:
        return None
    rootfs = rootfs_cache.unpack(tarball, work / "systemd-rootfs")
    bundles = {}
    for mode, copy_up in (("helper", "hook"), ("tmpcopyup", "native"), ("none", "native")):
        b = work / f"systemd-{mode}"
        b.mkdir(mode=0o755)
        subprocess.run([RUNC, "spec", "--bundle", str(b)], check=True)
        c = json.loads((b / "config.json").read_text())
        c["root"] = {"path": str(rootfs), "readonly": False}
        c["process"].update(terminal=False, args=["/sbin/init"])
        (b / "config.json").write_text(json.dumps(c))
        subprocess.run([PY, "-m", "transformer", "apply", str(b), "--cgroup", "v1", "--copy-up", copy_up],
                       check=True, cwd=REPO, stderr=subprocess.DEVNULL)
        if mode == "none":
            c = json.loads((b / "config.json").read_text())
            for m in c["mounts"]:
                m["options"] = [o for o in m.get("options", []) if o != "tmpcopyup"]
            (b / "config.json").write_text(json.dumps(c))
        bundles[mode] = b
    return bundles


def _busybox_bundles(work: Path) -> dict[str, Path]:
    rootfs = work / "rootfs"
    for d in ("bin", "proc", "dev", "sys", "etc", "tmp", "run/lock", "run/systemd"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    os.symlink("busybox", rootfs / "bin" / "sleep")
    # A systemd-like /run: no FIFO, since runc's tmpcopyup refuses to start with one.
    for i in range(200):
        (rootfs / "run" / "systemd" / f"unit{i}").write_bytes(b"x" * 200)
    (rootfs / "run" / "lock" / "subsys").mkdir()
    (rootfs / "tmp" / "keep").write_bytes(b"k")
    rootfs.chmod(0o755)
    return {m: _bundle(work, rootfs, m) for m in ("helper", "tmpcopyup", "none")}


def bench_runc(work: Path, runs: int = 11) -> None:
    if not os.path.exists(RUNC):
        print("runc create+delete: skipped (needs runc)")
        return
    bundles = _systemd_bundles(work)
    what = "systemd bookworm bundle"
    if bundles is None:
        if not BUSYBOX:
            print("runc create+delete: skipped (needs a cached rootfs tarball or busybox-static)")
            return
        bundles, what = _busybox_bundles(work), "busybox bundle (no cached systemd rootfs)"
    times = {m: [] for m in bundles}
    for i in range(runs):
        for mode, b in bundles.items():
            cid = f"copyup-bench-{uuid.uuid4().hex[:10]}"
            t0 = time.perf_counter()
            try:
                subprocess.run([RUNC, "create", "--bundle", str(b), cid], check=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            finally:
                subprocess.run([RUNC, "delete", "-f", cid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if i:
                times[mode].append(time.perf_counter() - t0)
    label = f"runc create+delete ({what})"
    line(label, "helper hook", times["helper"], "no copy-up", times["none"])
    line(label, "native tmpcopyup", times["tmpcopyup"], "no copy-up", times["none"])
    line(label, "helper hook", times["helper"], "native tmpcopyup", times["tmpcopyup"])


def main() -> int:
    if os.geteuid() != 0:
        print("bench_copyup: needs root (mounts a tmpfs, runs runc)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-copyup-") as d:
        work = Path(d)
        work.chmod(0o755)
        bench_startup(work)
        bench_runc(work)
        bench_throughput(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
