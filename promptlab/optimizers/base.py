"""The one interface every optimizer strategy matches, and the records it trades in.

A strategy is a small object holding only its knobs (a frozen dataclass). Its
``optimize(problem, search, rng)`` gets:

- ``problem``: the base prompt version, train and val cases, the objective, the
  task model, the proposer model and the budget (a frozen `Problem`);
- ``search``: the shared machinery (`promptlab.optimizers.search.Search`) that
  stores candidates as prompt versions with lineage, evaluates them through the
  evaluation runner (cached, concurrent, resumable), asks the proposer for
  structured edits, keeps the budget and picks the winner;
- ``rng``: a ``random.Random(seed)`` -- the only source of randomness, so the
  same seed replays the same proposals;

and returns a frozen `OptimizationResult`. Per-run state lives in local
variables and in ``search``, never on the strategy.

This module imports nothing heavy at run time (the CLI lists the knobs in
``--help`` without loading pydantic or litellm).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from promptlab.store.records import CandidateRecord

if TYPE_CHECKING:
    import random

    from promptlab.config import Concurrency, ModelConfig
    from promptlab.models import Case, PromptVersion, Signature


class BudgetExhausted(Exception):
    """The next model call would go past the budget: the strategy stops and the winner is picked."""


@dataclass(frozen=True)
class Budget:
    """What a search may spend: model calls, tokens and cost (None: no limit on that one)."""

    calls: int | None = None
    tokens: int | None = None
    cost: float | None = None

    def describe(self) -> str:
        parts = [f"{self.calls} calls" if self.calls is not None else "",
                 f"{self.tokens} tokens" if self.tokens is not None else "",
                 f"${self.cost}" if self.cost is not None else ""]
        return ", ".join(p for p in parts if p) or "unlimited"


@dataclass(frozen=True)
class Spent:
    """What an optimization spent. `calls` counts every model request the search needed
    (a cached reply included: the count replays exactly on resume); `test_calls` those
    of scoring the base and the winner on the test split; `provider_calls` the requests
    actually sent to a provider, retries, test scoring and earlier sessions included
    (what the call budget caps)."""

    calls: int = 0
    tokens: int = 0
    cost: float = 0.0
    provider_calls: int = 0
    test_calls: int = 0
    by_role: dict = field(default_factory=dict)  # role -> requests, replies, tokens, cost (usage.RoleUsage)


@dataclass(frozen=True)
class Objective:
    """One metric or a weighted mix: the score of one result is sum(w * value) / sum(w).

    `metrics` are metric specs (as `promptlab eval --metric` takes them);
    `weights` line up with them. A result that ended in an error scores 0.
    """

    metrics: tuple[Any, ...] = ("exact_match",)
    weights: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if len(self.metrics) != len(self.weights) or not self.metrics:
            raise ValueError("an objective needs one weight per metric")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError("objective weights must be >= 0 and not all 0")

    def describe(self, names: list[str] | None = None) -> str:
        names = names or [m if isinstance(m, str) else m.get("name", "?") for m in self.metrics]
        if len(names) == 1:
            return names[0]
        return " + ".join(f"{w:g}*{n}" for n, w in zip(names, self.weights))


@dataclass(frozen=True)
class Problem:
    """Everything a strategy optimizes over (no I/O handles in here)."""

    base: PromptVersion
    signature: Signature | None
    train: tuple[Case, ...]
    val: tuple[Case, ...]
    objective: Objective
    task_model: ModelConfig
    proposer: ModelConfig
    budget: Budget


@dataclass(frozen=True)
class SearchConfig:
    """Which optimization a search works for, and how: its record, the strategy and its knobs."""

    project_id: int
    optimization_id: int
    name: str                  # the optimization's: its runs and messages are named after it
    strategy: str
    knobs: CommonKnobs
    concurrency: Concurrency


@dataclass(frozen=True)
class OptimizationResult:
    strategy: str
    base: CandidateRecord
    best: CandidateRecord      # the winner: the base when no candidate beat it by more than min_gain
    candidates: tuple[CandidateRecord, ...]
    spent: Spent
    stopped: str               # why the search ended (budget, plateau, done, …)
    iterations: int
    improved: bool             # a candidate beat the base on val by more than min_gain

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "base": self.base.as_dict(), "best": self.best.as_dict(),
                "candidates": [c.as_dict() for c in self.candidates],
                "spent": dataclasses.asdict(self.spent), "stopped": self.stopped,
                "iterations": self.iterations, "improved": self.improved}


@runtime_checkable
class Strategy(Protocol):
    """What every optimizer is: a name, a knobs dataclass, and one async method."""

    name: ClassVar[str]
    Knobs: ClassVar[type]
    knobs: Any

    async def optimize(self, problem: Problem, search: Any,
                       rng: random.Random) -> OptimizationResult: ...
    # `search` is the shared machinery, a `promptlab.optimizers.search.Search`: typed loosely here
    # so that this interface imports nothing above it (the machinery imports this module).


# ---- knobs ------------------------------------------------------------------
def knob(default: Any, help: str) -> Any:
    """A knob: a dataclass field with a default and one line of help."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class CommonKnobs:
    """Knobs every strategy has."""

    patience: int = knob(4, "stop after this many steps without a gain of at least min_gain")
    min_gain: float = knob(0.0, "a gain on val must exceed this to count (a step; the winner over the base)")
    max_demos: int = knob(8, "most few-shot demos a candidate may carry")
    max_prompt_tokens: int = knob(0, "skip candidates whose prompt is larger (0: no limit)")
    use_proposer: bool = knob(True, "let the proposer model write instructions (else model-free edits only)")
    proposer_retries: int = knob(1, "re-asks when the proposer's JSON is invalid")
    proposer_temperature: float = knob(0.7, "sampling temperature of the proposer")
    proposer_max_tokens: int = knob(128, "longest proposer reply, in tokens")
    embedding_model: str = knob("", "model whose embeddings kNN demo selectors compare ('': lexical similarity)")


class KnobError(ValueError):
    pass


def knob_fields(cls: type) -> list[tuple[str, Any, Any, str]]:
    """(name, type, default, help) of every knob of a knobs dataclass."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], f.default, f.metadata.get("help", ""))
            for f in dataclasses.fields(cls)]


def make_knobs(cls: type, values: dict[str, Any] | None) -> Any:
    """A knobs instance from {name: value} (strings from the CLI are coerced); clear errors."""
    values = dict(values or {})
    fields = {name: (typ, default) for name, typ, default, _ in knob_fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise KnobError(f"unknown knob '{unknown[0]}' (knobs: {', '.join(sorted(fields))})")
    out = {}
    for name, value in values.items():
        typ, _ = fields[name]
        out[name] = _coerce(name, value, typ)
    return cls(**out)


def _coerce(name: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        options = [t for t in typing.get_args(typ) if t is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        typ = options[0]
    if origin is typing.Literal:
        if value not in typing.get_args(typ):
            raise KnobError(f"knob '{name}': {value!r} is not one of {', '.join(map(str, typing.get_args(typ)))}")
        return value
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if typ is str:
            return value if isinstance(value, str) else json.dumps(value)
    except (TypeError, ValueError):
        raise KnobError(f"knob '{name}': expected {getattr(typ, '__name__', typ)}, got {value!r}") from None
    return value


def knobs_dict(knobs: Any) -> dict[str, Any]:
    return dataclasses.asdict(knobs)
