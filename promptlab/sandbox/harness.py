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
Its wire (`wire.py`: values and protocol lines) and its confinement (`confine.py`) sit next to
it and are loaded by their paths.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import json
import operator
import os
import sys
import traceback



def _sibling(name: str):
    """A module next to this file, loaded by its path: the child has neither promptlab nor
    site-packages on sys.path (-I -S), and the parent imports this file from the package."""
    spec = importlib.util.spec_from_file_location(f"promptlab_sandbox_{name}",
                                                  os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                               name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the import guard tells the harness's own modules by this
    spec.loader.exec_module(module)
    return module


wire = _sibling("wire")
confinement = _sibling("confine")


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


# --------------------------------------------------------------------------- role "code"

_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def same(a, b) -> bool:
    """`a == b` as the tests mean it, decided by builtin types only: plain data compares by value
    (containers element by element, by this same rule), anything else of the code's own making by
    identity — an object whose __eq__ always answers True does not equal every expected value."""
    ta, tb = type(a), type(b)
    if ta in _SCALARS and tb in _SCALARS:
        return a == b
    if ta in (list, tuple) and ta is tb:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if ta in (set, frozenset) and tb in (set, frozenset):
        return all(type(x) in _SCALARS for x in (*a, *b)) and a == b
    if ta is dict and tb is dict:
        if len(a) != len(b) or not all(type(k) in _SCALARS for k in (*a, *b)):
            return a is b
        return all(k in b and same(v, b[k]) for k, v in a.items())
    return a is b


# What the tests may ask of the code's objects: the operations a test performs on a value.
_OPS = {
    "call": lambda f, /, *a, **k: f(*a, **k), "getattr": getattr, "setattr": setattr, "delattr": delattr,
    "iter": iter, "next": next, "len": len, "bool": bool, "hash": hash, "repr": repr, "str": str,
    "format": format, "int": int, "float": float, "index": operator.index,
    "isinstance": isinstance, "issubclass": issubclass,
    **{name: getattr(operator, name) for name in (
        "getitem", "setitem", "delitem", "contains", "neg", "pos", "abs", "invert",
        "lt", "le", "gt", "ge", "add", "sub", "mul", "truediv", "floordiv", "mod",
        "pow", "matmul", "and_", "or_", "xor", "lshift", "rshift")},
    "eq": same, "ne": lambda a, b: not same(a, b),
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
    chan = wire.Channel(rfd, wfd)
    chan.send({"ready": confinement.confine(cfg, "code")})    # before any of the code runs: this line is ours
    ballast = bytearray(2 * 1024 * 1024)          # released on MemoryError to report it
    if cfg["guards"]:
        confinement.install_guards(cfg)
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
            names[name] = ["M", value.__name__] if type(value) is type(os) else wire.encode(value, objects.ref)
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
    args = [wire.decode(a, objects.get) for a in raw_args]
    kwargs = {str(k): wire.decode(v, objects.get) for k, v in raw_kwargs.items()}
    value = op(*args, **kwargs)
    reply: dict = {"value": wire.encode(value, objects.ref)}
    if request["op"] == "call":        # the tests' containers see what the call did to them
        changed = [[i, wire.encode(a, objects.ref)] for i, a in enumerate(args) if type(a) in wire.MUTABLE]
        changed += [[k, wire.encode(a, objects.ref)] for k, a in kwargs.items() if type(a) in wire.MUTABLE]
        sync = [[k, new] for k, new in changed if new != (raw_args[k] if isinstance(k, int) else raw_kwargs[k])]
        if sync:
            reply["sync"] = sync
    if len(json.dumps(reply)) > wire.MAX_MESSAGE - 100:
        reply = {"value": ["H", objects.ref(value)]}    # too big to copy: the tests get a handle
    return reply


# --------------------------------------------------------------------------- role "tests"


class Link:
    """The tests' side of the pipes: requests go out, replies are decoded as data."""

    def __init__(self, chan: wire.Channel):
        self.chan = chan
        self.broken: wire.LinkBroken | None = None
        self._next = 0
        self._remotes: dict[int, Remote] = {}

    def receive(self) -> dict:
        if self.broken:
            raise self.broken
        try:
            message = self.chan.receive()
        except ValueError as e:
            self.broken = wire.LinkBroken(f"the code's process broke the protocol: {e}", lost=False)
            raise self.broken from None
        if message is None:
            self.broken = wire.LinkBroken("the code's process ended before the tests finished", lost=True)
            raise self.broken
        return message

    def remote(self, n: int) -> Remote:
        if n not in self._remotes:
            r = self._remotes[n] = object.__new__(Remote)
            object.__setattr__(r, "_sandbox_handle", n)
        return self._remotes[n]

    def decode(self, data):
        try:
            return wire.decode(data, self.remote)
        except ValueError as e:
            self.broken = wire.LinkBroken(f"the code's process sent a bad value: {e}", lost=False)
            raise self.broken from None

    def request(self, op: str, /, *args, **kwargs):
        if self.broken:
            raise self.broken
        self._next += 1
        message = {"id": self._next, "op": op, "args": [wire.encode(a, _handle_of) for a in args],
                   "kwargs": {k: wire.encode(v, _handle_of) for k, v in kwargs.items()}}
        try:
            self.chan.send(message)
        except OSError:
            self.broken = wire.LinkBroken("the code's process ended before the tests finished", lost=True)
            raise self.broken from None
        reply = self.receive()
        if type(reply.get("id")) is not int or reply["id"] != self._next:
            self.broken = wire.LinkBroken("the code's process sent a reply out of turn", lost=False)
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
            new = self.decode(item[1]) if type(target) in wire.MUTABLE else None
            if type(new) is not type(target):
                self.broken = wire.LinkBroken("the code's process sent a bad update of an argument", lost=False)
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
        exc = confinement.SandboxViolation(text)
    else:
        cls = getattr(builtins, name, None)
        exc = wire.RemoteError(f"{name}: {text}" if text else name)
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

    confinement.confine(cfg, "tests")
    try:                                           # our pipes and memory are out of the code's reach
        confinement.libc().prctl(4, 0, 0, 0, 0)              # PR_SET_DUMPABLE = 0
    except Exception:
        pass
    plan = test_plan(ast.parse(tests))
    total = sum(is_test for _, is_test in plan)
    link = _LINK = Link(wire.Channel(rfd, wfd))
    ballast = bytearray(2 * 1024 * 1024)

    def done(status, message, passed, lost=False):
        emit(event="done", status=status, message=" ".join(message.split())[:600], passed=passed,
             total=total, lost=lost)

    def fatal(e, where):
        """(status, message) for an exception that ends the run, or None for an ordinary one."""
        where = getattr(e, "sandbox_where", where)
        if isinstance(e, wire.LinkBroken):
            return "crashed", str(e)
        if isinstance(e, MemoryError):
            return "memory", f"MemoryError in the {where} (memory limit {cfg['memory_mb']} MB)"
        if getattr(e, "sandbox_violation", False):
            return "forbidden", f"{e} ({where})"
        return None

    try:
        protections = link.receive().get("ready")
        if type(protections) is not list or not all(type(p) is str for p in protections):
            raise wire.LinkBroken("the code's process did not start properly", lost=False)
        emit(event="start", protections=protections)
        if cfg["guards"]:
            confinement.install_guards(cfg)
        loaded = link.receive()
        error, names = loaded.get("error"), loaded.get("names")
        if loaded.get("loaded") is False and type(error) is dict:
            name, text, line = error.get("type"), error.get("text"), error.get("line")
            status, message = fatal(_rebuild(error), "solution") or (
                "crashed", (f"{name}: {text}" if text else str(name)) + (f" (solution line {line})" if line else ""))
            done(status, message, 0)
            return
        if loaded.get("loaded") is not True or type(names) is not dict:
            raise wire.LinkBroken("the code's process sent something else than its names", lost=False)
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
    except wire.LinkBroken as e:
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
        if os.getpid() != wire.MAIN_PID:
            os._exit(0)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
    os._exit(0)       # threads the code started do not keep the process alive


if __name__ == "__main__":
    main(sys.argv)
