"""What a call cost: LiteLLM's price map, read without importing litellm to find whether a model is
priced (the direct path never imports litellm for a self-hosted model)."""

from __future__ import annotations

import functools
import json
from importlib.util import find_spec
from pathlib import Path

from promptlab.config import ModelConfig
from promptlab.providers.litellm_loader import litellm


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
