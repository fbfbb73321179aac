"""Start or resume an optimization: splits, the record, the strategy, the held-out test, the gates.

`start` validates everything before writing anything, creates the
`optimizations` row (config, splits, budget) and runs the strategy; `resume`
rebuilds the same search from that row and replays it with the same seed: the
same proposals come out, and evaluations already in the store or the response
cache are not sent again. Both end with the winner's and the base's scores on
the held-out test split side by side, with the prompt diff, in `report`.

The winner is a candidate that beat the base on val by more than `min_gain`;
it is promoted (it stops being a candidate and becomes the family's latest
version). Otherwise no improvement was found: the base is kept and no version
is added. The lift on test is measured over the strongest of the base, the best
constant answer (`promptlab.scorers.baselines`) and naive k-shot, with a paired p-value
against that baseline, and a winner whose test outputs are nearly all one label
is flagged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptlab.scorers import baselines
from promptlab.config import ModelConfig
from promptlab.prompting.diffing import diff_text
from promptlab.errors import UsageError
from promptlab.evaluation.gates import GateResult
from promptlab.evaluation.plan import build_metrics, metric_context
from promptlab.evaluation.sink import make_gateway
from promptlab.optimizers import UnknownStrategyError, get_strategy
from promptlab.optimizers.base import Budget, BudgetExhausted, KnobError, Objective, Problem, SearchConfig
from promptlab.optimizers.ledger import Ledger
from promptlab.optimizers.search import Search
from promptlab.optimizers.splits import make_splits, splits_from_ids
from promptlab.progress import Progress, SearchFinished, SearchStarted, SilentProgress
from promptlab.evaluation.tracing import traced
from promptlab.scorers.stats import paired_bootstrap
from promptlab.store.lease import HEARTBEAT_S
from promptlab.store import Store, is_locked, now

if TYPE_CHECKING:
    from promptlab.config import Settings

SIGNIFICANCE = 0.05  # a lift is claimed only with a paired-bootstrap p-value below this


@dataclass(frozen=True)
class OptimizeRequest:
    name: str
    strategy: str
    prompt: str                       # NAME, NAME@VERSION or NAME@LABEL
    model: str | None = None          # task model alias or LiteLLM model (default: settings)
    proposer: str | None = None       # proposer model (default: the task model)
    budget: Budget = Budget(calls=500)
    seed: int = 0                     # the search's seed (proposals, demo draws)
    knobs: dict[str, Any] = field(default_factory=dict)
    objective: Objective = Objective()
    split_sizes: tuple[float, float, float] | None = None
    split_seed: int = 0               # the train/val/test split's own seed: searches with other seeds compare
    concurrency: int | None = None


def _model(settings: Settings, name: str | None, models: dict[str, ModelConfig] | None = None) -> ModelConfig:
    if name and models and name in models:
        return models[name]
    return settings.resolve_model(name)


def _model_json(model: ModelConfig) -> dict:
    return model.model_dump(mode="json")


def start(store: Store, settings: Settings, project_id: int, request: OptimizeRequest, *,
          progress: Progress = SilentProgress(), models: dict[str, ModelConfig] | None = None) -> dict:
    """Validate, record and run a new optimization; returns its report."""
    try:
        strategy = get_strategy(request.strategy, request.knobs)
    except (KnobError, UnknownStrategyError) as exc:
        raise UsageError(f"optimize: {exc}") from None
    getattr(strategy, "check_ready", lambda: None)()
    base = store.prompt(project_id, request.prompt)
    task_model = _model(settings, request.model, models)
    proposer = _model(settings, request.proposer or request.model, models)
    task_model.api_key()
    proposer.api_key()
    build_metrics(list(request.objective.metrics), "optimize --metric", context=metric_context(settings))
    cases = store.cases(project_id, golden=True)
    splits = make_splits(cases, request.split_seed, request.split_sizes)
    least = 2 * len(splits.val) + test_reserve(splits)
    if request.budget.calls is not None and request.budget.calls < least:
        raise UsageError(f"optimize: a budget of {request.budget.calls} calls cannot score the base and the "
                         f"naive k-shot version on the {len(splits.val)} val cases and them and the winner "
                         f"on the {len(splits.test)} test cases ({least} calls); raise --budget-calls")
    config = {"strategy": request.strategy, "knobs": dataclasses.asdict(strategy.knobs), "seed": request.seed,
              "prompt": request.prompt, "base_prompt_id": base.id, "task_model": _model_json(task_model),
              "proposer": _model_json(proposer), "objective": {"metrics": list(request.objective.metrics),
                                                               "weights": list(request.objective.weights)},
              "split_sizes": list(request.split_sizes) if request.split_sizes else None,
              "split_seed": request.split_seed,
              "concurrency": settings.concurrency(request.concurrency)}
    opt_id = store.create_optimization(project_id, request.name, request.strategy, config=config,
                                       base_prompt_id=base.id, splits=splits.ids(),
                                       budget=dataclasses.asdict(request.budget))
    with traced(progress, settings) as progress:
        return asyncio.run(_run(store, settings, project_id, opt_id, progress))


def resume(store: Store, settings: Settings, project_id: int, name: str, *,
           progress: Progress = SilentProgress()) -> dict:
    """Continue an interrupted optimization (a completed one just gives its report again)."""
    opt = store.find_optimization(project_id, name)
    if opt is None:
        known = ", ".join(o.name for o in store.optimizations(project_id)) or "none yet"
        raise UsageError(f"no optimization '{name}' in this project (optimizations: {known})")
    if opt.status == "completed" and opt.report:
        return opt.report
    with traced(progress, settings) as progress:
        return asyncio.run(_run(store, settings, project_id, opt.id, progress))


async def _heartbeat(store: Store, opt_id: int) -> None:
    """Beat while the search runs, so a second `--resume` sees a live owner (see `promptlab.store.lease`)."""
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            store.heartbeat("optimizations", [opt_id])
        except Exception as exc:  # a busy database skips a beat; a broken one stops the runs loudly
            if not is_locked(exc):
                raise


async def _run(store: Store, settings: Settings, project_id: int, opt_id: int,
               progress: Progress) -> dict:
    opt = store.optimization_by_id(opt_id)
    config, budget = opt.config, Budget(**opt.budget)
    strategy = get_strategy(config["strategy"], config["knobs"])
    cases = {c.id: c for c in store.cases(project_id)}
    splits = splits_from_ids(cases, opt.splits)
    base = store.prompt_by_id(opt.base_prompt_id)
    signature = store.prompt_signature(base)
    objective = Objective(tuple(config["objective"]["metrics"]), tuple(config["objective"]["weights"]))
    problem = Problem(base=base, signature=signature, train=splits.train, val=splits.val,
                      objective=objective, task_model=ModelConfig(**config["task_model"]),
                      proposer=ModelConfig(**config["proposer"]), budget=budget)
    gateway = make_gateway(store, settings)
    ledger = Ledger(budget, test_reserve=test_reserve(splits) if budget.calls is not None else 0,
                    sent_before=(opt.spent or {}).get("provider_calls", 0), sent_at_start=gateway.calls,
                    roles_before=(opt.spent or {}).get("by_role") or {})
    search = Search(SearchConfig(project_id, opt_id, opt.name, strategy.name, strategy.knobs,
                                 config["concurrency"]), problem,
                    store=store, settings=settings, gateway=gateway, ledger=ledger, progress=progress)
    store.claim("optimizations", opt_id, f"optimization '{opt.name}'")
    beating = asyncio.create_task(_heartbeat(store, opt_id))
    progress.emit(SearchStarted(f"optimize {opt.name}: {strategy.name} on {base.ref}, budget "
                                f"{budget.describe()}" + _projected(ledger.projection(), splits)))
    rng = random.Random(config["seed"])
    try:
        try:  # the base and naive k-shot compete on the same val cases as every candidate
            await search.evaluate([search.base], "val")
            await search.add_naive(rng)
            await search.add_decoded()
        except BudgetExhausted:
            pass  # the strategy meets the same limit at its first step
        result = await strategy.optimize(problem, search, rng)
        winner = next(c for c in search.candidates.values() if c.id == result.best.prompt_id)
        if splits.test:
            await search.score_test([c for c in (search.base, search.naive, winner) if c is not None],
                                    splits.test)
    except BaseException as exc:
        interrupted = (KeyboardInterrupt, SystemExit, asyncio.CancelledError)  # Ctrl-C cancels the task
        status = "interrupted" if isinstance(exc, interrupted) else "failed"
        search.save(status=status)
        raise
    finally:
        beating.cancel()
        progress.emit(SearchFinished())
    report = _report(opt.name, config, budget, splits, search, result, winner)
    with store.db.atomic():  # the winner itself stops being a candidate: NAME means it from now on
        if result.improved:
            store.promote_prompt(winner.id)
        search.save(status="completed", winner_prompt_id=winner.id, report=report, finished_at=now())
    return report


def test_reserve(splits) -> int:
    """Calls set aside for the held-out test: the base, naive k-shot and the winner on every test case."""
    return 3 * len(splits.test)


def _projected(projection: dict, splits) -> str:
    if projection["total"] is None:
        return ""
    return (f": at most {projection['search']} calls for the search (the base and naive k-shot on the "
            f"{len(splits.val)} val cases first) and {projection['test']} for them and the winner on the "
            f"{len(splits.test)} test cases")


def _side(search: Search, cand, splits) -> dict:
    return {"ref": cand.prompt.ref, "prompt_id": cand.id, "val": cand.mean(splits.val),
            "val_estimate": cand.estimate(splits.val),
            "train": cand.mean(splits.train), "test": cand.mean(splits.test) if splits.test else None,
            "test_metrics": cand.metric_means(splits.test) if splits.test else {},
            "tokens": cand.tokens, "demos": len(cand.content.demos)}


def _report(name, config, budget, splits, search: Search, result, winner) -> dict:
    base, best = _side(search, search.base, splits), _side(search, winner, splits)
    naive = _side(search, search.naive, splits) if search.naive is not None else None
    constant = (baselines.constant_baseline(search.problem.signature, [c.expected for c in splits.test])
                if splits.test else None)
    collapse = baselines.collapse(search.problem.signature,
                                  [winner.parsed.get(c.id) for c in winner.eligible(splits.test)])
    return {"name": name, "strategy": result.strategy, "status": "completed", "stopped": result.stopped,
            "improved": result.improved,
            "outcome": "improved" if result.improved else "no improvement found",
            "seed": config["seed"], "iterations": result.iterations,
            "objective": search.problem.objective.describe([n for n, _ in search.evaluator.weights]),
            "model": config["task_model"].get("alias") or config["task_model"]["model"],
            "proposer": config["proposer"].get("alias") or config["proposer"]["model"],
            "splits": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                       "method": splits.method},
            "base": base, "naive": naive, "winner": best,
            "lift": _lift(search, winner, base, naive, best, constant, splits),
            "constant_baseline": constant.as_json() if constant else None,
            "collapse": {**collapse.as_json(), "warning": collapse.warning()} if collapse else None,
            "budget": dataclasses.asdict(budget), "projected_calls": search.ledger.projection(),
            "spent": dataclasses.asdict(search.spent),
            "candidates": [c.as_dict() for c in sorted(result.candidates, key=lambda c: c.prompt_id)],
            "diff": diff_text(search.base.prompt, winner.prompt)}


def _lift(search: Search, winner, base_side: dict, naive_side: dict | None, best: dict, constant,
          splits) -> dict:
    """The winner's lift on val over the base, and on test over the strongest of the base, the
    best constant answer and naive k-shot (`test`, `over`: the headline lift, what --min-lift
    gates), with the paired bootstrap p-value against that baseline; and winner vs base on its
    own (`test_over_base`, `p_value` and the 95% interval). `best_baseline` repeats the baseline
    the lift is over (its name, score, the lift and p-value), as reports have always read it."""
    def diff(a: float | None, b: float | None) -> float | None:  # at the 6 digits shown (4/7 - 4/7 is 0)
        return None if a is None or b is None else round(round(a, 6) - round(b, 6), 6) + 0.0

    out = {"val": diff(best["val"], base_side["val"]), "test": None, "over": "base", "over_score": None,
           "over_p_value": None, "over_significant": False, "test_over_base": None, "p_value": None,
           "ci_low": None, "ci_high": None, "best_baseline": None}
    if best["test"] is None or base_side["test"] is None:
        return out
    per_case = {"base": search.base.scores}
    contenders = [("base", base_side["test"])]
    if naive_side is not None and naive_side["test"] is not None:
        per_case["naive"] = search.naive.scores
        contenders.append(("naive", naive_side["test"]))
    if constant is not None:
        per_case["constant"] = {c.id: float(baselines._norm(c.expected.get(constant.field)) == constant.label)
                                for c in splits.test}
        contenders.append(("constant", constant.score))
    over, over_score = max(contenders, key=lambda pair: pair[1])  # the first of equals

    def paired(name: str) -> dict:
        ids = [c.id for c in splits.test if c.id in per_case[name] and c.id in winner.scores]
        return paired_bootstrap([per_case[name][i] for i in ids], [winner.scores[i] for i in ids])

    tests = {name: paired(name) for name in dict.fromkeys(("base", over))}  # each baseline once
    vs_base, over_p = tests["base"], tests[over]["p_value"]
    return {**out, "test": diff(best["test"], over_score), "over": over, "over_score": over_score,
            "over_p_value": round(over_p, 6), "over_significant": over_p < SIGNIFICANCE,
            "test_over_base": diff(best["test"], base_side["test"]), "p_value": round(vs_base["p_value"], 6),
            "ci_low": round(vs_base["ci_low"], 6), "ci_high": round(vs_base["ci_high"], 6),
            "best_baseline": {"name": over, "score": over_score, "lift": diff(best["test"], over_score),
                              "p_value": round(over_p, 6), "significant": over_p < SIGNIFICANCE}}


BASELINE_NAMES = {"base": "the base", "constant": "the best constant answer", "naive": "naive k-shot"}


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
    if min_lift is not None:  # over the strongest of the base, the best constant answer and naive k-shot
        lift, improved = report["lift"], report.get("improved", True)
        actual, p_value = lift["test"], lift.get("over_p_value")
        # a positive lift passes only when it is real: p < SIGNIFICANCE against that baseline
        significant = min_lift <= 0 or bool(lift.get("over_significant"))
        ok = improved and actual is not None and actual >= min_lift and significant
        over = BASELINE_NAMES.get(lift.get("over"), "the base")
        why = (" (no improvement found: the base was kept)" if not improved else
               f" (not significant: p = {p_value:.3g} >= {SIGNIFICANCE})" if not significant and p_value is not None
               else "")
        gates.append(GateResult(f"min_lift {report['base']['ref']} -> {report['winner']['ref']}", ok, actual,
                          min_lift, f"test lift {_fmt(actual)} over {over} "
                                    f"{'>=' if actual is not None and actual >= min_lift else '<'} {min_lift}{why}"))
    return gates


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
