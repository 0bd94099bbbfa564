"""A tiny container monitor (what conmon or a containerd shim does): records the exit
status of a detached container's PID 1, which ``runc run -d`` alone loses.

    python3 runc_monitor.py STATUS_FILE PID_FILE -- runc run -d --pid-file PID_FILE ... ID

It makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), runs the runc command
line, prints ONE JSON line on stdout once runc has returned ({"rc": ..., "output": ...}),
closes stdout, then waits for the container's PID 1, which the kernel re-parents to this
process when runc exits, and writes {"pid": ..., "exit": ...} to STATUS_FILE
(``exit`` as ``os.waitstatus_to_exitcode``: 0 = clean, -9 = killed by SIGKILL).

runc gets /dev/null and a file beside STATUS_FILE (stdio.log) as stdio, never our stdout pipe: a detached container
without a terminal inherits runc's stdio, and would hold the pipe open.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36
STDIO = "stdio.log"  # runc's output, then what the container writes to its stdout/stderr


def main(argv: list[str]) -> int:
    status_file, pid_file, sep, *cmd = argv
    assert sep == "--" and cmd, "usage: runc_monitor.py STATUS PID -- CMD..."
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        print(json.dumps({"rc": -1, "output": f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}"}), flush=True)
        return 1
    # A detached container without a terminal inherits runc's stdio, and systemd as PID 1
    # logs to it before its journal is up: kept beside the status for diagnostics.
    with open(os.path.join(os.path.dirname(status_file), STDIO), "w+") as out:
        rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        out.seek(0)
        output = out.read()
    print(json.dumps({"rc": rc, "output": output}), flush=True)
    sys.stdout.close()
    os.close(1)
    if rc != 0:
        return rc
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as e:
        _write(status_file, {"error": f"no pid file: {e}"})
        return 1
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        _write(status_file, {"pid": pid, "error": "pid 1 of the container was not our child"})
        return 1
    _write(status_file, {"pid": pid, "exit": os.waitstatus_to_exitcode(status)})
    return 0


def _write(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
