"""The typed records the store reads back: runs, results, optimizations and their history.

Each is built once, in the store, from its row: JSON columns decoded there and nowhere else.
The optimization history steps and candidate records are the very types `Search` writes, so
the writer and every reader (reports, the viewer, resume) share one shape. No I/O here, and
nothing heavy to import (the store is on every command's path).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Union


@dataclass(frozen=True)
class Score:
    value: float | None              # usually 0..1; None = could not be scored (an error)
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. {"reason": ...}, {"predicted": ...}


@dataclass(frozen=True)
class Result:
    """One (case, repeat) of a run: the reply, its parse and its metric scores."""

    id: int
    run_id: int
    case_id: int
    repeat: int
    output: str | None
    parsed: dict | None
    parse_error: str | None
    scores: Mapping[str, Score]
    score: float | None
    passed: bool
    error_kind: str | None
    error: str | None
    latency_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost: float | None
    cached: bool
    attempts: int | None
    created_at: str | None
    expected: dict | None = None  # the case's expected output it was scored against (None: stored before that was kept)
    lenient: tuple[str, ...] = ()    # output fields only a lenient rule accepted

    def expected_of(self, case: Any) -> dict | None:
        """The expected output this result was scored against: the one kept with it, else (stored
        before results kept it) its case's as it is now."""
        return self.expected if self.expected is not None else getattr(case, "expected", None)

    def value(self, metric: str) -> float | None:
        """The metric's value on this result (None: not scored by it, or could not be)."""
        score = self.scores.get(metric)
        return None if score is None else score.value


@dataclass(frozen=True)
class Run:
    """One evaluation of a prompt version on a model over a set of cases."""

    id: int
    project_id: int
    name: str
    prompt_id: int
    model: str
    model_name: str | None
    api_base: str | None
    params: dict[str, Any]
    metrics: list            # metric specs, as the run was planned with
    case_ids: list[int]
    repeat: int | None
    concurrency: int | None
    status: str
    error: str | None
    summary: dict[str, Any] | None  # evaluation.summarize_run's numbers (None until the run first ends)
    n_results: int | None
    n_errors: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    optimization_id: int | None
    created_at: str | None
    finished_at: str | None
    owner_host: str | None
    owner_pid: int | None
    heartbeat_at: str | None
    use_cache: int | None    # None: made before the choice was stored (it used the cache)
    active_s: float | None
    mode: str | None
    role_usage: dict[str, Any] | None = None  # judge/embedding tokens, cost, requests over every session


# ---- an optimization's history: what `Search` logs as it goes -------------------------------
@dataclass(frozen=True)
class CandidateStep:
    """A candidate (a prompt version) joined the search."""

    event: ClassVar[str] = "candidate"
    iteration: int
    prompt_id: int
    ref: str
    parent_id: int | None
    operator: str


@dataclass(frozen=True)
class EvalStep:
    """A candidate was scored on `n` cases of a split; its means after that."""

    event: ClassVar[str] = "eval"
    iteration: int
    ref: str
    split: str
    n: int
    val: float | None
    train: float | None
    val_estimate: float | None
    calls: int


@dataclass(frozen=True)
class Note:
    """Anything else worth a line in the log (a proposer failure, the stop reason…)."""

    event: str
    iteration: int
    data: Mapping[str, Any] = field(default_factory=dict)


Step = Union[CandidateStep, EvalStep, Note]
_STEPS: dict[str, type] = {CandidateStep.event: CandidateStep, EvalStep.event: EvalStep}


def step_json(step: Step) -> dict[str, Any]:
    """The stored form of a step: {"event": ..., "iteration": ..., and its fields}."""
    if isinstance(step, Note):
        return {"event": step.event, "iteration": step.iteration, **step.data}
    return {"event": step.event, **dataclasses.asdict(step)}


def step_from_json(data: Any) -> Step:
    """The step a stored one is; ValueError (saying why) for a shape `Search` never writes."""
    if not isinstance(data, dict) or not isinstance(data.get("event"), str) \
            or not isinstance(data.get("iteration"), int):
        raise ValueError(f"{str(data)[:80]} is not a step (an object with an event and an iteration)")
    fields = {k: v for k, v in data.items() if k != "event"}
    kind = _STEPS.get(data["event"])
    if kind is None:
        return Note(data["event"], fields.pop("iteration"), fields)
    names = {f.name for f in dataclasses.fields(kind)}
    if set(fields) != names:
        raise ValueError(f"a '{data['event']}' step has the fields {', '.join(sorted(fields))}, "
                         f"not {', '.join(sorted(names))}")
    return kind(**fields)


def history_from_json(data: Any) -> tuple[Step, ...]:
    """The steps of a stored history (a list); ValueError for one `Search` never writes, or an
    evaluation of a candidate that never joined."""
    if not isinstance(data, list):
        raise ValueError("it is not a list of steps")
    steps = tuple(step_from_json(item) for item in data)
    joined = set()
    for step in steps:
        if isinstance(step, CandidateStep):
            joined.add(step.ref)
        elif isinstance(step, EvalStep) and step.ref not in joined:
            raise ValueError(f"{step.ref} is evaluated before it joined the search")
    return steps


@dataclass(frozen=True)
class CandidateRecord:
    """One candidate as an optimization's result reports it."""

    prompt_id: int
    ref: str
    parent_id: int | None
    operator: str
    iteration: int
    val: float | None          # mean objective on the whole val split (None: not fully evaluated)
    train: float | None        # mean objective on the whole train split (None: not fully evaluated)
    val_estimate: float | None  # mean over the val cases evaluated so far (minibatches)
    n_val: int                 # val cases evaluated
    tokens: int                # render.prompt_tokens_estimate of its content

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Optimization:
    """One optimization: its settings, its history as it went, and (once completed) its report."""

    id: int
    project_id: int
    name: str
    strategy: str
    config: dict[str, Any] | None
    base_prompt_id: int | None
    winner_prompt_id: int | None
    splits: dict[str, Any] | None   # split name -> case ids
    budget: dict[str, Any] | None
    status: str
    history: tuple[Step, ...]
    spent: dict[str, Any] | None
    created_at: str | None
    finished_at: str | None
    report: dict[str, Any] | None   # what `optimize --json` printed when it completed
    candidates: tuple[CandidateRecord, ...]  # the report's candidate records (none before it)
    owner_host: str | None
    owner_pid: int | None
    heartbeat_at: str | None
