"""How a failed model call is described, whichever path made it: CallError (a kind, transient or
not), the mapping from HTTP statuses and client exceptions to kinds, and the error-message cut
(redacted before it is cut)."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Iterator

from promptlab.redact import redact

MAX_RETRY_AFTER_S = 60.0


class CallError(Exception):
    """A failed model call: kind (rate_limit, server, timeout, bad_request, …), transient or not."""

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 transient: bool = False, retry_after: float | None = None, attempts: int = 1):
        super().__init__(redact(message))  # it becomes results.error and printed errors
        self.kind, self.status, self.transient = kind, status, transient
        self.retry_after, self.attempts = retry_after, attempts


_MISSING_CREDENTIALS = re.compile(
    r"missing credentials|api[_ ]?key (?:is )?(?:not set|missing|required)|no api[_ ]?key|"
    r"(?:must|need to) (?:set|provide|pass) (?:an? |the )?api[_ ]?key|AuthenticationError", re.I)
_RATE_LIMITED = re.compile(r"rate[\s_\-]*limit|service tier capacity exceeded", re.I)  # as litellm's
_TRANSIENT_STATUS = {408: "timeout", 409: "conflict", 425: "too_early", 429: "rate_limit"}
# error kinds that say nothing about the prompt, only that the provider did not answer (or
# refused the key): a resumed run or optimization asks again for the items that ended so
PROVIDER_FAILURES = frozenset({"timeout", "connection", "server", "rate_limit", "conflict", "too_early", "auth",
                               "reply_timeout"})
_PERMANENT_STATUS = {400: "bad_request", 401: "auth", 402: "payment", 403: "auth",
                     404: "not_found", 413: "too_large", 422: "unprocessable"}


# LiteLLM's signs of a context overflow in an error message (litellm's ExceptionCheckers), so
# that the direct path, which never imports litellm, tells them apart the same way
_CONTEXT_WINDOW = re.compile(
    r"exceed context limit|this model's maximum context length is|model's maximum context limit|"
    r"is longer than the model's context length|input tokens exceed the configured limit|"
    r"exceeds the available context size|exceeds the maximum number of tokens allowed", re.I)


def cut(text: str) -> str:
    """An error message's first line, at most 300 characters (redacted before it is cut: a key
    split at the cut would escape the mask)."""
    return redact(text).splitlines()[0][:300] if text else ""


def raise_if_cancelled() -> None:
    """Re-raise a cancellation (Ctrl-C cancels the main task) that an HTTP client turned into
    its own error or swallowed: the task still counts the request, and retrying would carry on
    as if nothing had been asked."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def classify(exc: BaseException) -> CallError:
    """Map any provider exception to a CallError (transient: worth retrying). A CallError raised
    beneath a client (the reply bound, inside LiteLLM's transport) keeps its kind through the
    client's own exceptions wrapped around it; a body too deeply nested for the client's JSON
    parser is a bad response (LiteLLM calls it a server error, which would be asked again)."""
    if isinstance(exc, CallError):
        return exc
    for inner in _beneath(exc):
        if isinstance(inner, CallError):
            return inner
        if isinstance(inner, RecursionError):  # a JSON body nested past what the client parses
            return CallError("bad_response", f"the reply cannot be parsed: {cut(str(inner))}")
    name = type(exc).__name__
    message = cut(str(exc)) or name
    if isinstance(exc, asyncio.TimeoutError) or name in ("Timeout", "APITimeoutError"):
        return CallError("timeout", message or "timed out", status=408, transient=True)
    if name == "ContextWindowExceededError":
        return CallError("context_window", message, status=400)
    if name == "ContentPolicyViolationError":
        return CallError("content_policy", message, status=400)
    if name == "APIConnectionError" and not _MISSING_CREDENTIALS.search(message):
        return CallError("connection", message, transient=True)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) or _MISSING_CREDENTIALS.search(message):
        return status_error(status if isinstance(status, int) else None, message, _retry_after(exc))
    return CallError("error", f"{name}: {message}")


def _beneath(exc: BaseException, depth: int = 8) -> Iterator[BaseException]:
    """The exceptions `exc` was raised from or while handling (a few levels down)."""
    seen = exc.__cause__ or exc.__context__
    while seen is not None and depth > 0:
        yield seen
        seen, depth = seen.__cause__ or seen.__context__, depth - 1


def status_error(status: int | None, message: str, retry_after: Any = None) -> CallError:
    """An HTTP failure by its status (a missing or rejected key is never transient)."""
    if _MISSING_CREDENTIALS.search(message):
        return CallError("auth", message, status=status or 401)
    if status != 429 and _RATE_LIMITED.search(message):  # litellm reads these as 429s, whatever the status
        status = 429
    if status is None:
        return CallError("error", message)
    if status != 429 and _CONTEXT_WINDOW.search(message):  # so does litellm, whatever the status
        return CallError("context_window", message, status=status)
    if status in _TRANSIENT_STATUS:
        return CallError(_TRANSIENT_STATUS[status], message, status=status, transient=True,
                         retry_after=_seconds(retry_after))
    if status >= 500:
        return CallError("server", message, status=status, transient=True, retry_after=_seconds(retry_after))
    return CallError(_PERMANENT_STATUS.get(status, "client"), message, status=status)


def _retry_after(exc: BaseException) -> Any:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "litellm_response_headers", None) or {}
    return headers.get("retry-after") if hasattr(headers, "get") else None


def _seconds(value: Any) -> float | None:
    """A Retry-After value in seconds, capped; None when absent or not a number."""
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None
