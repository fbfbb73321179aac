"""Evaluate planned runs: per call or through the provider's Batch API, then record how each ended."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from promptlab.providers import litellm_loader
from promptlab.errors import AuthError, StorageError
from promptlab.hints import command
from promptlab.evaluation.evaluate import execute
from promptlab.evaluation.plan import RunPlan
from promptlab.evaluation.sink import make_gateway
from promptlab.evaluation.summary import finish
from promptlab.evaluation.tracing import traced
from promptlab.providers.usage import Ledger, merged

if TYPE_CHECKING:
    from promptlab.config import Concurrency, Settings
    from promptlab.progress import Progress
    from promptlab.evaluation.runner import Outcome
    from promptlab.store import Store


@dataclass(frozen=True)
class EvaluateRequest:
    plans: list[RunPlan]
    concurrency: Concurrency
    use_cache: bool
    batch: frozenset[int] = frozenset()  # the run ids that go through the Batch API
    wait: bool = True  # False: batch runs are left `submitted`, their batches outlive the process
    rerun: str | None = None  # the command that made these runs, which continues them when run again


@dataclass(frozen=True)
class Evaluation:
    runs: list[dict]  # each run's summary (run_json) as it ended

    @property
    def submitted(self) -> list[dict]:
        return [r for r in self.runs if r["status"] == "submitted"]


class Interrupted(Exception):
    """Ctrl-C: the runs are recorded `interrupted`; the message says how to continue them."""


def resume_hint(store: Store, request: EvaluateRequest) -> str:
    """The commands that continue these runs."""
    calls = [p for p in request.plans if p.run_id not in request.batch]
    commands = [command(store, calls[0].project_id, "eval", *(w for p in calls for w in ("--resume", p.name)))] \
        if calls else []  # one command continues them all, together as they ran
    commands += [command(store, p.project_id, "runs", "wait", p.name) for p in request.plans if p.run_id in request.batch]
    hint = " then ".join(f"`{c}`" for c in commands)
    return hint + (f", or re-run `{request.rerun}`, which continues them" if request.rerun else "")


def evaluate(store: Store, settings: Settings, request: EvaluateRequest, *, progress: Progress) -> Evaluation:
    """Run the plans, reporting to `progress` (and to the traces, when configured), and record each
    run's end. However the evaluation stops (Ctrl-C, a provider refusing the key, a full disk, a
    bug) no run is left `running`."""
    with traced(progress, settings) as progress:
        return _evaluate(store, settings, request, progress)


def _evaluate(store: Store, settings: Settings, request: EvaluateRequest, progress: Progress) -> Evaluation:
    plans = request.plans
    gateway, batch_gateway = make_gateway(store, settings), make_gateway(store, settings)
    started, imported_before = time.perf_counter(), litellm_loader.import_seconds

    def spent() -> Ledger:  # what both gateways' calls cost, per run and role
        return merged(gateway.usage, batch_gateway.usage)

    def elapsed() -> float:  # litellm's import (seconds, once per process) is not the runs' throughput
        return time.perf_counter() - started - (litellm_loader.import_seconds - imported_before)

    async def run() -> Outcome:
        return await execute(store, settings, plans, progress, gateways=(gateway, batch_gateway),
                             batch=request.batch, concurrency=request.concurrency, use_cache=request.use_cache,
                             wait=request.wait)

    try:
        outcome = asyncio.run(run())
    except KeyboardInterrupt:
        finish(store, plans, None, status="interrupted", reason="interrupted (Ctrl-C)", elapsed_s=elapsed(),
               usage=spent())
        raise Interrupted(f"interrupted; finished results are saved. Continue with {resume_hint(store, request)}") \
            from None
    except AuthError as exc:
        finish(store, plans, None, status="failed", reason=str(exc), elapsed_s=elapsed(), usage=spent())
        raise exc
    except StorageError as exc:
        try:  # folding the log into the database may leave room to record why the run stopped
            store.checkpoint()
            finish(store, plans, None, status="interrupted", reason=str(exc), elapsed_s=elapsed(), usage=spent())
        except sqlite3.Error:  # no room even so: the run's owner is gone, so resume takes it over
            pass
        raise StorageError(f"{exc}, then continue with {resume_hint(store, request)}") from None
    except Exception as exc:  # a bug must not leave the runs `running`: record it, then report it
        finish(store, plans, None, status="interrupted", reason=f"{type(exc).__name__}: {exc}",
               elapsed_s=elapsed(), usage=spent())
        raise
    return Evaluation(finish(store, plans, outcome, elapsed_s=elapsed(), usage=spent()))
