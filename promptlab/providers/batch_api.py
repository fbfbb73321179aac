"""The provider's Batch API as LiteLLM exposes it (files and batches calls): which provider serves
a model, one call with the model's key and retries, and what a batched request costs. The batch
executor (evaluation/batch.py) drives it."""

from __future__ import annotations

import asyncio
import random
import warnings
from typing import Any

from promptlab.config import ModelConfig
from promptlab.errors import AuthError, UsageError
from promptlab.providers.bounds import MAX_REPLY_BYTES
from promptlab.providers.errors import classify, raise_if_cancelled
from promptlab.providers.litellm_loader import litellm

# litellm (1.106) makes OpenAI's file-content coroutine twice per afile_content and drops one unstarted:
# nothing is fetched twice, only this warning would reach the terminal
warnings.filterwarnings("ignore", message="coroutine 'OpenAIFilesAPI.afile_content' was never awaited",
                        category=RuntimeWarning)

# LiteLLM's providers with both a files and a batches API (an OpenAI-compatible server is `openai`
# with an api_base).
PROVIDERS = ("openai", "azure", "vertex_ai", "bedrock")
OPENAI_COMPATIBLE = ("openai", "hosted_vllm", "litellm_proxy")  # with an api_base: OpenAI's shapes
ENDPOINT = "/v1/chat/completions"
FILE_TIMEOUT_S = 600.0  # a files call moves up to max_bytes: more time than a chat call


def provider(model: ModelConfig) -> str:
    """The LiteLLM provider whose files and batches calls serve this model: openai for a bare
    OpenAI model name and for any OpenAI-compatible server (an api_base); "" when LiteLLM cannot
    tell, which has no batches either."""
    if model.api_base and model.route in OPENAI_COMPATIBLE:
        return "openai"
    if model.route:
        return model.route
    try:
        return litellm().get_llm_provider(model.model)[1]
    except Exception:  # litellm's BadRequestError: "LLM Provider NOT provided"
        return ""


def check(model: ModelConfig) -> None:
    """Batch mode needs a provider with a batch API: anything else is bad input."""
    name = provider(model)
    if name not in PROVIDERS:
        raise UsageError(f"model '{model.alias or model.model}': its provider ({name or 'unknown'}) has no "
                         f"batch API in LiteLLM (batch mode works with {', '.join(PROVIDERS)}, and "
                         f"OpenAI-compatible servers as openai/… with an api_base); evaluate it per call")


class BatchClient:
    """Files and batches calls; transient failures retried (`retries` times), a refused key an AuthError."""

    def __init__(self, retries: int, timeout: float):
        self.retries, self.timeout = retries, timeout
        self.prices: dict[str, Any] = {}

    async def call(self, target: ModelConfig, method: str, **kwargs: Any) -> Any:
        """One files/batches call with the model's key and api_base; transient failures retried."""
        lib = litellm()
        kwargs.update(custom_llm_provider=provider(target), timeout=self.timeout, max_retries=0)
        if target.api_base:
            kwargs["api_base"] = target.api_base
        key = target.api_key()
        if key:
            kwargs["api_key"] = key
        from promptlab.providers.litellm_bound import reply_limit

        # a batch's output file holds every reply of the batch: read whole, as before (not bounded
        # per reply); the other calls' replies are small JSON, bounded like a chat reply
        limit = None if method == "afile_content" else MAX_REPLY_BYTES
        for attempt in range(self.retries + 1):
            try:
                with reply_limit(limit):
                    response = await getattr(lib, method)(**kwargs)
            except Exception as exc:  # every provider failure becomes a CallError
                raise_if_cancelled()
                error = classify(exc)
                if error.kind == "auth":
                    raise AuthError(f"{target.alias or target.model}: authentication failed ({error.status}); "
                                    f"check {target.api_key_env or 'the API key'}") from None
                if not error.transient or attempt == self.retries:
                    raise error from None
                await asyncio.sleep(error.retry_after if error.retry_after is not None
                                    else random.uniform(0, min(15.0, 0.25 * 2 ** attempt)))
            else:
                raise_if_cancelled()
                return response
        raise AssertionError("unreachable")

    def cost(self, model: ModelConfig, prompt_tokens: int, completion_tokens: int) -> float | None:
        """The provider's batch price when LiteLLM knows it (else half its listed price); None
        ("n/a") for a model LiteLLM has no price for."""
        lib = litellm()
        if model.model not in self.prices:
            try:
                info = lib.get_model_info(model=model.model)
            except Exception:  # not in LiteLLM's price map
                info = None
            priced = info and any(info.get(k) is not None for k in (
                "input_cost_per_token", "input_cost_per_token_batches"))
            self.prices[model.model] = info if priced else None
        if self.prices[model.model] is None:
            return None
        usage = lib.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          total_tokens=prompt_tokens + completion_tokens)
        prompt_cost, completion_cost = lib.cost_calculator.batch_cost_calculator(usage=usage, model=model.model)
        return prompt_cost + completion_cost
