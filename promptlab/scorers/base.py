"""The scorer protocol: score one result, summarise many.

A metric is built by a factory whose keyword arguments are its settings; the
(name, args) pair is its spec, stored with a run so it can be rebuilt exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from promptlab.errors import UsageError
from promptlab.models import FieldSpec
from promptlab.store.records import Score  # scorers make them, results store them

if TYPE_CHECKING:
    from promptlab.config import ModelConfig
    from promptlab.providers.gateway import Gateway


class MetricError(ValueError):
    """Bad metric name or arguments (a usage error, exit 2)."""


class UnknownMetricError(MetricError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ScoringError(Exception):
    """This item could not be scored for a reason outside the case (a judge or
    embedding call failed, the judge's reply stayed invalid, a custom metric
    raised or returned a non-score).

    `Metric.score` raises it; the runner makes the item an error (kind
    "scorer", counted in the run's errors) with the message kept, and keeps the
    other metrics' scores. Contrast `Score(value=None)`: the *case* cannot be
    scored by this metric (e.g. it has no expected value) -- the metric's
    summary counts it, the run does not.
    """

    def __init__(self, message: str, detail: dict[str, Any] | None = None):
        super().__init__(message)
        self.detail = detail or {}


@dataclass(frozen=True)
class MetricContext:
    """What the evaluation around a metric offers it, beyond the metric's own arguments.

    A factory asks for it by declaring a keyword-only ``context`` parameter;
    `get_metric(spec, context)` passes it (users cannot set it from a spec).
    Built once per evaluation from the settings (`promptlab.evaluation.evaluate.metric_context`):

    - ``resolve_model(alias)`` -> ModelConfig, with the config's aliases; a bad
      alias raises a usage error at build time, before any run row is written;
    - ``default_models``: role -> alias, e.g. {"judge": "local", "embedding": "local"}
      (`[defaults] judge_model`, `embedding_model` in promptlab.toml);
    - ``base_dir``: where relative paths and custom ``module:function`` metrics
      are looked up (the experiment file's folder; the cwd for `eval`);
    - ``allow_code_execution``: whether the project lets metrics run model-written code.

    The gateway is not here: metrics that call a model get it later through
    ``bind(gateway)``, which `promptlab.evaluation.evaluate.execute` performs with the
    very gateway the runner uses (same cache, retries, rate limits). Building a
    metric therefore never needs a live gateway (validation, summaries).
    """

    resolve_model: Callable[[str], "ModelConfig"] | None = None
    default_models: Mapping[str, str] = field(default_factory=dict)
    base_dir: Path | None = None
    allow_code_execution: bool = False

    def model(self, name: str | None, role: str) -> "ModelConfig":
        """The model for `role`: the metric's ``model`` argument, else the configured default."""
        alias = name or self.default_models.get(role) or "local"
        resolve = self.resolve_model
        if resolve is None:  # no settings given: aliases of a config-less install
            from promptlab.config import Settings

            resolve = Settings().resolve_model
        try:
            return resolve(alias)
        except (UsageError, KeyError, ValueError) as exc:  # e.g. an unknown alias
            raise MetricError(f"{role} model: {exc}") from None


class ModelMetric(Protocol):
    """A metric that calls a model: scoring needs `bind(gateway)` first."""

    def bind(self, gateway: "Gateway") -> None: ...


@dataclass(frozen=True)
class ScoreInput:
    output: str                      # raw model text
    parsed: dict[str, Any] | None    # output parsed per the signature (None if it failed)
    parse_error: str | None
    expected: dict[str, Any]         # the case's expected output fields
    inputs: dict[str, Any]           # the case's inputs
    outputs: tuple[FieldSpec, ...] = ()  # the signature's output fields


class Metric(Protocol):
    name: str
    spec: dict[str, Any]

    async def score(self, item: ScoreInput) -> Score: ...

    def summarize(self, scores: list[Score]) -> dict[str, Any]: ...
