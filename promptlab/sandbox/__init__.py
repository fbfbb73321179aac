"""Run untrusted Python (a model's code answer) against a case's tests, out of process.

``run_python(code, tests)`` runs the code and the tests in two fresh
interpreters (``python -I -S``, the program is `promptlab.sandbox.harness`)
and returns a `SandboxResult`.  The evaluating process never executes either.

Where the verdict comes from, and why the code cannot forge it
---------------------------------------------------------------
Code that runs in a process can do anything that process can: patch builtins,
``sys.modules`` and the harness, write to any file descriptor it holds, read
its memory.  So the code must not share a process with whatever decides the
verdict, and the tests must not share one with the code.  Two processes per
run, joined only by a pair of pipes:

* the *code* process runs the model's code, then answers requests about the
  objects it defined (call, attribute, comparison, iteration...).  Its only
  way out is that pipe, and what comes through it is decoded as data (tagged
  JSON; objects that are not plain data stay behind and travel as handles),
  never executed or unpickled.  Its stdout and exit status are reported, never
  believed.
* the *tests* process runs the tests with the real builtins (the code's
  top-level names reach it as data or proxies, never shadowing a builtin or
  replacing a module), counts the tests itself and writes the verdict to a
  file that only it holds: unlinked, opened by us and passed to it alone.

Whatever the code does to its own interpreter (``__builtins__.exec = ...``,
``sys.modules`` surgery, writing fake verdicts to fds 3..N, printing them,
``os._exit(0)``) it can only change the *answers* its functions give - which
is what the tests judge.  It cannot reach the tests process: both are
chrooted (no ``/proc``), seccomp refuses ptrace and signals to other processes,
the tests process marks itself non-dumpable and, as root, the two run under
different fresh uids.  The parent then checks the
verdict it reads: exactly one final event, a known status, integer counts with
0 <= passed <= total and total equal to the number of tests the parent counts
in the tests itself, ``passed`` only if all passed; anything else is
``crashed``.  A comparison the code's own object makes (``__eq__`` of a class
it defined) is the code's answer, as in any Python test run.

What is protected against, and by what
--------------------------------------
Real (kernel-enforced) boundaries, each listed in ``SandboxResult.protections``
only when it applied:

* **Runaway time** - a wall-clock timeout after which every process is
  SIGKILLed, plus ``RLIMIT_CPU`` (SIGXCPU, then SIGKILL one second later).
* **Memory exhaustion** - ``RLIMIT_AS`` (allocations beyond it raise
  ``MemoryError``).
* **Fork bombs** - as root each process drops to a fresh, otherwise unused
  uid/gid, so ``RLIMIT_NPROC`` applies (it is ignored for root) and counts
  only that process's descendants; afterwards every process of those uids is
  SIGKILLed.  Not root: ``RLIMIT_NPROC`` would count all of the user's
  processes, so it is not set, and we rely on the process-group kill (a
  process that left its group lives on, confined, until its CPU limit).
* **Huge outputs / files** - ``RLIMIT_FSIZE``; stdout/stderr are read back
  truncated to ``max_output_bytes``.  ``RLIMIT_NOFILE`` and ``RLIMIT_CORE=0``.
* **Files, including the promptlab database and the tests** (``chroot``) -
  each process is chrooted into a directory holding nothing but the working
  directory, so no host file is in view at all, however it is permissioned.
  As root the chroot comes before the uid drop (``uid``), and a non-root uid
  cannot leave a chroot.  Not root, a user namespace (with its own mount and
  network namespaces) allows the chroot, after which every capability is
  dropped (``nocaps``) - and without them a chroot cannot be left either.
* **Network** - a new network namespace (``netns``) with only a loopback that
  is down: no IP address is reachable, nor any abstract Unix socket (those
  live in the namespace).  Unix sockets on the filesystem are out of view in
  the chroot, and a ``seccomp`` filter (x86_64) refuses ``socket()`` of every
  family, ``io_uring``, ``ptrace``/``process_vm_*``, new namespaces, mounts and
  chroot outright.
* **Other processes** - ``seccomp`` also refuses ``kill``/``tgkill``/
  ``pidfd_send_signal``... and ``pidfd_getfd``; outside x86_64 only the uids
  (root) keep the code from signalling the user's other processes.
* **Secrets in the environment** - the child gets a minimal environment
  (PATH, LANG; the harness adds HOME and TMPDIR) and ``-I`` ignores
  ``PYTHON*`` variables.

Python-level guards (``python_guards=True``): an import allow-list (a refused
import raises ``ImportError`` -> status ``forbidden``), ``socket`` functions
that raise, ``open``/``os`` file functions that refuse paths outside the
working directory, and ``os.fork``/``exec*``/``system``... that refuse to run.
They make results legible (``forbidden`` instead of an odd crash); they are
not a boundary - introspection or ``ctypes`` undo them.

Not protected against: kernel exploits, CPU-time side channels.  **Not root
and without unprivileged user namespaces** (some distributions disable them;
``protections`` then lacks ``chroot``), there is no boundary around files: the
code runs as your own user, so code that defeats the Python guards can read
your files (the database included, whatever its mode) and reach the
evaluating process through ``/proc`` - including the verdict file it holds
open.  Evaluations that execute untrusted code need ``chroot`` among the
protections; the tests exercise both ways of getting it.

One consequence of the uid drop and chroot: the standard library is no longer
on disk for the code, so only modules imported *before* them are available.
The harness therefore pre-imports the allow-list (or, with
``allowed_imports=None``, a broad set of stdlib modules).

Tests are plain Python, usually ``assert`` statements.  Each top-level
statement that contains an ``assert`` (outside a ``def``/``class``) is one
test; everything else is setup.  If there are none (HumanEval style
``def check(candidate): ...`` then ``check(f)``), each top-level statement that
is not a definition, import or assignment is one test.  A failing test does
not stop the others, so partial credit is reported.  The code runs as a module
named ``__sandbox__`` (so ``if __name__ == "__main__":`` demo blocks do not
run).  What the tests pass to the code is copied; lists, dicts, sets and
bytearrays it changes are copied back.  Only plain data and the code's own
objects can be passed (not, say, a lambda defined in the tests).
"""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from promptlab.sandbox.harness import test_plan

STATUSES = ("passed", "failed", "timeout", "memory", "forbidden", "crashed")

DEFAULT_ALLOWED: frozenset[str] = frozenset({
    "math", "cmath", "re", "itertools", "functools", "collections", "heapq", "bisect",
    "string", "json", "typing", "dataclasses", "statistics", "fractions", "decimal",
    "datetime", "operator", "copy", "random", "enum", "abc", "numbers", "array",
    "textwrap", "unicodedata", "__future__",
})

# With allowed_imports=None anything may be imported, but only what can be loaded
# after the uid drop works; pre-import a broad stdlib set so the common things do.
_BROAD_PREIMPORT = DEFAULT_ALLOWED | {
    "os", "sys", "io", "time", "struct", "base64", "hashlib", "hmac", "binascii", "zlib",
    "pathlib", "glob", "fnmatch", "tempfile", "shutil", "csv", "uuid", "secrets", "pprint",
    "contextlib", "weakref", "types", "inspect", "traceback", "warnings", "calendar",
    "locale", "difflib", "graphlib", "queue", "threading", "socket", "subprocess", "signal",
    "errno", "stat", "platform", "codecs", "html", "urllib", "urllib.parse",
}
# Modules the stdlib imports lazily at call time (pre-imported when their user is).
_LAZY_DEPS = {"datetime": ("_strptime",), "time": ("_strptime",)}

_HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness.py")

_UID_BASE = 1_700_000_000          # per-run uids are drawn from here (far above real users)
_UID_SPAN = 200_000_000
_uids_in_use: set[int] = set()
_uid_lock = threading.Lock()


@dataclass(frozen=True)
class SandboxResult:
    status: str                 # one of STATUSES
    passed: bool
    tests_passed: int
    tests_total: int
    message: str                # one line: why
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    protections: tuple[str, ...] = ()   # which OS-level protections applied


# --------------------------------------------------------------------------- running


def _procs_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                state = ""
                for line in f:
                    if line.startswith("State:"):
                        state = line.split()[1]
                    elif line.startswith("Uid:"):
                        if int(line.split()[1]) == uid and state not in ("Z", "X"):
                            pids.append(int(entry))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _is_root() -> bool:
    """Whether each run gets fresh uids (root), or a user namespace (anyone else)."""
    return os.geteuid() == 0


def _pick_uid() -> int:
    with _uid_lock:
        while True:
            uid = _UID_BASE + random.randrange(_UID_SPAN)
            if uid not in _uids_in_use and not _procs_of_uid(uid):
                _uids_in_use.add(uid)
                return uid


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid`, by running `kill -KILL -1` as that uid."""
    kill = shutil.which("kill", path="/usr/bin:/bin") or "/bin/kill"
    for attempt in range(100):
        if not _procs_of_uid(uid):
            return
        try:
            subprocess.run([kill, "-KILL", "-1"], user=uid, group=uid, extra_groups=[],
                           env={"PATH": "/usr/bin:/bin"}, cwd="/", stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.01 * min(attempt + 1, 10))


def _private(path: str, text: str) -> None:
    """Write `text` to a new file at `path` readable by its owner (root) only."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
        f.write(text)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_capped(limit: int, *files) -> str:
    data = b""
    for f in files:
        f.seek(0)
        data += f.read(limit + 1 - len(data))
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[... truncated]" if len(data) > limit else "")


@dataclass(frozen=True)
class _Verdict:
    """The tests process's events, each checked; `done` is None when there is no sound final one."""
    protections: tuple[str, ...]
    progress: int                   # tests passed according to the last progress event
    done: dict | None
    problem: str | None = None      # why the events were not believed


def _read_verdict(f, total: int) -> _Verdict:
    """Parse the verdict file; every count must be an int with 0 <= passed <= total == `total`."""
    def counts_ok(ev: dict) -> bool:
        p, t = ev.get("passed"), ev.get("total")
        return type(p) is int and type(t) is int and t == total and 0 <= p <= t

    f.seek(0)
    protections: tuple[str, ...] = ()
    progress, dones = 0, []
    for line in f.read(1 << 20).decode("utf-8", errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            return _Verdict(protections, progress, None, "the verdict is not JSON")
        kind = ev.get("event") if isinstance(ev, dict) else None
        if kind == "start" and isinstance(ev.get("protections"), list):
            protections = tuple(str(p) for p in ev["protections"])
        elif kind == "progress" and counts_ok(ev):
            progress = ev["passed"]
        elif kind == "done" and counts_ok(ev) and ev.get("status") in STATUSES \
                and isinstance(ev.get("message"), str) and type(ev.get("lost")) is bool \
                and (ev["status"] != "passed" or ev["passed"] == total):
            dones.append(ev)
        else:
            return _Verdict(protections, progress, None, f"an impossible verdict event: {line[:200]}")
    if len(dones) > 1:
        return _Verdict(protections, progress, None, "more than one final verdict")
    return _Verdict(protections, progress, dones[0] if dones else None)


def _spawn(role: str, root: str, fds: tuple[int, ...], out, err, env: dict, cwd: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-X", "utf8", _HARNESS, role, root, *map(str, fds)],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        start_new_session=True, pass_fds=fds)


def run_python(
    code: str,
    tests: str,
    *,
    timeout_s: float = 5.0,
    cpu_s: int = 5,
    memory_mb: int = 512,
    allowed_imports: frozenset[str] | None = DEFAULT_ALLOWED,
    max_output_bytes: int = 64_000,
    max_processes: int = 16,
    python_guards: bool = True,
) -> SandboxResult:
    """Run `code` then `tests` in two sandboxed child interpreters; never raises for bad code.

    `allowed_imports=None` allows any import.  `python_guards=False` skips the
    Python-level guards (imports, sockets, files, processes) so the OS-level
    boundaries can be tested on their own.  Raises ValueError if `tests` itself
    is not valid Python (a problem with the case, not the candidate).
    """
    try:
        total = sum(is_test for _, is_test in test_plan(ast.parse(tests)))
    except SyntaxError as e:
        raise ValueError(f"tests are not valid Python: {e}") from None
    started = time.monotonic()
    root = tempfile.mkdtemp(prefix="promptlab-sandbox-")
    uids: dict[str, int] = {}
    try:
        os.chmod(root, 0o711)                # the sandbox uids may pass through, not list or read
        jail = os.path.join(root, "jail")
        os.mkdir(jail, 0o711)
        work = os.path.join(jail, "work")
        os.mkdir(work, 0o700)
        if _is_root():
            uids = {"code": _pick_uid(), "tests": _pick_uid()}
            os.chown(work, uids["code"], uids["tests"])   # the code owns it, the tests share its group
            os.chmod(work, 0o770)
        allowed = None if allowed_imports is None else set(allowed_imports)
        preimport = set(_BROAD_PREIMPORT if allowed is None else allowed)
        for name in list(preimport):
            deps = _LAZY_DEPS.get(name, ())
            preimport.update(deps)
            if allowed is not None:
                allowed.update(deps)          # C code imports these with no importer to check
        config = {
            "jail": jail, "work": work, "uids": uids or None, "guards": python_guards,
            "allowed": None if allowed is None else sorted(allowed),
            "preimport": sorted(preimport), "cpu_s": int(max(1, cpu_s)), "memory_mb": int(memory_mb),
            "fsize": max(4 * max_output_bytes, 1 << 20), "nproc": int(max_processes),
        }
        for name, text in (("config.json", json.dumps(config)), ("solution.py", code), ("tests.py", tests)):
            _private(os.path.join(root, name), text)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}    # the harness adds HOME and TMPDIR
        # Unlinked files: no path leads to them; the verdict's fd goes to the tests process alone.
        with tempfile.TemporaryFile() as verdict_file, tempfile.TemporaryFile() as code_out, \
                tempfile.TemporaryFile() as code_err, tempfile.TemporaryFile() as tests_out, \
                tempfile.TemporaryFile() as tests_err:
            to_code, to_tests = os.pipe(), os.pipe()
            procs: list[subprocess.Popen] = []
            try:
                procs.append(_spawn("code", root, (to_code[0], to_tests[1]), code_out, code_err, env, work))
                procs.append(_spawn("tests", root, (to_tests[0], to_code[1], verdict_file.fileno()),
                                    tests_out, tests_err, env, work))
            except BaseException:
                _stop(procs, uids)
                raise
            finally:
                for fd in (*to_code, *to_tests):
                    os.close(fd)
            code_proc, tests_proc = procs
            timed_out = False
            try:
                tests_proc.wait(timeout=max(0.0, started + timeout_s - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
            else:
                try:      # the code process leaves once the tests close the pipe: a moment to flush
                    code_proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
            finally:
                _stop(procs, uids)
            verdict = _read_verdict(verdict_file, total)
            done = verdict.done
            if verdict.problem:
                status, message = "crashed", verdict.problem
            elif timed_out:
                status, message = "timeout", f"wall-clock limit of {timeout_s:g}s exceeded"
            elif done is None:       # the tests process died: its exit says why
                status, message = _classify_exit(tests_proc.returncode, _read_capped(4000, tests_err),
                                                 cpu_s, memory_mb)
            elif done["lost"] and code_proc.returncode:
                # The code's process died under the tests: its exit says why (CPU, memory, a signal).
                status, message = _classify_exit(code_proc.returncode, _read_capped(4000, code_err),
                                                 cpu_s, memory_mb)
            else:
                status, message = done["status"], done["message"]
            out = _read_capped(max_output_bytes, code_out, tests_out)
            err = _read_capped(max_output_bytes, code_err, tests_err)
        passed_n = done["passed"] if done else verdict.progress
        return SandboxResult(
            status=status, passed=status == "passed", tests_passed=passed_n, tests_total=total,
            message=" ".join(message.split()), stdout=out, stderr=err,
            duration_s=time.monotonic() - started, protections=verdict.protections)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with _uid_lock:
            _uids_in_use.difference_update(uids.values())


def _stop(procs: list[subprocess.Popen], uids: dict[str, int]) -> None:
    """Kill what is left of a run: every process of its uids (root), else its process groups."""
    for proc in procs:
        _killpg(proc.pid)
    for uid in uids.values():
        _kill_uid(uid)
    for proc in procs:
        proc.wait()


def _classify_exit(rc: int, stderr: str, cpu_s: int, memory_mb: int) -> tuple[str, str]:
    if rc < 0:
        sig = -rc
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            # SIGKILL comes from the hard CPU limit (or the OOM killer; we cannot tell
            # them apart cheaply, and the CPU limit is the one we set).
            return "timeout", f"CPU time limit of {cpu_s}s exceeded ({signal.Signals(sig).name})"
        if sig == signal.SIGXFSZ:
            return "crashed", "file size limit exceeded (too much output?)"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "crashed", f"killed by signal {name}"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory", f"out of memory (limit {memory_mb} MB)"
    last = next((ln for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    return "crashed", f"exited with status {rc} before finishing" + (f": {last[:200]}" if last else "")
