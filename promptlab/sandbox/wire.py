"""The harness's wire: values as tagged JSON (`encode`/`decode`, data only, never executed or
unpickled) and one protocol line at a time over a pipe (`Channel`). Standard library only: the
harness loads it by path in a child that has neither promptlab nor site-packages on sys.path."""

from __future__ import annotations

import json
import os

MAX_MESSAGE = 16 * 1024 * 1024      # bytes in one protocol line
MAIN_PID = os.getpid()


class RemoteError(Exception):
    """An exception raised by the code whose type is not a builtin exception."""


class LinkBroken(BaseException):
    """The code's process ended or broke the protocol: no later test can run.

    A BaseException, so that a test's ``except Exception`` cannot swallow it.
    """

    def __init__(self, message: str, lost: bool):
        super().__init__(message)
        self.lost = lost          # the pipe closed (the process ended), rather than garbage arrived


# --------------------------------------------------------------------------- values on the wire

_SEQUENCES = {list: "L", tuple: "T", set: "S", frozenset: "F"}
MUTABLE = (list, dict, set, bytearray)


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
        if os.getpid() != MAIN_PID:      # a forked child of the code returned into the harness
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


