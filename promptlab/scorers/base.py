"""The scorer protocol: score one result, summarise many.

A metric is built by a factory whose keyword arguments are its settings; the
(name, args) pair is its spec, stored with a run so it can be rebuilt exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from promptlab.models import FieldSpec


class MetricError(ValueError):
    """Bad metric name or arguments (a usage error, exit 2)."""


class UnknownMetricError(MetricError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ScoreInput:
    output: str                      # raw model text
    parsed: dict[str, Any] | None    # output parsed per the signature (None if it failed)
    parse_error: str | None
    expected: dict[str, Any]         # the case's expected output fields
    inputs: dict[str, Any]           # the case's inputs
    outputs: tuple[FieldSpec, ...] = ()  # the signature's output fields


@dataclass(frozen=True)
class Score:
    value: float | None              # usually 0..1; None = could not be scored (an error)
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. {"reason": ...}, {"predicted": ...}


class Metric(Protocol):
    name: str
    spec: dict[str, Any]

    async def score(self, item: ScoreInput) -> Score: ...

    def summarize(self, scores: list[Score]) -> dict[str, Any]: ...
