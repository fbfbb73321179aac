"""The async evaluation runner: no database and no rich in here.

It takes prepared jobs (one per run × case × repeat), calls the model through
the gateway with bounded concurrency, parses and scores each reply, and hands
every finished item to a sink (which commits in batches) and, as an event, to the
progress (`promptlab.progress`), as it arrives.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Protocol

from promptlab.config import ModelConfig
from promptlab.errors import AuthError, PromptlabError
from promptlab.providers.errors import CallError, raise_if_cancelled
from promptlab.providers.gateway import Gateway
from promptlab.models import Case, Completion, ItemResult, Signature
from promptlab.prompting.outputs import parse_reply
from promptlab.progress import (ConcurrencyChanged, EvalFinished, EvalStarted, ItemFinished, Note, Progress,
                                RunTotal)
from promptlab.scorers import Metric, Score, ScoreInput, ScoringError
from promptlab.providers.usage import calls_for


@dataclass(frozen=True)
class Job:
    run_id: int
    case: Case
    repeat: int
    messages: list[dict]
    model: ModelConfig
    params: dict
    signature: Signature | None
    metrics: tuple[Metric, ...]
    render_error: str | None = None  # the template failed for this input: nothing to send


class Sink(Protocol):
    """Where finished items go. `check` raises when results can no longer be stored (the run
    must stop calling the provider); `close` commits what is left."""

    def add(self, item: ItemResult) -> None: ...

    def check(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class RunState:
    """Per-run counters for the failure threshold."""

    finished: int = 0
    failed: int = 0
    stopped: str | None = None  # why the run was stopped early


@dataclass
class Outcome:
    states: dict[int, RunState]
    interrupted: bool = False


class Scored(NamedTuple):
    parsed: dict | None
    parse_error: str | None
    scores: dict[str, dict]
    score: float | None
    passed: bool
    error: str | None = None  # why a metric could not score this item (the item is then an error)
    lenient: tuple[str, ...] = ()


async def score_reply(job: Job, text: str) -> Scored:
    """Parse and score one reply with every metric.

    A metric that raises (`ScoringError`: a judge that never gave a valid
    verdict, a failed embedding call, a custom metric returning a non-score;
    or a bug) gets value None with the message in its detail, and the item an
    error message; the other metrics still score. 401/403 (AuthError) stops
    the run.
    """
    reply = parse_reply(text, job.signature)
    parsed, parse_error = reply.parsed, reply.parse_error
    item = ScoreInput(output=text, parsed=parsed, parse_error=parse_error,
                      expected=job.case.expected, inputs=job.case.inputs,
                      outputs=job.signature.outputs if job.signature else ())
    scores: dict[str, dict] = {}
    values: list[float] = []
    errors: list[str] = []
    passed = True
    for metric in job.metrics:
        try:
            with calls_for("judge", job.run_id):  # a metric that calls a model (an embedding is its own role)
                result: Score = await metric.score(item)
        except AuthError:
            raise
        except Exception as exc:  # the item becomes an error, never a crash
            message = str(exc) if isinstance(exc, ScoringError) else f"{metric.name}: {type(exc).__name__}: {exc}"
            result = Score(None, False, {**getattr(exc, "detail", {}), "error": message})
            errors.append(message)
        scores[metric.name] = {"value": result.value, "passed": result.passed, "detail": result.detail}
        passed = passed and result.passed
        if result.value is not None:
            values.append(result.value)
    score = values[0] if values else None
    return Scored(parsed, parse_error, scores, score, passed and bool(job.metrics) and not errors,
                  "; ".join(errors) or None, reply.lenient)


def render_failure(job: Job) -> ItemResult:
    """The result of a job whose template failed for its input."""
    return ItemResult(job.run_id, job.case.id, job.repeat, error_kind="render", error=job.render_error,
                      attempts=0)


async def run_job(job: Job, gateway: Gateway, use_cache: bool) -> ItemResult:
    if job.render_error is not None:
        return render_failure(job)
    started = time.perf_counter()
    try:
        with calls_for("task", job.run_id):
            reply = await gateway.complete(job.model, job.messages, job.params,
                                           use_cache=use_cache, sample=job.repeat)
    except CallError as exc:
        return ItemResult(job.run_id, job.case.id, job.repeat, error_kind=exc.kind, error=str(exc),
                          attempts=exc.attempts, latency_ms=(time.perf_counter() - started) * 1000)
    return await reply_item(job, reply)


async def reply_item(job: Job, reply: Completion) -> ItemResult:
    """One reply, parsed and scored, as the item's result (per call, cached, or from a batch)."""
    base = {"run_id": job.run_id, "case_id": job.case.id, "repeat": job.repeat}
    try:
        scored = await score_reply(job, reply.text)
    except AuthError:
        raise
    except Exception as exc:  # a parser bug makes this item an error, never a crash
        return ItemResult(**base, output=reply.text, error_kind="scorer",
                          error=f"{type(exc).__name__}: {exc}", attempts=reply.attempts,
                          prompt_tokens=reply.usage.prompt_tokens,
                          completion_tokens=reply.usage.completion_tokens,
                          cost=reply.usage.cost, cached=reply.cached)
    return ItemResult(**base, output=reply.text, parsed=scored.parsed, parse_error=scored.parse_error,
                      scores=scored.scores, score=scored.score, passed=scored.passed,
                      error_kind="scorer" if scored.error else None, error=scored.error,
                      latency_ms=reply.latency_ms if not reply.cached else 0.0,
                      prompt_tokens=reply.usage.prompt_tokens,
                      completion_tokens=reply.usage.completion_tokens,
                      cost=0.0 if reply.cached and reply.usage.cost is not None else reply.usage.cost,
                      cached=reply.cached, attempts=reply.attempts, lenient=scored.lenient,
                      warning=reply.warning)


async def evaluate(jobs: Iterable[Job], gateway: Gateway, sink: Sink, progress: Progress, *,
                   runs: tuple[RunTotal, ...], concurrency: int = 8, use_cache: bool = True,
                   failure_threshold: float = 0.5, failure_min_items: int = 10) -> Outcome:
    """Run every job (`runs`: how many each run has, for the progress); stop a run whose error
    share passes the threshold; 401/403 stops all, and so does a sink that can no longer store
    results (only calls in flight finish)."""
    states: dict[int, RunState] = {}
    queue = iter(jobs)
    limits: dict[str, int] = {}  # the adaptive limits last reported
    progress.emit(EvalStarted(runs))

    async def worker() -> None:
        nonlocal limits
        for job in queue:
            raise_if_cancelled()
            state = states.setdefault(job.run_id, RunState())
            if state.stopped:
                continue
            sink.check()
            item = await run_job(job, gateway, use_cache)
            sink.add(item)
            if (now := gateway.adaptive_limits()) != limits:
                limits = now
                progress.emit(ConcurrencyChanged(now))
            if item.warning:
                progress.emit(Note(f"case {item.case_id}: {item.warning}"))
            progress.emit(ItemFinished(item))
            state.finished += 1
            # a render error costs no call and says nothing of the provider: it never stops a run
            state.failed += item.error_kind not in (None, "render")
            if (state.finished >= failure_min_items
                    and state.failed / state.finished > failure_threshold and not state.stopped):
                state.stopped = (f"stopped: {state.failed} of {state.finished} items failed "
                                 f"(threshold {failure_threshold:.0%})")

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, concurrency)):
                group.create_task(worker())
    except* PromptlabError as errors:  # auth, storage, a template refused at render time: one clear line
        raise errors.exceptions[0] from None
    finally:
        sink.close()
        progress.emit(EvalFinished())
    sink.check()
    return Outcome(states)
