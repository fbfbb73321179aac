"""Embedding similarity: cosine between the output and the expected text.

    {"name": "embedding_similarity", "threshold": 0.85, "model": "openai/text-embedding-3-small"}

The embedding model is the ``model`` argument (an alias or any LiteLLM
embedding model), else ``[defaults] embedding_model`` (default ``local``: the
embedded Gemma model, offline). Vectors come through the run's gateway, so
each text's vector is cached in the store like a reply: a re-run, or another
run with the same expected texts, embeds nothing again.

Per result: value = cosine similarity (-1..1; in practice 0..1), passed =
value >= ``threshold`` (default 0.8). The compared field follows the shared
rules (``field``, else the signature's first output, else the only expected
key). An empty output scores 0 without a call; a case without an expected
value is unscored (value None); a failed embedding call makes the item an
error (`ScoringError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from promptlab.scorers.base import MetricContext, MetricError, Score, ScoreInput, ScoringError
from promptlab.scorers.registry import Early, as_text, expected_value, need_field, text_value
from promptlab.scorers.stats import summarize_scores

if TYPE_CHECKING:
    from promptlab.config import ModelConfig
    from promptlab.providers.gateway import Gateway


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity; 0 when either vector is all zeros."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"vectors of different sizes ({x.size} and {y.size})")
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    if norm == 0.0 or not np.isfinite(norm):
        return 0.0
    return float(np.clip(np.dot(x, y) / norm, -1.0, 1.0))


class EmbeddingMetric:
    """Built by `embedding_similarity`; `bind(gateway)` before scoring."""

    def __init__(self, spec: dict[str, Any], model: "ModelConfig", field: str | None, threshold: float):
        self.name, self.spec = "embedding_similarity", spec
        self.model = model
        self._field, self._threshold = field, threshold
        self._gateway: Gateway | None = None

    def bind(self, gateway: "Gateway") -> None:
        self._gateway = gateway

    async def score(self, item: ScoreInput) -> Score:
        if self._gateway is None:
            raise ScoringError("embedding_similarity: no model gateway bound "
                               "(score through promptlab.evaluation.evaluate.execute)")
        try:
            name = need_field(item, self._field)
            expected = as_text(expected_value(item, name))
            output = text_value(item, self._field)
        except Early as early:
            return early.score
        if not output.strip():
            return Score(0.0, False, {"reason": "the output is empty"})
        from promptlab.providers.gateway import CallError

        try:
            out_vec, exp_vec = await self._gateway.embed(self.model, [output, expected])
        except CallError as exc:
            raise ScoringError(f"embedding_similarity: the embedding call failed ({exc.kind}: {exc})") from None
        try:
            value = cosine(out_vec, exp_vec)
        except ValueError as exc:
            raise ScoringError(f"embedding_similarity: {exc}") from None
        return Score(value, value >= self._threshold, {"cosine": round(value, 4)})

    def summarize(self, scores: list[Score]) -> dict[str, Any]:
        return {**summarize_scores(scores), "embedding_model": self.model.alias or self.model.model}

    def __repr__(self) -> str:
        return f"<metric {self.spec}>"


def embedding_similarity(model: str | None = None, field: str | None = None, threshold: float = 0.8, *,
                         context: MetricContext) -> EmbeddingMetric:
    """Cosine similarity of output and expected embeddings; passes at >= threshold."""
    if not -1 <= threshold <= 1:
        raise MetricError(f"metric 'embedding_similarity': argument 'threshold' must be between -1 and 1 "
                          f"(got {threshold})")
    spec = {"name": "embedding_similarity", "model": model, "field": field, "threshold": threshold}
    return EmbeddingMetric(spec, context.model(model, "embedding"), field, threshold)
