"""The direct path for plain OpenAI-compatible endpoints: one shared aiohttp session, no litellm.

LiteLLM's per-call work (the openai SDK's request transform, cost lookups, its
response objects) is most of an eval's CPU, and httpx, under both, spends more
on a request than the rest of promptlab (its pool rescans every connection per
request). For an `openai/…` or `hosted_vllm/…` model with an `api_base` the
request is a plain POST, so the gateway sends it itself over aiohttp (its C
parser: a tenth of httpx's CPU a request); retries, rate limits, the cache and
error kinds stay the gateway's, and failures map to the same CallErrors as
litellm's (`errors.status_error`). Switched off per model (`fast_path = false`)
or for the process (`PROMPTLAB_FAST_PATH=0`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from promptlab import safe_json
from promptlab.providers.bounds import MAX_REPLY_BYTES, read_bounded
from promptlab.providers.errors import CallError, cut, status_error

# what a chat request body never carries (the gateway's own arguments)
_NOT_BODY = ("model", "timeout", "api_base", "api_key", "num_retries", "max_retries")
MAX_CONNECTIONS = 1000  # as the openai SDK's pool: concurrency is the gateway's to bound


class Transport:
    """aiohttp behind the one request the direct path makes: `post` sends a body and returns the
    reply's status, headers and bytes (at most `max_bytes`: bounds.read_bounded). One per event
    loop (its connections belong to that loop)."""

    def __init__(self) -> None:
        # no trust_env: it looks the proxy up again in a worker thread for every request (and
        # .netrc, whose login would clash with our Authorization header); `_proxy` does it once
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS))
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._proxies: dict[str, dict[str, Any]] = {}

    async def post(self, url: str, content: bytes, headers: dict[str, str], timeout: float,
                   max_bytes: int = MAX_REPLY_BYTES) -> tuple[int, Any, bytes]:
        async with self.session.post(url, data=content, headers=headers, timeout=self._timeout(timeout),
                                     allow_redirects=False, **self._proxy(url)) as response:
            return response.status, response.headers, await read_bounded(
                response.content.iter_chunked(64 * 1024), max_bytes)

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """The bounds httpx put on each phase: connecting and each wait for the reply's bytes."""
        if seconds not in self._timeouts:
            self._timeouts[seconds] = aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds)
        return self._timeouts[seconds]

    def _proxy(self, url: str) -> dict[str, Any]:
        """The proxy HTTP(S)_PROXY names for this endpoint unless NO_PROXY exempts it, as httpx
        and the SDKs honour them (looked up once an endpoint)."""
        if url not in self._proxies:
            from aiohttp.helpers import get_env_proxy_for_url
            from yarl import URL

            try:
                proxy, auth = get_env_proxy_for_url(URL(url))
                self._proxies[url] = {"proxy": proxy, "proxy_auth": auth}
            except LookupError:  # none for it
                self._proxies[url] = {}
        return self._proxies[url]


class DirectClient:
    """The direct path's requests, over one `Transport` per event loop; replies are read up to
    `max_reply_bytes`."""

    def __init__(self, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.max_reply_bytes = max_reply_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: Transport | None = None

    def client(self) -> Transport:
        loop = asyncio.get_running_loop()
        if self._transport is None or self._loop is not loop:
            self._transport, self._loop = Transport(), loop
        return self._transport

    async def aclose(self) -> None:
        if self._transport is not None and self._loop is asyncio.get_running_loop():
            await self._transport.session.close()
        self._transport = self._loop = None

    async def chat(self, kwargs: dict) -> dict:
        """POST {api_base}/chat/completions; the reply's JSON, or a CallError as litellm's path raises."""
        body = {k: v for k, v in kwargs.items() if k not in _NOT_BODY}
        body.update(body.pop("extra_body", None) or {}, model=kwargs["model"].split("/", 1)[1])
        headers = {**(body.pop("extra_headers", None) or {}),
                   "Authorization": f"Bearer {kwargs['api_key']}", "Content-Type": "application/json"}
        try:
            status, reply_headers, raw = await self.client().post(
                kwargs["api_base"].rstrip("/") + "/chat/completions",
                content=json.dumps(body, ensure_ascii=False).encode(), headers=headers, timeout=kwargs["timeout"],
                max_bytes=self.max_reply_bytes)
        except asyncio.TimeoutError as exc:  # aiohttp's connect and read timeouts are ones too
            raise CallError("timeout", cut(str(exc)) or "timed out", status=408, transient=True) from None
        except aiohttp.ClientError as exc:
            raise CallError("connection", cut(f"{type(exc).__name__}: {exc}"), transient=True) from None
        if status >= 300:
            raise status_error(status, cut(_error_message(raw, status)), reply_headers.get("retry-after"))
        try:
            data = safe_json.loads(raw)
        except ValueError:  # not JSON, or nested past the bound
            data = None
        if not isinstance(data, dict):
            raise CallError("bad_response", f"{kwargs['model']}: reply is not a JSON object")
        return data


def _error_message(raw: bytes, status: int) -> str:
    """The provider's own message (OpenAI's {"error": {"message"}} shape), else the body."""
    try:
        error = safe_json.loads(raw).get("error")
    except (ValueError, AttributeError):
        error = None
    message = error.get("message") if isinstance(error, dict) else error
    return f"{status} {message if isinstance(message, str) else raw.decode('utf-8', errors='replace')}"

