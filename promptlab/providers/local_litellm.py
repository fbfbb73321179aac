"""The embedded local model as LiteLLM's custom provider ``local``, for code that calls LiteLLM
itself (the gateway calls `local.py` directly and never needs this).

    register(litellm)   ->  litellm.completion(model="local/gemma-3-270m", ...) works

The model's failures become LiteLLM's own exception types by their status (404: NotFoundError…).
"""

from __future__ import annotations

import time
from typing import Any

from litellm import CustomLLM
from litellm.llms.custom_llm import CustomLLMError

from promptlab.providers import local as engine
from promptlab.providers.llama import LocalModelError
from promptlab.providers.local import N_CTX, PACKAGED_MODELS, PROVIDER


def _fill_model_response(model_response: Any, model: str, result: dict[str, Any]) -> Any:
    import litellm

    choice = result["choices"][0]
    usage = result.get("usage") or {}
    model_response.choices[0].message.content = choice.get("text", "").strip()
    model_response.choices[0].finish_reason = choice.get("finish_reason") or "stop"
    model_response.created = int(time.time())
    model_response.model = f"{PROVIDER}/{model}"
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    completion_tokens = int(usage.get("completion_tokens", 0))
    model_response.usage = litellm.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    return model_response


def _input_list(input: Any) -> list[str]:
    if isinstance(input, str):
        return [input]
    return [str(x) for x in input]


def _fill_embedding_response(model_response: Any, model: str, vectors: list[list[float]], tokens: int) -> Any:
    import litellm

    model_response.model = f"{PROVIDER}/{model}"
    model_response.object = "list"
    model_response.data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    model_response.usage = litellm.Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
    return model_response


def _litellm_error(exc: LocalModelError) -> CustomLLMError:
    return CustomLLMError(status_code=exc.status_code, message=exc.message)


class LocalLLM(CustomLLM):
    """LiteLLM handler for ``local/...`` models (llama.cpp, in-process)."""

    def _prepare(self, model: str, messages: list, optional_params: dict) -> tuple[str, str, dict]:
        try:
            path = engine.resolve_model_path(model)
        except LocalModelError as exc:
            raise _litellm_error(exc) from exc
        _register_cost(model)
        prompt, extra_stops = engine.messages_to_prompt(messages)
        return path, prompt, engine._sampling(optional_params, extra_stops)

    def completion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                   model_response: Any, print_verbose: Any, encoding: Any, api_key: Any,
                   logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> Any:
        path, prompt, sampling = self._prepare(model, messages, optional_params)
        try:
            return _fill_model_response(model_response, model, engine.complete_prompt(path, prompt, **sampling))
        except LocalModelError as exc:
            raise _litellm_error(exc) from exc

    async def acompletion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                          model_response: Any, print_verbose: Any, encoding: Any, api_key: Any,
                          logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> Any:
        path, prompt, sampling = self._prepare(model, messages, optional_params)
        try:
            result = await engine._run_on_model_thread(path, engine.complete_prompt, path, prompt, **sampling)
        except LocalModelError as exc:
            raise _litellm_error(exc) from exc
        return _fill_model_response(model_response, model, result)

    def embedding(self, model: str, input: list, model_response: Any, print_verbose: Any,
                  logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> Any:
        try:
            path = engine.resolve_model_path(model)
            _register_cost(model)
            vectors, tokens = engine.embed_texts(path, _input_list(input))
        except LocalModelError as exc:
            raise _litellm_error(exc) from exc
        return _fill_embedding_response(model_response, model, vectors, tokens)

    async def aembedding(self, model: str, input: list, model_response: Any, print_verbose: Any,
                         logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> Any:
        try:
            path = engine.resolve_model_path(model)
            _register_cost(model)
            vectors, tokens = await engine._run_on_model_thread(path, engine.embed_texts, path, _input_list(input))
        except LocalModelError as exc:
            raise _litellm_error(exc) from exc
        return _fill_embedding_response(model_response, model, vectors, tokens)


# --------------------------------------------------------------------------- registration
_HANDLER: LocalLLM | None = None
_COSTED: set[str] = set()


def _register_cost(model: str) -> None:
    """Price ``local/<model>`` at 0 so litellm reports cost 0, not unknown."""
    import litellm

    name = model[len(PROVIDER) + 1 :] if model.startswith(PROVIDER + "/") else model
    if name in _COSTED:
        return
    entry = {
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
        "cache_creation_input_token_cost": 0.0,
        "cache_read_input_token_cost": 0.0,
        "litellm_provider": PROVIDER,
        "mode": "chat",
        "max_input_tokens": N_CTX,
        "max_output_tokens": N_CTX,
        "max_tokens": N_CTX,
    }
    litellm.register_model({f"{PROVIDER}/{name}": entry}, custom_llm_provider=PROVIDER)
    _COSTED.add(name)


def register(litellm_module: Any) -> LocalLLM:
    """Make ``local/...`` models callable through ``litellm_module`` (idempotent)."""
    global _HANDLER
    if _HANDLER is None:
        _HANDLER = LocalLLM()
    current = [item for item in (litellm_module.custom_provider_map or []) if item.get("provider") != PROVIDER]
    litellm_module.custom_provider_map = current + [{"provider": PROVIDER, "custom_handler": _HANDLER}]
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
    for name in PACKAGED_MODELS:
        _register_cost(name)
    return _HANDLER
