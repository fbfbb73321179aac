"""Start or resume an optimization: splits, the record, the strategy, the held-out test, the gates.

`start` validates everything before writing anything, creates the
`optimizations` row (config, splits, budget) and runs the strategy; `resume`
rebuilds the same search from that row and replays it with the same seed: the
same proposals come out, and evaluations already in the store or the response
cache are not sent again. Both end with the winner's and the base's scores on
the held-out test split side by side, with the prompt diff, in `report`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptlab.config import ModelConfig
from promptlab.diffing import diff_text
from promptlab.errors import UsageError
from promptlab.gates import GateResult
from promptlab.evaluation import build_metrics, make_gateway, metric_context
from promptlab.optimizers import KnobError, UnknownStrategyError, get_strategy
from promptlab.optimizers.base import Budget, Objective, Problem
from promptlab.optimizers.search import Search, SearchProgress
from promptlab.optimizers.splits import make_splits, splits_from_ids
from promptlab.lease import HEARTBEAT_S
from promptlab.store import Store, is_locked, loads, now

if TYPE_CHECKING:
    from promptlab.config import Settings


@dataclass(frozen=True)
class OptimizeRequest:
    name: str
    strategy: str
    prompt: str                       # NAME, NAME@VERSION or NAME@LABEL
    model: str | None = None          # task model alias or LiteLLM model (default: settings)
    proposer: str | None = None       # proposer model (default: the task model)
    budget: Budget = Budget(calls=500)
    seed: int = 0
    knobs: dict[str, Any] = field(default_factory=dict)
    objective: Objective = Objective()
    split_sizes: tuple[float, float, float] | None = None
    concurrency: int | None = None


def _model(settings: Settings, name: str | None, models: dict[str, ModelConfig] | None = None) -> ModelConfig:
    if name and models and name in models:
        return models[name]
    return settings.resolve_model(name)


def _model_json(model: ModelConfig) -> dict:
    return model.model_dump(mode="json")


def start(store: Store, settings: Settings, project_id: int, request: OptimizeRequest, *,
          progress: SearchProgress | None = None, models: dict[str, ModelConfig] | None = None) -> dict:
    """Validate, record and run a new optimization; returns its report."""
    try:
        strategy = get_strategy(request.strategy, request.knobs)
    except (KnobError, UnknownStrategyError) as exc:
        raise UsageError(f"optimize: {exc}") from None
    base = store.prompt(project_id, request.prompt)
    task_model = _model(settings, request.model, models)
    proposer = _model(settings, request.proposer or request.model, models)
    task_model.api_key()
    proposer.api_key()
    build_metrics(list(request.objective.metrics), "optimize --metric", context=metric_context(settings))
    cases = store.cases(project_id, golden=True)
    splits = make_splits(cases, request.seed, request.split_sizes)
    if request.budget.calls is not None and request.budget.calls < len(splits.val):
        raise UsageError(f"optimize: a budget of {request.budget.calls} calls cannot even score the base "
                         f"on the {len(splits.val)} val cases; raise --budget-calls")
    config = {"strategy": request.strategy, "knobs": dataclasses.asdict(strategy.knobs), "seed": request.seed,
              "prompt": request.prompt, "base_prompt_id": base.id, "task_model": _model_json(task_model),
              "proposer": _model_json(proposer), "objective": {"metrics": list(request.objective.metrics),
                                                               "weights": list(request.objective.weights)},
              "split_sizes": list(request.split_sizes) if request.split_sizes else None,
              "concurrency": request.concurrency or settings.defaults.concurrency}
    opt_id = store.create_optimization(project_id, request.name, request.strategy, config=config,
                                       base_prompt_id=base.id, splits=splits.ids(),
                                       budget=dataclasses.asdict(request.budget))
    return asyncio.run(_run(store, settings, project_id, opt_id, progress))


def resume(store: Store, settings: Settings, project_id: int, name: str, *,
           progress: SearchProgress | None = None) -> dict:
    """Continue an interrupted optimization (a completed one just gives its report again)."""
    row = store.find_optimization(project_id, name)
    if row is None:
        known = ", ".join(r["name"] for r in store.optimizations(project_id)) or "none yet"
        raise UsageError(f"no optimization '{name}' in this project (optimizations: {known})")
    if row["status"] == "completed" and row.get("report"):
        return loads(row["report"]) if isinstance(row["report"], str) else row["report"]
    return asyncio.run(_run(store, settings, project_id, row["id"], progress))


async def _heartbeat(store: Store, opt_id: int) -> None:
    """Beat while the search runs, so a second `--resume` sees a live owner (see `promptlab.lease`)."""
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            store.heartbeat("optimizations", [opt_id])
        except Exception as exc:  # a busy database skips a beat; a broken one stops the runs loudly
            if not is_locked(exc):
                raise


async def _run(store: Store, settings: Settings, project_id: int, opt_id: int,
               progress: SearchProgress | None) -> dict:
    row = store.db["optimizations"].get(opt_id)
    config, budget = loads(row["config"]), Budget(**loads(row["budget"]))
    strategy = get_strategy(config["strategy"], config["knobs"])
    cases = {c.id: c for c in store.cases(project_id)}
    splits = splits_from_ids(cases, loads(row["splits"]))
    base = store.prompt_by_id(row["base_prompt_id"])
    signature = store.prompt_signature(base)
    objective = Objective(tuple(config["objective"]["metrics"]), tuple(config["objective"]["weights"]))
    problem = Problem(base=base, signature=signature, train=splits.train, val=splits.val,
                      objective=objective, task_model=ModelConfig(**config["task_model"]),
                      proposer=ModelConfig(**config["proposer"]), budget=budget)
    gateway = make_gateway(store, settings)
    search = Search(store=store, settings=settings, gateway=gateway, project_id=project_id,
                    optimization_id=opt_id, name=row["name"], strategy=strategy.name, problem=problem,
                    knobs=strategy.knobs, concurrency=config["concurrency"], progress=progress)
    store.claim("optimizations", opt_id, f"optimization '{row['name']}'")
    beating = asyncio.create_task(_heartbeat(store, opt_id))
    if progress is not None:
        progress.start(f"optimize {row['name']}: {strategy.name} on {base.ref}, budget {budget.describe()}")
    try:
        result = await strategy.optimize(problem, search, random.Random(config["seed"]))
        winner = next(c for c in search.candidates.values() if c.id == result.best.prompt_id)
        if splits.test:
            await search.evaluate([search.base, winner], "test", splits.test, charge=False)
    except BaseException as exc:
        interrupted = (KeyboardInterrupt, SystemExit, asyncio.CancelledError)  # Ctrl-C cancels the task
        status = "interrupted" if isinstance(exc, interrupted) else "failed"
        search.save(status=status)
        raise
    finally:
        beating.cancel()
        if progress is not None:
            progress.finish()
    final = _promote(store, project_id, search, winner, row["name"])
    report = _report(row["name"], config, budget, splits, search, result, winner, final)
    search.save(status="completed", winner_prompt_id=final.id, report=report, finished_at=now())
    return report


def _promote(store: Store, project_id: int, search: Search, winner, name: str):
    """Make the winner the newest version of the family (so NAME means the winner from now on).

    Its content is added again, as a child of the winning candidate, unless it
    already is the newest version; a base that won stays as it is."""
    if winner is search.base:
        return winner.prompt
    latest = store.prompt(project_id, search.base.prompt.name)
    if latest.content_hash == winner.prompt.content_hash:
        return latest
    return store.add_prompt(project_id, search.base.prompt.name, winner.content,
                            signature_id=search.signature_id, parent_id=winner.id,
                            made_by=f"optimize:{name}", message=f"winner of optimization {name}",
                            dedupe=False)


def _side(search: Search, cand, splits) -> dict:
    return {"ref": cand.prompt.ref, "prompt_id": cand.id, "val": cand.mean(splits.val),
            "val_estimate": cand.estimate(splits.val),
            "train": cand.mean(splits.train), "test": cand.mean(splits.test) if splits.test else None,
            "test_metrics": cand.metric_means(splits.test) if splits.test else {},
            "tokens": cand.tokens, "demos": len(cand.content.demos)}


def _report(name, config, budget, splits, search: Search, result, winner, final) -> dict:
    base = _side(search, search.base, splits)
    best = {**_side(search, winner, splits), "ref": final.ref, "prompt_id": final.id,
            "candidate": winner.prompt.ref}

    def lift(key: str) -> float | None:
        return None if base[key] is None or best[key] is None else round(best[key] - base[key], 6)

    return {"name": name, "strategy": result.strategy, "status": "completed", "stopped": result.stopped,
            "seed": config["seed"], "iterations": result.iterations,
            "objective": search.problem.objective.describe([n for n, _ in search.weights]),
            "model": config["task_model"].get("alias") or config["task_model"]["model"],
            "proposer": config["proposer"].get("alias") or config["proposer"]["model"],
            "splits": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                       "method": splits.method},
            "base": base, "winner": best, "lift": {"val": lift("val"), "test": lift("test")},
            "budget": dataclasses.asdict(budget),
            "spent": {**dataclasses.asdict(search.spent), "test_calls": search.test_calls},
            "candidates": [c.as_dict() for c in sorted(result.candidates, key=lambda c: c.prompt_id)],
            "diff": diff_text(search.base.prompt, final)}


def check_gates(report: dict, *, min_test_score: float | None = None,
                min_lift: float | None = None) -> list[GateResult]:
    """Gates on the held-out test split: the winner's score, and its lift over the base."""
    gates: list[GateResult] = []
    if min_test_score is not None:
        actual = report["winner"]["test"]
        ok = actual is not None and actual >= min_test_score
        gates.append(GateResult(f"min_test_score {report['winner']['ref']}", ok, actual, min_test_score,
                          f"test score {_fmt(actual)} {'>=' if ok else '<'} {min_test_score}"
                          + ("" if actual is not None else " (no test split)")))
    if min_lift is not None:
        actual = report["lift"]["test"]
        ok = actual is not None and actual >= min_lift
        gates.append(GateResult(f"min_lift {report['base']['ref']} -> {report['winner']['ref']}", ok, actual,
                          min_lift, f"test lift {_fmt(actual)} {'>=' if ok else '<'} {min_lift}"))
    return gates


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
