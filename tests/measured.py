"""The CLI in a real subprocess, with its peak memory as the kernel measured it (ru_maxrss of
that child alone, from wait4) and an address-space cap so a bomb cannot take the test machine
down with it."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass

from tests.test_trust import _env

CAP_BYTES = 2 * 1024 ** 3  # RLIMIT_AS of the child: far above honest use, far below the machine


@dataclass
class Measured:
    code: int
    stdout: str
    stderr: str
    peak_mb: float


def run_measured(ws, *args: str) -> Measured:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))

    proc = _MeasuredPopen([sys.executable, "-m", "promptlab", *args], cwd=ws.root, env=_env(ws),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=cap)
    out, err = proc.communicate()
    return Measured(proc.returncode, out.decode(), err.decode(), proc.peak_mb)


class _MeasuredPopen(subprocess.Popen):
    """A Popen that reaps its child with wait4, keeping that child's own peak RSS (RUSAGE_CHILDREN
    would give the largest of every child the suite ever waited for)."""

    peak_mb: float = 0.0

    def _try_wait(self, wait_flags):  # the hook Popen.wait uses on POSIX
        try:
            pid, status, usage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return self.pid, 0
        if pid == self.pid:
            self.peak_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
        return pid, status
