"""LiteLLM's replies read no further than the reply bound, as the direct path's are.

LiteLLM reads a whole reply body into memory before promptlab sees it (a 200 MB reply cost 1.3 GB
and came back as a retried `server` error). Every async HTTP client LiteLLM makes — its own handler's
and the openai SDK's it builds — gets its transport from `AsyncHTTPHandler.create_async_transport`
(and, behind an HTTP(S)_PROXY, from `create_httpx_proxy_mounts`): `install` wraps what they return
so that each reply's body stream raises `too_large` past the bound of the call reading it. The bound
travels in a context variable that the gateway sets around each LiteLLM call (`reply_limit`).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, AsyncIterator, Iterator

import httpx

from promptlab.providers.bounds import MAX_REPLY_BYTES, bounded

_LIMIT: ContextVar[int | None] = ContextVar("promptlab_reply_limit", default=MAX_REPLY_BYTES)
_TRANSPORT_FACTORIES = ("create_async_transport", "_create_async_transport")
_MOUNT_FACTORIES = ("create_httpx_proxy_mounts", "_create_httpx_proxy_mounts")


@contextmanager
def reply_limit(limit: int | None) -> Iterator[None]:
    """Replies LiteLLM reads inside are bounded to `limit` bytes (None: not bounded)."""
    token = _LIMIT.set(limit)
    try:
        yield
    finally:
        _LIMIT.reset(token)


class BoundedStream(httpx.AsyncByteStream):
    """A reply body that stops (too_large) once it passes `limit` bytes."""

    def __init__(self, inner: Any, limit: int) -> None:
        self.inner, self.limit = inner, limit

    def __aiter__(self) -> AsyncIterator[bytes]:
        return bounded(self.inner.__aiter__(), self.limit)

    async def aclose(self) -> None:
        await self.inner.aclose()


def bound(transport: Any) -> Any:
    """The transport, its replies bounded by the limit of the call that sends each request. The
    transport object itself keeps its class (LiteLLM checks it to close aiohttp sessions): only its
    `handle_async_request` is wrapped."""
    if getattr(transport, "_promptlab_bounded", False):
        return transport
    send = transport.handle_async_request

    async def handle_async_request(request: httpx.Request) -> httpx.Response:
        response = await send(request)
        limit = _LIMIT.get()
        if limit is not None:
            response.stream = BoundedStream(response.stream, limit)
        return response

    transport.handle_async_request = handle_async_request
    transport._promptlab_bounded = True
    return transport


def install(handler: Any) -> None:
    """Wrap the transports LiteLLM's `AsyncHTTPHandler` makes (idempotent). A LiteLLM without the
    factory it builds them with is refused loudly: its replies would be unbounded."""
    if getattr(handler, "_promptlab_bounded", False):
        return
    transports = [name for name in _TRANSPORT_FACTORIES if hasattr(handler, name)]
    if not transports:
        raise RuntimeError("this LiteLLM has no AsyncHTTPHandler.create_async_transport: promptlab cannot "
                           "bound its replies; install the LiteLLM version pyproject.toml names")
    make = getattr(handler, transports[0])

    def create_async_transport(*args: Any, **kwargs: Any) -> Any:
        inner = make(*args, **kwargs)
        if inner is None:  # "httpx's default" (aiohttp's transport switched off): made here, to bound it
            verify = kwargs.get("ssl_context") or kwargs.get("ssl_verify") is not False
            inner = httpx.AsyncHTTPTransport(verify=verify, cert=kwargs.get("cert"),
                                             **({"limits": kwargs["limits"]} if "limits" in kwargs else {}))
        return bound(inner)

    for name in transports:
        setattr(handler, name, staticmethod(create_async_transport))
    mounts = [name for name in _MOUNT_FACTORIES if hasattr(handler, name)]
    if mounts:
        make_mounts = getattr(handler, mounts[0])

        def create_httpx_proxy_mounts(*args: Any, **kwargs: Any) -> Any:
            found = make_mounts(*args, **kwargs)
            return found and {pattern: mount and bound(mount) for pattern, mount in found.items()}

        for name in mounts:
            setattr(handler, name, staticmethod(create_httpx_proxy_mounts))
    handler._promptlab_bounded = True
