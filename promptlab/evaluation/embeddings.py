"""Embeddings a prompt's demo selector compares, in a run and outside one, through the
store's response cache (a text embedded once is never sent again)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from promptlab.config import Settings
from promptlab.errors import ProviderError
from promptlab.providers.errors import CallError
from promptlab.providers.gateway import Gateway
from promptlab.evaluation.sink import make_gateway
from promptlab.prompting.render import demo_text
from promptlab.store import Store

if TYPE_CHECKING:
    from promptlab.evaluation.plan import RunPlan


async def embed_demo_texts(gateway: Gateway, plans: list[RunPlan], settings: Settings) -> None:
    """The vectors a demo selector that compares embeddings needs: of its pool's inputs and the
    run's, one cached request per text (a text embedded once is never sent again)."""
    for plan in plans:
        selector = plan.prompt.content.demo_selector
        if selector is None or selector.similarity != "embedding":
            continue
        texts = sorted({demo_text(c.inputs, plan.signature) for c in (*plan.demo_pool, *plan.cases)})
        model = settings.resolve_model(selector.embedding_model)
        try:
            vectors = await asyncio.gather(*(gateway.embed(model, [text]) for text in texts))
        except CallError as exc:
            raise ProviderError(f"demo selector of {plan.prompt.ref}: embedding model "
                                f"{selector.embedding_model}: {exc.kind}: {exc}") from None
        plan.demo_vectors = {text: vector[0] for text, vector in zip(texts, vectors)}


def embed_texts(store: Store, settings: Settings, model_name: str, texts: list[str]) -> list[list[float]]:
    """Embeddings outside a run (`prompt try`, `load_prompt` with an embedding demo selector),
    through the store's response cache: the texts a run embedded cost no request."""
    model = settings.resolve_model(model_name)
    gateway = make_gateway(store, settings)

    async def embed() -> list[list[float]]:
        try:
            return await gateway.embed(model, texts)
        finally:
            await gateway.aclose()

    try:
        vectors = asyncio.run(embed())
    except CallError as exc:
        raise ProviderError(f"embedding model {model_name}: {exc.kind}: {exc}") from None
    gateway.cache.close()
    gateway.cache.check()
    return vectors
