"""Run untrusted Python (a model's code answer) against a case's tests, out of process.

``run_python(code, tests)`` writes the candidate and its tests to a throwaway
directory and runs them in a fresh interpreter (``python -I -S``) under a small
harness.  The evaluating process never executes candidate code.

What is protected against, and by what
--------------------------------------
Real (kernel-enforced) boundaries:

* **Runaway time** - a wall-clock timeout after which the whole process group
  is SIGKILLed, plus ``RLIMIT_CPU`` (SIGXCPU, then SIGKILL one second later).
* **Memory exhaustion** - ``RLIMIT_AS`` (allocations beyond it raise
  ``MemoryError`` in the child).
* **Fork bombs** - when we are root the child drops to a fresh, otherwise
  unused uid/gid (one per run), so ``RLIMIT_NPROC`` really applies (it is
  ignored for root) and counts only this run's processes; afterwards every
  process of that uid is SIGKILLed (``kill -KILL -1`` run *as* that uid, so it
  can reach nothing else).  Not root: ``RLIMIT_NPROC`` counts all of the
  user's processes, so it is not set, and we rely on the process-group kill.
* **Huge outputs / files** - ``RLIMIT_FSIZE`` (Python ignores SIGXFSZ, so the
  write fails with ``OSError: File too large``); stdout/stderr are read back
  truncated to ``max_output_bytes``.  ``RLIMIT_NOFILE`` and ``RLIMIT_CORE=0``.
* **Network** - a new network namespace (``unshare(CLONE_NEWNET)``; as root,
  or via an unprivileged user namespace when the kernel allows it) holding
  only a loopback interface that is down: nothing is reachable, not even the
  host's 127.0.0.1.
* **Secrets in the environment** - the child gets a minimal environment
  (PATH, HOME, TMPDIR, LANG) and ``-I`` ignores ``PYTHON*`` variables.
* **Files** - the uid drop means the candidate can only write where "anyone"
  can (its working directory, /tmp); the directory is removed afterwards.

Python-level guards installed by the harness before the candidate runs
(``python_guards=True``):

* an import allow-list (``builtins.__import__`` wrapper; relative imports
  refused) - a refused import raises ``ImportError`` -> status ``forbidden``;
* ``socket``/``_socket`` constructors and helpers raise;
* ``open``/``io.FileIO``/``os.open`` and the mutating ``os`` functions refuse
  paths outside the working directory; ``os.fork``/``system``/``exec*``/
  ``spawn*``/``popen`` refuse to run.

These guards stop *accidental* damage and make results legible (a plain
``forbidden`` status instead of a confusing crash).  They are not a security
boundary: a determined attacker can undo them from Python (e.g. via object
introspection).  The boundaries that hold against that are the separate
process, the rlimits, the unprivileged uid and the network namespace - and
only those that applied (see ``SandboxResult.protections``).  Not protected
against: reading world-readable files, writing to world-writable places such
as /tmp once the Python guard is bypassed, kernel exploits, CPU-time side
channels.

One consequence of the uid drop: when the interpreter's standard library is
not readable by an unprivileged user (e.g. a pyenv Python under /root), only
modules imported *before* the drop are available.  The harness therefore
pre-imports the allow-list (or, with ``allowed_imports=None``, a broad set of
stdlib modules).

Tests are plain Python, usually ``assert`` statements.  Each top-level
statement that contains an ``assert`` (outside a ``def``/``class``) is one
test; everything else is setup.  If there are none (HumanEval style
``def check(candidate): ...`` then ``check(f)``), each top-level statement that
is not a definition or import is one test.  A failing test does not stop the
others, so partial credit is reported.  The candidate runs as a module named
``__sandbox__`` (so ``if __name__ == "__main__":`` demo blocks do not run).
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

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


# --------------------------------------------------------------------------- code extraction

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+.#-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$",
                    re.MULTILINE | re.DOTALL)
_PY_TAGS = {"python", "py", "python3", "py3"}


def extract_code(text: str) -> str:
    """The code in a model reply.

    The first fenced block tagged python/py/python3 wins; else the first untagged
    fenced block; else the first fenced block of any language; else the whole
    text (stripped).  An unterminated opening fence (a truncated reply) yields
    everything after it.  No attempt is made to strip prose from unfenced text:
    if it is not valid Python the run reports a SyntaxError, which is the honest
    result.
    """
    blocks = [(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(text)]
    for want in (lambda t: t in _PY_TAGS, lambda t: t == "", lambda t: True):
        for tag, body in blocks:
            if want(tag):
                return body.strip("\n")
    m = re.search(r"^[ \t]*```[ \t]*(?:python3?|py3?)?[ \t]*\n", text, re.MULTILINE | re.IGNORECASE)
    if m:
        return text[m.end():].strip("\n")
    return text.strip()


# --------------------------------------------------------------------------- the harness

_HARNESS = r'''
import sys, os, json, ast, builtins, io, resource, traceback
MAIN_PID = os.getpid()


def main():
    root = sys.argv[1]
    with open(os.path.join(root, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(root, "solution.py"), encoding="utf-8") as f:
        code = f.read()
    with open(os.path.join(root, "tests.py"), encoding="utf-8") as f:
        tests = f.read()
    res = open(os.open(os.path.join(root, "result.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
               "w", encoding="utf-8")
    work = os.path.realpath(cfg["work"])

    def emit(**kw):
        if os.getpid() != MAIN_PID:      # a forked child of the candidate: say nothing
            os._exit(0)
        res.write(json.dumps(kw) + "\n")
        res.flush()

    protections = []
    # -- network namespace (before dropping privileges)
    if cfg["netns"]:
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            flags = 0x40000000                          # CLONE_NEWNET
            if os.geteuid() != 0:
                flags |= 0x10000000                     # CLONE_NEWUSER
            if libc.unshare(flags) == 0:
                protections.append("netns")
        except Exception:
            pass
    # -- modules needed after the uid drop (the stdlib may be unreadable then)
    import socket, _socket
    for name in cfg["preimport"]:
        try:
            __import__(name)
        except BaseException:
            pass
    # -- rlimits (hard = soft, so they cannot be raised again)
    mem = cfg["memory_mb"] * 1024 * 1024
    limits = [("RLIMIT_CPU", cfg["cpu_s"], cfg["cpu_s"] + 1), ("RLIMIT_AS", mem, mem),
              ("RLIMIT_DATA", mem, mem), ("RLIMIT_FSIZE", cfg["fsize"], cfg["fsize"]),
              ("RLIMIT_NOFILE", 64, 64), ("RLIMIT_CORE", 0, 0)]
    if cfg["uid"] is not None:
        limits.append(("RLIMIT_NPROC", cfg["nproc"], cfg["nproc"]))
    for name, soft, hard in limits:
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
            protections.append(name)
        except (ValueError, OSError, AttributeError):
            pass
    # -- drop privileges to the per-run uid
    if cfg["uid"] is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        protections.append("uid")
    os.chdir(work)
    sys.path[:] = [p for p in sys.path if p]           # never import from the cwd
    emit(event="start", protections=protections)

    ballast = bytearray(2 * 1024 * 1024)               # released on MemoryError to report it
    if cfg["guards"]:
        _install_guards(cfg, work)

    try:
        tree = ast.parse(tests)
    except SyntaxError as e:
        emit(event="done", status="crashed", message=f"tests do not parse: {e}", passed=0, total=0)
        return
    plan = _plan(tree)
    total = sum(is_test for _, is_test in plan)
    ns = {"__name__": "__sandbox__", "__builtins__": builtins}

    def one_line(e, filename):
        line = None
        for fr in traceback.extract_tb(e.__traceback__):
            if fr.filename == filename:
                line = fr.lineno
        if isinstance(e, SyntaxError) and e.filename == filename:
            line = e.lineno
        detail = e.msg if isinstance(e, SyntaxError) else str(e)
        text = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
        text = " ".join(text.split())[:300]
        return f"{text} ({filename.strip('<>')} line {line})" if line else text

    def fatal(e, where):
        """A status for an exception that ends the run, or None if it is an ordinary one."""
        if isinstance(e, MemoryError):
            return "memory", f"MemoryError in the {where} (memory limit {cfg['memory_mb']} MB)"
        if getattr(e, "sandbox_violation", False):
            return "forbidden", f"{e} ({where})"
        return None

    # -- the candidate
    try:
        exec(compile(code, "<solution>", "exec"), ns)
    except BaseException as e:
        ballast = None
        if os.getpid() != MAIN_PID:
            os._exit(1)
        st = fatal(e, "solution") or ("crashed", one_line(e, "<solution>"))
        emit(event="done", status=st[0], message=st[1], passed=0, total=total)
        return
    # -- the tests, one statement at a time
    passed = done = 0
    first_failure = None
    for node, is_test in plan:
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), "<tests>", "exec"), ns)
            ok = True
        except BaseException as e:
            ballast = None
            if os.getpid() != MAIN_PID:
                os._exit(1)
            st = fatal(e, "tests")
            if st:
                emit(event="done", status=st[0], message=st[1], passed=passed, total=total)
                return
            ok = False
            if first_failure is None:
                if isinstance(e, AssertionError):
                    src = (ast.get_source_segment(tests, node) or "").splitlines()
                    first_failure = f"assertion failed (tests line {node.lineno}): " + (src[0] if src else "")
                    if str(e):
                        first_failure += f" -- {e}"
                else:
                    first_failure = one_line(e, "<tests>")
                first_failure = first_failure[:400]
        if is_test:
            done += 1
            passed += ok
            emit(event="progress", passed=passed, total=total)
        elif not ok:
            pass                                       # a broken setup shows up as failing tests
    if first_failure is None:
        emit(event="done", status="passed",
             message=f"{passed}/{total} tests passed" if total else "ran without error (no tests)",
             passed=passed, total=total)
    else:
        emit(event="done", status="failed", message=f"{passed}/{total} tests passed; first: {first_failure}",
             passed=passed, total=total)


def _plan(tree):
    """[(statement, is_test)]: which top-level test statements count as tests."""
    def has_assert(node):
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, ast.Assert):
                return True
            for child in ast.iter_child_nodes(n):
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                    stack.append(child)
        return False
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    plan = [(n, not isinstance(n, defs) and has_assert(n)) for n in tree.body]
    if not any(t for _, t in plan):
        plan = [(n, not isinstance(n, defs + (ast.Assign, ast.AnnAssign, ast.Pass))) for n in tree.body]
    return plan


def _install_guards(cfg, work):
    import socket, _socket

    class SandboxViolation(PermissionError):
        sandbox_violation = True

    class ForbiddenImport(ImportError):
        sandbox_violation = True

    # imports
    allowed = None if cfg["allowed"] is None else frozenset(cfg["allowed"])
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = globals.get("__name__") if isinstance(globals, dict) else None
        from_candidate = importer is None or importer == "__sandbox__" or importer not in sys.modules
        if from_candidate:
            if level:
                raise ForbiddenImport("relative imports are not allowed in the sandbox")
            if allowed is not None and name.partition(".")[0] not in allowed:
                raise ForbiddenImport(f"import of module '{name}' is not allowed in the sandbox")
        return real_import(name, globals, locals, fromlist, level)
    builtins.__import__ = guarded_import

    # network
    def no_network(*a, **k):
        raise SandboxViolation("network access is disabled in the sandbox")

    class NoSocket(_socket.socket):
        def __init__(self, *a, **k):
            no_network()
    for mod in (socket, _socket):
        for attr in ("socket", "SocketType"):
            setattr(mod, attr, NoSocket)
        for attr in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
                     "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "dup"):
            if hasattr(mod, attr):
                setattr(mod, attr, no_network)

    # files
    real_open = builtins.open
    prefix = work + os.sep

    def check(path, what):
        if isinstance(path, int):
            return
        p = os.path.realpath(os.fsdecode(path))
        if p != work and not p.startswith(prefix):
            raise SandboxViolation(f"{what} of '{os.fsdecode(path)}' is outside the sandbox directory")

    def guarded_open(file, mode="r", *a, **k):
        check(file, "open")
        return real_open(file, mode, *a, **k)
    builtins.open = io.open = guarded_open

    class GuardedFileIO(io.FileIO):
        def __init__(self, file, *a, **k):
            check(file, "open")
            super().__init__(file, *a, **k)
    io.FileIO = GuardedFileIO

    def path_guard(fn, *argnames):
        def wrapper(*a, **k):
            for i, name in enumerate(argnames):
                if i < len(a):
                    check(a[i], fn.__name__)
                elif name in k:
                    check(k[name], fn.__name__)
            return fn(*a, **k)
        wrapper.__name__ = fn.__name__
        return wrapper
    one = {"open": "path", "remove": "path", "unlink": "path", "rmdir": "path", "mkdir": "path",
           "makedirs": "name", "removedirs": "name", "chmod": "path", "chown": "path",
           "lchown": "path", "truncate": "path", "utime": "path", "mkfifo": "path",
           "mknod": "path", "listdir": "path", "scandir": "path", "chdir": "path"}
    two = {"rename": ("src", "dst"), "replace": ("src", "dst"), "renames": ("old", "new"),
           "link": ("src", "dst"), "symlink": ("src", "dst")}
    for name, arg in one.items():
        if hasattr(os, name):
            setattr(os, name, path_guard(getattr(os, name), arg))
    for name, args in two.items():
        if hasattr(os, name):
            setattr(os, name, path_guard(getattr(os, name), *args))

    # processes
    def no_process(*a, **k):
        raise SandboxViolation("starting processes is disabled in the sandbox")
    for name in dir(os):
        if name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "kill",
                    "killpg") or name.startswith(("exec", "spawn")):
            setattr(os, name, no_process)


try:
    main()
finally:
    if os.getpid() != MAIN_PID:
        os._exit(0)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
'''


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


def _private(path: str) -> str:
    """Create `path` empty and readable by its owner (root) only; return it."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    return path


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_capped(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return ""
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[... truncated]" if len(data) > limit else "")


def _last_events(path: str) -> tuple[dict, dict | None, dict | None]:
    start: dict = {}
    progress = done = None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                kind = ev.get("event") if isinstance(ev, dict) else None
                if kind == "start" and not start:
                    start = ev
                elif kind == "progress":
                    progress = ev
                elif kind == "done" and done is None:
                    done = ev
    except OSError:
        pass
    return start, progress, done


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
    """Run `code` then `tests` in a sandboxed child interpreter; never raises for bad code.

    `allowed_imports=None` allows any import.  `python_guards=False` skips the
    Python-level guards (imports, sockets, files, processes) so the OS-level
    boundaries can be tested on their own.  Raises ValueError if `tests` itself
    is not valid Python (a problem with the case, not the candidate).
    """
    try:
        ast.parse(tests)
    except SyntaxError as e:
        raise ValueError(f"tests are not valid Python: {e}") from None
    started = time.monotonic()
    root = tempfile.mkdtemp(prefix="promptlab-sandbox-")
    uid = None
    try:
        os.chmod(root, 0o711)        # the sandbox uid may pass through, not list or read
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        if os.geteuid() == 0:
            uid = _pick_uid()
            os.chown(work, uid, uid)
        allowed = None if allowed_imports is None else set(allowed_imports)
        preimport = set(_BROAD_PREIMPORT if allowed is None else allowed)
        for name in list(preimport):
            deps = _LAZY_DEPS.get(name, ())
            preimport.update(deps)
            if allowed is not None:
                allowed.update(deps)          # C code imports these with no importer to check
        config = {
            "work": work, "uid": uid, "netns": True, "guards": python_guards,
            "allowed": None if allowed is None else sorted(allowed),
            "preimport": sorted(preimport), "cpu_s": int(max(1, cpu_s)), "memory_mb": int(memory_mb),
            "fsize": max(4 * max_output_bytes, 1 << 20), "nproc": int(max_processes),
        }
        for name, text in (("config.json", json.dumps(config)), ("solution.py", code),
                           ("tests.py", tests), ("harness.py", _HARNESS)):
            with open(_private(os.path.join(root, name)), "w", encoding="utf-8") as f:
                f.write(text)
        out_path, err_path = os.path.join(root, "stdout"), os.path.join(root, "stderr")
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        timed_out = False
        with open(_private(out_path), "wb") as out, open(_private(err_path), "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-X", "utf8", os.path.join(root, "harness.py"), root],
                cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, close_fds=True)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _killpg(proc.pid)
                rc = proc.wait()
            except BaseException:
                _killpg(proc.pid)
                proc.wait()
                raise
            finally:
                if uid is not None:
                    _kill_uid(uid)
                else:
                    _killpg(proc.pid)
        start, progress, done = _last_events(os.path.join(root, "result.jsonl"))
        stdout = _read_capped(out_path, max_output_bytes)
        stderr = _read_capped(err_path, max_output_bytes)
        total = (done or progress or {}).get("total", 0)
        passed_n = (done or progress or {}).get("passed", 0)
        if timed_out:
            status, message = "timeout", f"wall-clock limit of {timeout_s:g}s exceeded"
        elif done is not None:
            status, message = done["status"], done["message"]
        else:
            status, message = _classify_exit(rc, stderr, cpu_s, memory_mb)
        if status not in STATUSES:
            status = "crashed"
        return SandboxResult(
            status=status, passed=status == "passed", tests_passed=int(passed_n),
            tests_total=int(total), message=" ".join(str(message).split()), stdout=stdout,
            stderr=stderr, duration_s=time.monotonic() - started,
            protections=tuple(start.get("protections", ())))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if uid is not None:
            with _uid_lock:
                _uids_in_use.discard(uid)


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
