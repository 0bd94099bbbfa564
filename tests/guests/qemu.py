"""Boot the test guest under qemu as one kind of cgroup host, run a script in it, and
bring its output back.

The kind is a kernel command line (KINDS): systemd 252, the guest's PID 1, mounts a pure
cgroup v2 tree by default, a hybrid one with ``systemd.unified_cgroup_hierarchy=0``, and
a legacy one (no unified hierarchy at all) when ``systemd.legacy_systemd_cgroup_controller=1``
is added.

The root disk is opened with ``snapshot=on``: what a run writes goes to a temporary file
that qemu drops at exit, so the cached image stays as built and runs cannot see each
other.  The images disk (image_disk.py) is read-only.  A 9p share carries the script in
and the results out (guest_image._RUNNER runs it and powers off).

KVM is used when it boots; here /dev/kvm exists but a KVM guest hangs early in boot
(PLATFORM.md), so ``accelerator()`` first boots the kernel alone with KVM and falls back
to software emulation (TCG, ``-cpu max``: the default TCG CPU lacks AVX, which compiled
wheels use) when that does not reach the kernel's own panic in time.  The answer is
remembered per kernel and qemu in the cache.  Every qemu started here is stopped by its
PID, also when the caller fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import guest_image

KINDS: dict[str, str] = {
    "v2": "systemd.unified_cgroup_hierarchy=1",
    "hybrid": "systemd.unified_cgroup_hierarchy=0",
    "legacy": "systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1",
}
QEMU = "qemu-system-x86_64"
# The CPU model under software emulation; it must have AVX (compiled wheels use it)
TCG_CPU = os.environ.get("OCI_SYSTEMD_GUEST_CPU", "max")
MEMORY_MB = 3072
# edd=off: the BIOS disk probe stalls under TCG; panic=-1 with -no-reboot: a kernel panic
# ends qemu instead of hanging.
BASE_CMDLINE = "root=/dev/vda rw console=ttyS0 edd=off panic=-1 systemd.show_status=0 loglevel=4"
# Bounds, not synchronisation: each qemu ends by itself (the guest powers off); these only
# keep a hung guest from hanging the suite.
KVM_PROBE_SECONDS = 60
RUN_SECONDS = 1800


class GuestError(RuntimeError):
    pass


def available() -> str | None:
    """None when a guest can be booted here, else why not."""
    if os.geteuid() != 0:
        return "the test guests need root"
    if not any(Path(d, QEMU).exists() for d in os.environ.get("PATH", "").split(os.pathsep)):
        return f"{QEMU} is not installed (Debian's qemu-system-x86)"
    return None


def _qemu_version() -> str:
    return subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def accelerator(disk: guest_image.GuestDisk) -> str:
    """'kvm' if a KVM guest gets through its kernel's boot here, else 'tcg'."""
    forced = os.environ.get("OCI_SYSTEMD_GUEST_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    memo = disk.kernel.with_suffix(".accel.json")
    key = {"kernel": disk.kernel.name, "qemu": _qemu_version(), "host": os.uname().release}
    try:
        saved = json.loads(memo.read_text())
        if saved.get("key") == key:
            return saved["accel"]
    except (OSError, ValueError):
        pass
    # No root disk: a kernel that runs ends in "VFS: Unable to mount root fs" and panics,
    # and panic=-1 with -no-reboot ends qemu.  A KVM that hangs never gets there.
    argv = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "512", "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", "null", "-monitor", "none", "-no-reboot",
            "-kernel", str(disk.kernel), "-append", "console=ttyS0 edd=off panic=-1 root=/dev/nonexistent"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=KVM_PROBE_SECONDS)
        accel = "kvm" if proc.returncode == 0 else "tcg"
    except subprocess.TimeoutExpired:
        accel = "tcg"
    finally:
        _stop(proc)
    memo.write_text(json.dumps({"key": key, "accel": accel}) + "\n")
    return accel


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()  # by its PID: the qemu we started, nothing found by name
        proc.wait()


@dataclass
class Run:
    kind: str
    accel: str
    returncode: int | None  # the script's exit status, None if it never wrote one
    output: str  # the script's stdout and stderr
    console: str  # the guest's serial console
    seconds: float


def boot(disk: guest_image.GuestDisk, kind: str, share: Path, *, images: Path | None = None,
         accel: str | None = None, cpus: int = 1, timeout: float = RUN_SECONDS) -> Run:
    """Boot the guest as a ``kind`` host with ``share`` as its 9p share (``share``/inside.sh
    is run; ``share``/out gets inside.log and rc) and ``images`` as /dev/vdb; wait for it
    to power off."""
    if kind not in KINDS:
        raise ValueError(f"unknown host kind {kind!r}; expected one of {sorted(KINDS)}")
    accel = accel or accelerator(disk)
    out = share / "out"
    out.mkdir(parents=True, exist_ok=True)
    console = out / "console.log"
    argv = [QEMU, "-accel", "kvm" if accel == "kvm" else "tcg,thread=multi",
            "-cpu", "host" if accel == "kvm" else TCG_CPU, "-smp", str(cpus), "-m", str(MEMORY_MB),
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{console}",
            "-kernel", str(disk.kernel), "-initrd", str(disk.initrd),
            "-append", f"{BASE_CMDLINE} {KINDS[kind]}",
            "-drive", f"file={disk.root},format=raw,if=virtio,snapshot=on",
            "-device", "virtio-rng-pci",
            "-virtfs", f"local,path={share},mount_tag={guest_image.SHARE_TAG},security_model=none,id=share"]
    if images is not None:
        argv += ["-drive", f"file={images},format=raw,if=virtio,readonly=on"]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        qemu_out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        qemu_out = f"(the guest did not power off within {timeout:.0f} s; qemu was stopped)"
    finally:
        _stop(proc)
    seconds = time.monotonic() - started
    rc_file, log_file = out / "rc", out / "inside.log"
    returncode = int(rc_file.read_text()) if rc_file.is_file() else None
    output = log_file.read_text(errors="replace") if log_file.is_file() else ""
    text = console.read_text(errors="replace") if console.is_file() else ""
    if proc.returncode not in (0, None) and returncode is None:
        text += f"\nqemu exited {proc.returncode}: {qemu_out}"
    elif qemu_out:
        text += f"\nqemu: {qemu_out}"
    return Run(kind, accel, returncode, output, text, seconds)
