"""An in-process fake model: a LiteLLM custom provider answering from rules, so the runner and the
services can be tested without a server (the loopback HTTP server stays for the real HTTP path).

    with rules_model([["great", "positive"]], default="neutral") as model:   # a ModelConfig
        ... Gateway().complete(model, messages) ...

A rule [needle, reply] answers `reply` when the last message contains `needle`; the first match wins.
A reply that is an exception is raised instead (e.g. litellm's BadRequestError, a 400).
`model.calls` lists the last message of every call the provider received.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from promptlab.config import ModelConfig
from promptlab.providers.gateway import litellm

PROVIDER = "promptlab-test-rules"


class RulesModel(ModelConfig):
    calls: list[str] = []


@contextlib.contextmanager
def rules_model(rules: list[list[Any]], default: str = "") -> Iterator[RulesModel]:
    lib = litellm()
    from litellm import CustomLLM
    from litellm.utils import custom_llm_setup

    model = RulesModel(alias="rules", model=f"{PROVIDER}/rules", calls=[])

    class Rules(CustomLLM):
        async def acompletion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                              model_response: Any, *args: Any, **kwargs: Any) -> Any:
            text = str(messages[-1]["content"])
            model_calls.append(text)
            reply = next((r for needle, r in rules if needle in text), default)
            if isinstance(reply, Exception):
                raise reply
            model_response.choices[0].message.content = reply
            model_response.usage = lib.Usage(prompt_tokens=len(text.split()), completion_tokens=1,
                                             total_tokens=len(text.split()) + 1)
            return model_response

    model_calls = model.calls
    before = list(lib.custom_provider_map or [])
    lib.custom_provider_map = [*before, {"provider": PROVIDER, "custom_handler": Rules()}]
    custom_llm_setup()
    try:
        yield model
    finally:
        lib.custom_provider_map = before
        custom_llm_setup()
