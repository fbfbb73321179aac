"""The jinja2 sandbox templates render in, bounded in what they can build and how long they run.

jinja2's immutable sandbox stops code execution, not exhaustion: `{{ text|center(10**9) }}`,
`'%1000000000s'|format(x)`, `|batch(10**9, 'x')`, `|replace('', big)`, chained integer products
or nested loops run no code yet take all memory or all time. Here:

- every filter and operator that can amplify its input is capped (MAX_PRODUCT characters or
  items added by one operation; integers of at most MAX_INT_BITS bits), at run time and, when
  its arguments are constants, statically (`static_refusal`, so `prompt add` refuses it);
- one render writes at most MAX_RENDER_CHARS characters (counted as each expression is output,
  in `{% set %}` blocks and macros too) and iterates at most MAX_RANGE_STEPS `range` items;
- one render runs at most MAX_RENDER_S seconds: a watchdog thread interrupts it past that.

Every limit breached is a `RenderLimit` (jinja2's SecurityError), which the caller turns into
that item's error.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range

MAX_PRODUCT = 100_000        # characters or items one filter or operator may add
MAX_INT_BITS = 4096          # integers a template computes (about 1,200 digits)
MAX_RENDER_CHARS = 1_000_000  # characters one render writes
MAX_RANGE_STEPS = 1_000_000  # `range` items one render may create, nested loops included
MAX_RENDER_S = 2.0           # seconds one render may take
MAX_INDENT = 64              # tojson's indent
# a %-format directive's width and precision ('%1000000000s' pads to a gigabyte)
_FORMAT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


class RenderLimit(SecurityError):
    """A template asked for more than a render may build or take."""


class RenderTimeout(BaseException):
    """Raised inside a render that ran past its deadline (a BaseException: nothing in the render
    may swallow it)."""


def _check_format(spec: Any) -> None:
    if isinstance(spec, str) and "%" in spec:
        for width, precision in _FORMAT.findall(spec):
            if "*" in (width, precision) or max(int(width or 0), int(precision or 0)) > MAX_PRODUCT:
                raise RenderLimit(f"a %-format width over {MAX_PRODUCT:,} characters")


def _check_growth(added: int, what: str) -> None:
    if added > MAX_PRODUCT:
        raise RenderLimit(f"{what} would add {added:,} characters or items (at most {MAX_PRODUCT:,})")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "**":
        if isinstance(right, (int, float)) and abs(right) > 64:
            raise RenderLimit(f"exponent {right} is too large")
        if _int(left) and _int(right) > 0 and _int(left).bit_length() * right > MAX_INT_BITS:
            raise RenderLimit(f"a power of more than {MAX_INT_BITS} bits")
    elif operator == "*":
        if _int(left) and _int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise RenderLimit(f"a product of more than {MAX_INT_BITS} bits")
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and _int(times) and len(seq) * times > MAX_PRODUCT:
                raise RenderLimit(f"a repetition of more than {MAX_PRODUCT:,} items")
    elif operator == "%":
        _check_format(left)


def _lines(text: Any) -> int:
    return str(text).count("\n") + 1


# filter name -> a check of (value, *args, **kwargs) before it runs
_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": lambda value, width=80, *a, **k: _check_growth(_int(width) - len(str(value)), "center"),
    "indent": lambda s, width=4, *a, **k: _check_growth(
        (len(width) if isinstance(width, str) else _int(width)) * _lines(s), "indent"),
    "format": lambda value, *a, **k: _check_format(value),
    "batch": lambda value, linecount, *a, **k: _check_growth(_int(linecount), "batch"),
    "slice": lambda value, slices, *a, **k: _check_growth(_int(slices), "slice"),
    "wordwrap": lambda s, width=79, *a, wrapstring=None, **k: _check_growth(
        len(wrapstring or "\n") * (len(str(s)) // max(_int(width), 1) + 1), "wordwrap"),
    "tojson": lambda value, indent=None, *a, **k: _check_growth(
        0 if _int(indent) <= MAX_INDENT else MAX_PRODUCT + 1, f"tojson indent {indent}"),
}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _check_replace(s: Any, old: Any, new: Any, count: Any = None, *a: Any, **k: Any) -> None:
    s, old, new = _text(s), _text(old), _text(new)
    times = len(s) + 1 if old == "" else s.count(old)
    if count is not None and _int(count) >= 0:
        times = min(times, _int(count))
    _check_growth(times * (len(new) - len(old)), "replace")


def _check_join(value: Any, d: Any = "", *a: Any, **k: Any) -> None:
    if isinstance(value, (list, tuple, str, range)):
        _check_growth(len(_text(d)) * max(len(value) - 1, 0), "join")


_FILTER_CHECKS.update(replace=_check_replace, join=_check_join)


class _Budget(threading.local):
    """What the render running in this thread may still write and iterate (None: no render)."""

    chars: int | None = None
    steps: int = 0


_budget = _Budget()


def _finalize(value: Any) -> Any:
    """Every `{{ … }}` output passes here, wherever it goes (the output, a set block, a macro)."""
    text = value if isinstance(value, str) else str(value)
    if _budget.chars is not None:
        _budget.chars -= len(text)
        if _budget.chars < 0:
            raise RenderLimit(f"the rendered text passes {MAX_RENDER_CHARS:,} characters")
    return text


def _range(*args: int) -> range:
    """The sandbox's range, each item counted against the render's budget."""
    result = safe_range(*args)
    if _budget.chars is not None:
        _budget.steps -= len(result)
        if _budget.steps < 0:
            raise RenderLimit(f"loops over more than {MAX_RANGE_STEPS:,} range items")
    return result


class Environment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the amplifying operators capped (see the module doc)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)


def _capped(original: Callable[..., Any], check: Callable[..., None]) -> Callable[..., Any]:
    skip = 1 if hasattr(original, "jinja_pass_arg") else 0  # its eval context or environment

    @functools.wraps(original)  # keeps jinja_pass_arg
    def capped(*args: Any, **kwargs: Any) -> Any:
        check(*args[skip:], **kwargs)
        return original(*args, **kwargs)

    return capped


def make_environment() -> Environment:
    env = Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False,
                      finalize=_finalize)
    for name, check in _FILTER_CHECKS.items():
        env.filters[name] = _capped(env.filters[name], check)
    # cycler, joiner, lipsum, namespace, dict serve no prompt; their __globals__ are the usual
    # first step of a template-injection payload.
    env.globals = {"range": _range}
    return env


def static_refusal(node: nodes.Node) -> str | None:
    """Why an amplifying filter or operator with constant arguments would break a limit (so
    `prompt add` refuses the template instead of every item failing at render time)."""
    try:
        if isinstance(node, nodes.Filter) and node.name in _FILTER_CHECKS and node.node is not None:
            # what is not constant counts as nothing: only what is certain is refused
            _FILTER_CHECKS[node.name](_const(node.node, ""), *(_const(a, None) for a in node.args),
                                      **{k.key: _const(k.value, None) for k in node.kwargs})
        elif isinstance(node, (nodes.Mul, nodes.Pow, nodes.Mod)):
            left, right = _const(node.left), _const(node.right)
            if left is not _UNKNOWN and right is not _UNKNOWN:
                _check_binop({nodes.Mul: "*", nodes.Pow: "**", nodes.Mod: "%"}[type(node)], left, right)
            elif isinstance(node, nodes.Mod):
                _check_format(left)
    except RenderLimit as exc:
        return str(exc)
    except (TypeError, ValueError):  # arguments of the wrong type: the render says so
        return None
    return None


_UNKNOWN = object()


def _const(node: nodes.Node, unknown: Any = _UNKNOWN) -> Any:
    """The node's value if it is a constant expression (literals and capped operators on them)."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, (nodes.Mul, nodes.Pow)):
        left, right = _const(node.left), _const(node.right)
        if left is _UNKNOWN or right is _UNKNOWN:
            return unknown
        _check_binop("*" if isinstance(node, nodes.Mul) else "**", left, right)
        return left * right if isinstance(node, nodes.Mul) else left ** right
    if isinstance(node, nodes.Neg):
        value = _const(node.node)
        return -value if isinstance(value, (int, float)) else unknown
    return unknown


class _Watchdog:
    """One daemon thread that interrupts renders running past their deadline: it raises
    RenderTimeout in the rendering thread (CPython's PyThreadState_SetAsyncExc), so an honest
    render costs no thread of its own."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadlines: dict[int, float] = {}  # thread id -> monotonic deadline
        self._thread: threading.Thread | None = None

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        tid = threading.get_ident()
        with self._cond:
            self._deadlines[tid] = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="render-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:  # under the lock: once removed, this thread is never interrupted
                self._deadlines.pop(tid, None)

    def _watch(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for tid, due in list(self._deadlines.items()):
                    if due <= now:
                        del self._deadlines[tid]
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid),
                                                                   ctypes.py_object(RenderTimeout))
                self._cond.wait(min(self._deadlines.values(), default=now + 3600) - now)

    def _forked(self) -> None:  # a forked child has no watchdog thread: it starts its own
        self._cond, self._deadlines, self._thread = threading.Condition(), {}, None


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_watchdog._forked)


def render_bounded(template: jinja2.Template, values: dict[str, Any]) -> str:
    """The template rendered within the limits; RenderLimit when it breaks one."""
    if _budget.chars is not None:  # a render inside a render (none today): one budget for both
        return "".join(template.generate(values))
    _budget.chars, _budget.steps = MAX_RENDER_CHARS, MAX_RANGE_STEPS
    parts: list[str] = []
    try:
        with _watchdog.deadline(MAX_RENDER_S):
            written = 0
            for part in template.generate(values):  # literal text is counted here
                written += len(part)
                if written > MAX_RENDER_CHARS:
                    raise RenderLimit(f"the rendered text passes {MAX_RENDER_CHARS:,} characters")
                parts.append(part)
    except RenderTimeout:
        raise RenderLimit(f"the render took more than {MAX_RENDER_S:g} s") from None
    finally:
        _budget.chars = None
    return "".join(parts)
