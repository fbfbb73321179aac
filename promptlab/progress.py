"""The one progress protocol: what runs and searches report while they go, as typed events.

The runner, the batch runner, the evaluation and the search emit frozen events of plain data
to a `Progress` (one method, `emit`); the display layer folds them into a live table, plain
lines, JSON lines or nothing. Nothing here prints.

An evaluation is `EvalStarted`, an `ItemFinished` per reply (a `ConcurrencyChanged` before the
item that moved an adaptive limit), `EvalFinished`. A search is `SearchStarted`, then per batch
of candidates `SearchEvaluating` (its state as they go to the runner), that evaluation's events,
`SearchStep` (its state once they are scored), and last `SearchFinished`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the runner pulls in numpy and the scorers: `runs list` needs neither
    from promptlab.evaluation.runner import ItemResult


@dataclass(frozen=True)
class RunTotal:
    run_id: int
    label: str   # prompt version × model
    total: int   # items it still has to evaluate
    name: str = ""   # the run's name
    model: str = ""  # the model it calls (a LiteLLM model string)


@dataclass(frozen=True)
class EvalStarted:
    runs: tuple[RunTotal, ...]

    @property
    def total(self) -> int:
        return sum(r.total for r in self.runs)


@dataclass(frozen=True)
class ItemFinished:
    item: ItemResult


@dataclass(frozen=True)
class ConcurrencyChanged:
    limits: dict[str, int]  # under concurrency "auto": each model's calls in flight allowed now


@dataclass(frozen=True)
class EvalFinished:
    pass


@dataclass(frozen=True)
class Note:
    message: str  # a line for the user, e.g. the batch runner's "submitted batch …"


@dataclass(frozen=True)
class SearchStatus:
    """A search's state: iteration, best so far, latest candidates, budget used."""

    strategy: str
    iteration: int
    best_ref: str
    best_val: float | None
    base_val: float | None
    latest: tuple[tuple[str, str, float | None, float | None], ...]  # (ref, operator, val, train)
    calls: int
    budget_calls: int | None
    tokens: int
    budget_tokens: int | None
    candidates: int
    message: str = ""


@dataclass(frozen=True)
class SearchStarted:
    title: str


@dataclass(frozen=True)
class SearchEvaluating:
    status: SearchStatus


@dataclass(frozen=True)
class SearchStep:
    status: SearchStatus


@dataclass(frozen=True)
class SearchFinished:
    pass


Event = (EvalStarted | ItemFinished | ConcurrencyChanged | EvalFinished | Note
         | SearchStarted | SearchEvaluating | SearchStep | SearchFinished)


class Progress(Protocol):
    def emit(self, event: Event) -> None: ...


class SilentProgress:
    def emit(self, event: Event) -> None:
        pass
