"""The direct path for plain OpenAI-compatible endpoints: one shared httpx client, no litellm.

LiteLLM's per-call work (the openai SDK's request transform, cost lookups, its
response objects) is most of an eval's CPU. For an `openai/…` or `hosted_vllm/…`
model with an `api_base` the request is a plain POST, so the gateway sends it
itself; retries, rate limits, the cache and error kinds stay the gateway's, and
failures map to the same CallErrors as litellm's (`lm.status_error`).
Switched off per model (`fast_path = false`) or for the process
(`PROMPTLAB_FAST_PATH=0`).
"""

from __future__ import annotations

import asyncio
import functools
import json
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx

from promptlab.config import ModelConfig
from promptlab.providers.gateway import CallError, cut, litellm, status_error

# what a chat request body never carries (the gateway's own arguments)
_NOT_BODY = ("model", "timeout", "api_base", "api_key", "num_retries", "max_retries")


class DirectClient:
    """One httpx.AsyncClient per event loop (a client's connections belong to the loop that made them)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # the openai SDK's pool limits: concurrency is the gateway's to bound
            self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000,
                                                                 max_keepalive_connections=100))
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = self._loop = None

    async def chat(self, kwargs: dict) -> dict:
        """POST {api_base}/chat/completions; the reply's JSON, or a CallError as litellm's path raises."""
        body = {k: v for k, v in kwargs.items() if k not in _NOT_BODY}
        body.update(body.pop("extra_body", None) or {}, model=kwargs["model"].split("/", 1)[1])
        headers = {**(body.pop("extra_headers", None) or {}),
                   "Authorization": f"Bearer {kwargs['api_key']}", "Content-Type": "application/json"}
        try:
            response = await self.client().post(
                kwargs["api_base"].rstrip("/") + "/chat/completions",
                content=json.dumps(body, ensure_ascii=False).encode(), headers=headers,
                timeout=kwargs["timeout"])
        except httpx.TimeoutException as exc:
            raise CallError("timeout", cut(str(exc)) or "timed out", status=408, transient=True) from None
        except httpx.TransportError as exc:
            raise CallError("connection", cut(f"{type(exc).__name__}: {exc}"), transient=True) from None
        if response.status_code >= 300:
            raise status_error(response.status_code, cut(_error_message(response)),
                               response.headers.get("retry-after"))
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CallError("bad_response", f"{kwargs['model']}: reply is not a JSON object")
        return data


def _error_message(response: Any) -> str:
    """The provider's own message (OpenAI's {"error": {"message"}} shape), else the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    message = error.get("message") if isinstance(error, dict) else error
    return f"{response.status_code} {message if isinstance(message, str) else response.text}"


@functools.cache
def _price_map_providers() -> dict[str, str]:
    """Each model LiteLLM's (local) price map prices → its provider, read without importing litellm."""
    spec = find_spec("litellm")
    folder = Path(next(iter(spec.submodule_search_locations)))
    with open(folder / "model_prices_and_context_window_backup.json", encoding="utf-8") as f:
        return {name: entry.get("litellm_provider") for name, entry in json.load(f).items()
                if isinstance(entry, dict)}


def cost(model: ModelConfig, prompt_tokens: int, completion_tokens: int) -> float | None:
    """LiteLLM's price for these tokens; None ("n/a") when its price map has no entry for this
    model under this provider (as litellm's own path answers), found without importing litellm: a
    self-hosted model usually is not priced."""
    name = model.model.split("/", 1)[1]
    providers = _price_map_providers()
    if model.route not in (providers.get(model.model), providers.get(name)):
        return None
    prompt, completion = litellm().cost_per_token(
        model=name, custom_llm_provider=model.route,
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    return prompt + completion
