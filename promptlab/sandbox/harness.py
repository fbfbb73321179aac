"""The sandbox's child program: ``python -I -S -X utf8 harness.py ROLE ROOT FD...``.

`promptlab.sandbox.run_python` starts it twice per run, as two processes that
share nothing but a pair of pipes (the design and its reasons are in the
docstring of `promptlab.sandbox`):

* role ``code`` runs the model's code, then answers requests about the objects
  it defined (call this, get that attribute, compare these) until the pipe
  closes.  It has no other channel: its stdout is only kept as text.
* role ``tests`` runs the case's tests.  Every top-level name the code defined
  is, in the tests, plain data or a `Remote` proxy that forwards operations
  over the pipes.  It counts the tests itself and writes the verdict, one JSON
  event per line, to a file descriptor only it holds.

Values cross the pipes as tagged JSON (`encode`/`decode`): None, bools, str,
float and small ints as themselves, other data as ``[tag, ...]`` lists, and
everything else (functions, classes, instances, generators) as a handle
``["H", n]`` into the code process's object table.  Either side decodes only
data; nothing received is ever executed or unpickled.

Runs as a script with the standard library only: it must not import promptlab
(``-I -S`` puts neither the project nor site-packages on the path).  Importing
it is harmless; the parent uses `test_plan` to know how many tests to expect.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import errno
import io
import json
import operator
import os
import resource
import struct
import sys
import traceback

MAX_MESSAGE = 16 * 1024 * 1024      # bytes in one protocol line
_MAIN_PID = os.getpid()


# --------------------------------------------------------------------------- errors


class SandboxViolation(PermissionError):
    sandbox_violation = True


class ForbiddenImport(ImportError):
    sandbox_violation = True


class RemoteError(Exception):
    """An exception raised by the code whose type is not a builtin exception."""


class LinkBroken(BaseException):
    """The code's process ended or broke the protocol: no later test can run.

    A BaseException, so that a test's ``except Exception`` cannot swallow it.
    """

    def __init__(self, message: str, lost: bool):
        super().__init__(message)
        self.lost = lost          # the pipe closed (the process ended), rather than garbage arrived


# --------------------------------------------------------------------------- the plan


def test_plan(tree: ast.Module) -> list[tuple[ast.stmt, bool]]:
    """[(statement, is_test)]: which top-level statements of the tests count as tests.

    Statements containing an ``assert`` (outside a def/class/lambda) are tests;
    if there are none (HumanEval's ``check(candidate)`` style), every statement
    that is not a definition, import, assignment or ``pass`` is.
    """
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


# --------------------------------------------------------------------------- values on the wire

_SEQUENCES = {list: "L", tuple: "T", set: "S", frozenset: "F"}
_MUTABLE = (list, dict, set, bytearray)


def encode(value, ref):
    """`value` as JSON-able data; `ref(obj)` gives the handle of anything that is not data."""
    path: set[int] = set()          # containers being encoded: a cycle becomes a handle

    def enc(v):
        t = type(v)
        if v is None or t is bool or t is str or t is float:
            return v
        if t is int:
            return v if -(1 << 62) < v < (1 << 62) else ["I", format(v, "x")]
        if t is bytes or t is bytearray:
            return ["B" if t is bytes else "A", v.hex()]
        if t is complex:
            return ["C", v.real, v.imag]
        if t is slice or t is range:
            parts = [enc(v.start), enc(v.stop), enc(v.step)]
            return ["Z" if t is slice else "R", *parts]
        if (t in _SEQUENCES or t is dict) and id(v) not in path:
            path.add(id(v))
            try:
                if t is dict:
                    return ["D", [[enc(k), enc(x)] for k, x in v.items()]]
                return [_SEQUENCES[t], [enc(x) for x in v]]
            finally:
                path.discard(id(v))
        return ["H", ref(v)]
    return enc(value)


def decode(data, handle):
    """The value `data` stands for; `handle(n)` gives the object of a handle. Raises ValueError."""
    def dec(x):
        t = type(x)
        if x is None or t is bool or t is str or t is float or t is int:
            return x
        if t is not list or not x or type(x[0]) is not str:
            raise ValueError(f"not a value: {str(x)[:80]}")
        tag, rest = x[0], x[1:]
        if tag == "H" and len(rest) == 1 and type(rest[0]) is int:
            return handle(rest[0])
        if tag == "I" and len(rest) == 1 and type(rest[0]) is str:
            return int(rest[0], 16)
        if tag in ("B", "A") and len(rest) == 1 and type(rest[0]) is str:
            return (bytes if tag == "B" else bytearray).fromhex(rest[0])
        if tag == "C" and len(rest) == 2 and all(type(p) in (int, float) for p in rest):
            return complex(rest[0], rest[1])
        if tag in ("Z", "R") and len(rest) == 3:
            return (slice if tag == "Z" else range)(*map(dec, rest))
        if tag == "D" and len(rest) == 1 and type(rest[0]) is list:
            return {dec(k): dec(v) for k, v in rest[0]}
        kind = next((k for k, s in _SEQUENCES.items() if s == tag), None)
        if kind is not None and len(rest) == 1 and type(rest[0]) is list:
            return kind(dec(i) for i in rest[0])
        raise ValueError(f"not a value: {str(x)[:80]}")
    try:
        return dec(data)
    except (TypeError, ValueError, RecursionError, MemoryError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None


class Channel:
    """One JSON object per line, in over `rfd` and out over `wfd`."""

    def __init__(self, rfd: int, wfd: int):
        self._in = os.fdopen(rfd, "rb")
        self._out = os.fdopen(wfd, "wb")

    def send(self, message: dict) -> None:
        if os.getpid() != _MAIN_PID:      # a forked child of the code returned into the harness
            os._exit(0)
        self._out.write(json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n")
        self._out.flush()

    def receive(self) -> dict | None:
        """The next message, or None once the other side has closed the pipe. Raises ValueError."""
        line = self._in.readline(MAX_MESSAGE + 1)
        if not line:
            return None
        if not line.endswith(b"\n"):
            raise ValueError("a message was longer than the limit or cut off")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"a message is not JSON: {e}") from None
        if type(message) is not dict:
            raise ValueError("a message is not a JSON object")
        return message


# --------------------------------------------------------------------------- confinement


def confine(cfg: dict, role: str) -> list[str]:
    """Put this process in its sandbox; returns the protections that applied.

    As root: a new network namespace, then chroot and a drop to the role's
    fresh uid.  Not root: a user namespace gives the same network namespace and
    chroot, then every capability is dropped.  Order matters: namespaces and
    pre-imports need the host's filesystem, chroot needs privilege, and the
    seccomp filter forbids what came before it.
    """
    protections = []
    uid = cfg["uids"][role] if cfg["uids"] else None
    in_userns = False
    if uid is not None:
        if _unshare(0x40000000):                            # CLONE_NEWNET
            protections.append("netns")
    else:
        own = os.getuid(), os.getgid()                      # they read as "overflow" once unshared
        if _unshare(0x10000000 | 0x00020000 | 0x40000000):  # CLONE_NEWUSER | NEWNS | NEWNET
            protections.append("netns")
            in_userns = _map_ids(*own)
    import socket, _socket  # noqa: F401,E401  -- the guards patch them; out of reach after the chroot
    for name in cfg["preimport"]:
        try:
            __import__(name)
        except BaseException:
            pass
    mem = cfg["memory_mb"] * 1024 * 1024
    limits = [("RLIMIT_CPU", cfg["cpu_s"], cfg["cpu_s"] + 1), ("RLIMIT_AS", mem, mem),
              ("RLIMIT_DATA", mem, mem), ("RLIMIT_FSIZE", cfg["fsize"], cfg["fsize"]),
              ("RLIMIT_NOFILE", 64, 64), ("RLIMIT_CORE", 0, 0)]
    if uid is not None:
        limits.append(("RLIMIT_NPROC", cfg["nproc"], cfg["nproc"]))
    for name, soft, hard in limits:           # hard = soft: they cannot be raised again
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
            protections.append(name)
        except (ValueError, OSError, AttributeError):
            pass
    if uid is not None or in_userns:
        os.chroot(cfg["jail"])                # nothing of the host's filesystem is left in view
        cfg["work"] = "/work"
        protections.append("chroot")
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)           # a non-root uid cannot leave a chroot
        protections.append("uid")
    elif in_userns and _drop_capabilities():  # nor can a process without capabilities
        protections.append("nocaps")
    os.chdir(cfg["work"])
    os.environ["HOME"] = os.environ["TMPDIR"] = cfg["work"]
    sys.path[:] = [p for p in sys.path if p]  # never import from the cwd
    if _seccomp():
        protections.append("seccomp")
    return protections


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> bool:
    try:
        return _libc().unshare(flags) == 0
    except Exception:
        return False


def _map_ids(uid: int, gid: int) -> bool:
    """In a fresh user namespace: map our own uid and gid (the only ones we may) to themselves."""
    try:
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                           ("/proc/self/gid_map", f"{gid} {gid} 1")):
            with open(path, "w") as f:
                f.write(text)
        return True
    except OSError:
        return False


def _drop_capabilities() -> bool:
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)      # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()                      # effective, permitted, inheritable: none
    try:
        return _libc().capset(header, data) == 0
    except Exception:
        return False


# x86_64 syscall numbers refused with EPERM: sockets of any family (so AF_UNIX
# too); reaching into other processes (ptrace, process_vm_*, pidfd_getfd) or
# signalling them (kill, tkill, tgkill, rt_(tg)sigqueueinfo, pidfd_send_signal);
# io_uring (it can connect without a socket() call); namespaces, mounts and
# chroot; kernel facilities a sandbox never needs (bpf, perf, userfaultfd, keys).
_DENIED_X86_64 = (41, 101, 310, 311, 438, 62, 200, 234, 129, 297, 424, 425, 426, 427,
                  272, 308, 165, 166, 155, 161, 428, 429, 430, 431, 432, 433, 442,
                  321, 298, 323, 250, 248, 249)
_CLONE_X86_64, _CLONE3_X86_64 = 56, 435
_CLONE_NAMESPACES = 0x7E020000             # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def _seccomp() -> bool:
    """Install a seccomp filter (x86_64 only); False where that is not possible."""
    if os.uname().machine != "x86_64":
        return False
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    prog: list = [(ld, 0, 0, 4), (jeq, 1, 0, 0xC000003E), (ret, 0, 0, kill),   # arch must be x86_64
                  (ld, 0, 0, 0), (jge, "eperm", 0, 0x40000000)]                # no x32 syscalls
    prog += [(jeq, "eperm", 0, nr) for nr in _DENIED_X86_64]
    prog += [(jeq, "enosys", 0, _CLONE3_X86_64),     # its flags are out of reach; libc falls back to clone
             (jeq, "clone", 0, _CLONE_X86_64), (ret, 0, 0, allow)]
    labels = {"clone": len(prog)}
    prog += [(ld, 0, 0, 16), (jset, "eperm", 0, _CLONE_NAMESPACES), (ret, 0, 0, allow)]
    labels["eperm"] = len(prog)
    prog.append((ret, 0, 0, eperm))
    labels["enosys"] = len(prog)
    prog.append((ret, 0, 0, enosys))
    code = b"".join(struct.pack("HBBI", op, *(labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf)), k)
                    for i, (op, jt, jf, k) in enumerate(prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    fprog = SockFprog(len(prog), code)
    libc = _libc()
    if libc.prctl(38, 1, 0, 0, 0) != 0:               # PR_SET_NO_NEW_PRIVS
        return False
    return libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0   # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


def install_guards(cfg: dict) -> None:
    """Python-level guards: legible ``forbidden`` results, not a security boundary."""
    import socket
    import _socket
    work = os.path.realpath(cfg["work"])

    allowed = None if cfg["allowed"] is None else frozenset(cfg["allowed"])
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = globals.get("__name__") if isinstance(globals, dict) else None
        from_sandbox = importer is None or importer == "__sandbox__" or importer not in sys.modules
        if from_sandbox:
            if level:
                raise ForbiddenImport("relative imports are not allowed in the sandbox")
            if allowed is not None and name.partition(".")[0] not in allowed:
                raise ForbiddenImport(f"import of module '{name}' is not allowed in the sandbox")
        return real_import(name, globals, locals, fromlist, level)
    builtins.__import__ = guarded_import

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

    real_open = builtins.open
    prefix = work.rstrip(os.sep) + os.sep

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

    def no_process(*a, **k):
        raise SandboxViolation("starting processes is disabled in the sandbox")
    for name in dir(os):
        if name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "kill",
                    "killpg") or name.startswith(("exec", "spawn")):
            setattr(os, name, no_process)


# --------------------------------------------------------------------------- role "code"

# What the tests may ask of the code's objects: the operations a test performs on a value.
_OPS = {
    "call": lambda f, /, *a, **k: f(*a, **k), "getattr": getattr, "setattr": setattr, "delattr": delattr,
    "iter": iter, "next": next, "len": len, "bool": bool, "hash": hash, "repr": repr, "str": str,
    "format": format, "int": int, "float": float, "index": operator.index,
    "isinstance": isinstance, "issubclass": issubclass,
    **{name: getattr(operator, name) for name in (
        "getitem", "setitem", "delitem", "contains", "neg", "pos", "abs", "invert",
        "eq", "ne", "lt", "le", "gt", "ge", "add", "sub", "mul", "truediv", "floordiv", "mod",
        "pow", "matmul", "and_", "or_", "xor", "lshift", "rshift")},
}


def describe(e: BaseException) -> dict:
    """An exception of the code as data: its type's name, text, line and kind."""
    line = None
    for fr in traceback.extract_tb(e.__traceback__):
        if fr.filename == "<solution>":
            line = fr.lineno
    if isinstance(e, SyntaxError) and e.filename == "<solution>":
        line = e.lineno
    text = e.msg if isinstance(e, SyntaxError) else str(e)
    kind = "memory" if isinstance(e, MemoryError) else "forbidden" if getattr(e, "sandbox_violation", False) else None
    return {"type": type(e).__name__, "text": " ".join(text.split())[:500], "line": line, "kind": kind}


class Objects:
    """The code's objects the tests hold handles to (kept alive, so ids are never reused)."""

    def __init__(self):
        self._items: list = []
        self._index: dict[int, int] = {}

    def ref(self, obj) -> int:
        n = self._index.get(id(obj))
        if n is None:
            n = self._index[id(obj)] = len(self._items)
            self._items.append(obj)
        return n

    def get(self, n: int):
        if not 0 <= n < len(self._items):
            raise ValueError(f"no object {n}")
        return self._items[n]


def run_code(cfg: dict, root: str, rfd: int, wfd: int) -> None:
    with open(os.path.join(root, "solution.py"), encoding="utf-8") as f:
        code = f.read()
    chan = Channel(rfd, wfd)
    chan.send({"ready": confine(cfg, "code")})    # before any of the code runs: this line is ours
    ballast = bytearray(2 * 1024 * 1024)          # released on MemoryError to report it
    if cfg["guards"]:
        install_guards(cfg)
    ns = {"__name__": "__sandbox__", "__builtins__": builtins}
    objects = Objects()
    try:
        exec(compile(code, "<solution>", "exec"), ns)
    except BaseException as e:
        ballast = None
        chan.send({"loaded": False, "error": describe(e)})
        return
    names = {}
    for name, value in ns.items():
        if not (name.startswith("__") and name.endswith("__")):
            names[name] = ["M", value.__name__] if type(value) is type(os) else encode(value, objects.ref)
    chan.send({"loaded": True, "names": names})
    while True:
        try:
            request = chan.receive()
        except ValueError:
            return
        if request is None:
            return
        try:
            reply = _answer(request, objects)
        except BaseException as e:
            ballast = None
            reply = {"error": describe(e)}
        reply["id"] = request.get("id")
        chan.send(reply)
        ballast = ballast or bytearray(2 * 1024 * 1024)


def _answer(request: dict, objects: Objects) -> dict:
    op = _OPS[request["op"]]
    raw_args, raw_kwargs = request["args"], request["kwargs"]
    args = [decode(a, objects.get) for a in raw_args]
    kwargs = {str(k): decode(v, objects.get) for k, v in raw_kwargs.items()}
    value = op(*args, **kwargs)
    reply: dict = {"value": encode(value, objects.ref)}
    if request["op"] == "call":        # the tests' containers see what the call did to them
        changed = [[i, encode(a, objects.ref)] for i, a in enumerate(args) if type(a) in _MUTABLE]
        changed += [[k, encode(a, objects.ref)] for k, a in kwargs.items() if type(a) in _MUTABLE]
        sync = [[k, new] for k, new in changed if new != (raw_args[k] if isinstance(k, int) else raw_kwargs[k])]
        if sync:
            reply["sync"] = sync
    if len(json.dumps(reply)) > MAX_MESSAGE - 100:
        reply = {"value": ["H", objects.ref(value)]}    # too big to copy: the tests get a handle
    return reply


# --------------------------------------------------------------------------- role "tests"


class Link:
    """The tests' side of the pipes: requests go out, replies are decoded as data."""

    def __init__(self, chan: Channel):
        self.chan = chan
        self.broken: LinkBroken | None = None
        self._next = 0
        self._remotes: dict[int, Remote] = {}

    def receive(self) -> dict:
        if self.broken:
            raise self.broken
        try:
            message = self.chan.receive()
        except ValueError as e:
            self.broken = LinkBroken(f"the code's process broke the protocol: {e}", lost=False)
            raise self.broken from None
        if message is None:
            self.broken = LinkBroken("the code's process ended before the tests finished", lost=True)
            raise self.broken
        return message

    def remote(self, n: int) -> Remote:
        if n not in self._remotes:
            r = self._remotes[n] = object.__new__(Remote)
            object.__setattr__(r, "_sandbox_handle", n)
        return self._remotes[n]

    def decode(self, data):
        try:
            return decode(data, self.remote)
        except ValueError as e:
            self.broken = LinkBroken(f"the code's process sent a bad value: {e}", lost=False)
            raise self.broken from None

    def request(self, op: str, /, *args, **kwargs):
        if self.broken:
            raise self.broken
        self._next += 1
        message = {"id": self._next, "op": op, "args": [encode(a, _handle_of) for a in args],
                   "kwargs": {k: encode(v, _handle_of) for k, v in kwargs.items()}}
        try:
            self.chan.send(message)
        except OSError:
            self.broken = LinkBroken("the code's process ended before the tests finished", lost=True)
            raise self.broken from None
        reply = self.receive()
        if type(reply.get("id")) is not int or reply["id"] != self._next:
            self.broken = LinkBroken("the code's process sent a reply out of turn", lost=False)
            raise self.broken
        if "error" in reply:
            raise _rebuild(reply["error"])
        self._apply(reply.get("sync", []), args, kwargs)
        return self.decode(reply.get("value"))

    def _apply(self, sync, args: tuple, kwargs: dict) -> None:
        """Copy back what a call did to the lists, dicts, sets and bytearrays passed to it."""
        for item in sync if type(sync) is list else [None]:
            key = item[0] if type(item) is list and len(item) == 2 else None
            target = args[key] if type(key) is int and 0 <= key < len(args) else \
                kwargs.get(key) if type(key) is str else None
            new = self.decode(item[1]) if type(target) in _MUTABLE else None
            if type(new) is not type(target):
                self.broken = LinkBroken("the code's process sent a bad update of an argument", lost=False)
                raise self.broken
            if type(target) is dict or type(target) is set:
                target.clear()
                target.update(new)
            else:
                target[:] = new


_LINK: Link | None = None


def _handle_of(obj) -> int:
    if type(obj) is Remote:
        return object.__getattribute__(obj, "_sandbox_handle")
    raise TypeError(f"a {type(obj).__name__} cannot be passed to the code under test "
                    "(only plain data and the code's own objects cross the sandbox boundary)")


def _rebuild(error) -> BaseException:
    """The code's exception as one the tests can catch: a builtin type of that name, else RemoteError."""
    if type(error) is not dict:
        error = {}
    name, text = str(error.get("type", "Exception"))[:100], str(error.get("text", ""))[:500]
    kind = error.get("kind")
    if kind == "memory":
        exc: BaseException = MemoryError(text)
    elif kind == "forbidden":
        exc = SandboxViolation(text)
    else:
        cls = getattr(builtins, name, None)
        exc = RemoteError(f"{name}: {text}" if text else name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                exc = cls(text)
            except Exception:
                pass
    exc.sandbox_where = "solution"
    return exc


class Remote:
    """An object that lives in the code's process; every operation on it is a request."""

    __slots__ = ("_sandbox_handle",)

    def __getattr__(self, name):
        return _LINK.request("getattr", self, name)

    def __setattr__(self, name, value):
        _LINK.request("setattr", self, name, value)

    def __delattr__(self, name):
        _LINK.request("delattr", self, name)

    def __call__(self, /, *args, **kwargs):
        return _LINK.request("call", self, *args, **kwargs)

    def __setitem__(self, key, value):
        _LINK.request("setitem", self, key, value)

    def __format__(self, spec):
        return _LINK.request("format", self, spec)

    def __instancecheck__(self, obj):
        return _LINK.request("isinstance", obj, self)

    def __subclasscheck__(self, cls):
        return _LINK.request("issubclass", cls, self)


def _forward(op: str, reflected: bool = False):
    if reflected:
        return lambda self, other: _LINK.request(op, other, self)
    return lambda self, *args: _LINK.request(op, self, *args)


for _op in ("len", "bool", "hash", "repr", "str", "iter", "next", "int", "float", "index",
            "neg", "pos", "abs", "invert", "getitem", "delitem", "contains",
            "eq", "ne", "lt", "le", "gt", "ge"):
    setattr(Remote, f"__{_op}__", _forward(_op))
for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and_", "or_", "xor",
            "lshift", "rshift"):
    _name = _op.rstrip("_")
    setattr(Remote, f"__{_name}__", _forward(_op))
    setattr(Remote, f"__r{_name}__", _forward(_op, reflected=True))


def run_tests(cfg: dict, root: str, rfd: int, wfd: int, verdict_fd: int) -> None:
    global _LINK
    with open(os.path.join(root, "tests.py"), encoding="utf-8") as f:
        tests = f.read()
    verdict = os.fdopen(verdict_fd, "w", encoding="utf-8")

    def emit(**event):
        verdict.write(json.dumps(event) + "\n")
        verdict.flush()

    confine(cfg, "tests")
    try:                                           # our pipes and memory are out of the code's reach
        _libc().prctl(4, 0, 0, 0, 0)              # PR_SET_DUMPABLE = 0
    except Exception:
        pass
    plan = test_plan(ast.parse(tests))
    total = sum(is_test for _, is_test in plan)
    link = _LINK = Link(Channel(rfd, wfd))
    ballast = bytearray(2 * 1024 * 1024)

    def done(status, message, passed, lost=False):
        emit(event="done", status=status, message=" ".join(message.split())[:600], passed=passed,
             total=total, lost=lost)

    def fatal(e, where):
        """(status, message) for an exception that ends the run, or None for an ordinary one."""
        where = getattr(e, "sandbox_where", where)
        if isinstance(e, LinkBroken):
            return "crashed", str(e)
        if isinstance(e, MemoryError):
            return "memory", f"MemoryError in the {where} (memory limit {cfg['memory_mb']} MB)"
        if getattr(e, "sandbox_violation", False):
            return "forbidden", f"{e} ({where})"
        return None

    try:
        protections = link.receive().get("ready")
        if type(protections) is not list or not all(type(p) is str for p in protections):
            raise LinkBroken("the code's process did not start properly", lost=False)
        emit(event="start", protections=protections)
        if cfg["guards"]:
            install_guards(cfg)
        loaded = link.receive()
        error, names = loaded.get("error"), loaded.get("names")
        if loaded.get("loaded") is False and type(error) is dict:
            name, text, line = error.get("type"), error.get("text"), error.get("line")
            status, message = fatal(_rebuild(error), "solution") or (
                "crashed", (f"{name}: {text}" if text else str(name)) + (f" (solution line {line})" if line else ""))
            done(status, message, 0)
            return
        if loaded.get("loaded") is not True or type(names) is not dict:
            raise LinkBroken("the code's process sent something else than its names", lost=False)
        ns = {"__name__": "__sandbox__", "__builtins__": builtins}
        for name, data in names.items():
            if name.startswith("__") or hasattr(builtins, name):   # the tests keep their own builtins
                continue
            if type(data) is list and len(data) == 2 and data[0] == "M":
                try:                              # a module: the real one, never the code's
                    module = __import__(str(data[1]), ns)
                    for part in str(data[1]).split(".")[1:]:
                        module = getattr(module, part)
                    ns[name] = module
                except BaseException:
                    pass
            else:
                ns[name] = link.decode(data)
    except LinkBroken as e:
        done("crashed", str(e), 0, lost=e.lost)
        return

    passed = 0
    first_failure = None
    for node, is_test in plan:
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), "<tests>", "exec"), ns)
            ok = True
        except BaseException as e:
            ballast = None
            stop = fatal(link.broken or e, "tests")
            if stop:
                done(*stop, passed, lost=bool(link.broken and link.broken.lost))
                return
            ok = False
            if first_failure is None:
                first_failure = _failure(e, node, tests)
        if link.broken:                           # a test swallowed it; the run still ends here
            done("crashed", str(link.broken), passed, lost=link.broken.lost)
            return
        if is_test:
            passed += ok
            emit(event="progress", passed=passed, total=total)
        ballast = ballast or bytearray(2 * 1024 * 1024)
    if first_failure is None:
        done("passed", f"{passed}/{total} tests passed" if total else "ran without error (no tests)", passed)
    else:
        done("failed", f"{passed}/{total} tests passed; first: {first_failure}", passed)


def _failure(e: BaseException, node: ast.stmt, tests: str) -> str:
    if isinstance(e, AssertionError):
        src = (ast.get_source_segment(tests, node) or "").splitlines()
        text = f"assertion failed (tests line {node.lineno}): " + (src[0] if src else "")
        return (text + (f" -- {e}" if str(e) else ""))[:400]
    line = None
    for fr in traceback.extract_tb(e.__traceback__):
        if fr.filename == "<tests>":
            line = fr.lineno
    text = " ".join(f"{type(e).__name__}: {e}".split()) if str(e) else type(e).__name__
    return (f"{text[:300]} (tests line {line})" if line else text[:300])[:400]


def main(argv: list[str]) -> None:
    role, root, *fds = argv[1:]
    with open(os.path.join(root, "config.json")) as f:
        cfg = json.load(f)
    try:
        if role == "code":
            run_code(cfg, root, int(fds[0]), int(fds[1]))
        else:
            run_tests(cfg, root, int(fds[0]), int(fds[1]), int(fds[2]))
    finally:
        if os.getpid() != _MAIN_PID:
            os._exit(0)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
    os._exit(0)       # threads the code started do not keep the process alive


if __name__ == "__main__":
    main(sys.argv)
