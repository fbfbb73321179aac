"""`promptlab guard`: re-optimize a labelled prompt from a scheduled CI job when its score drops.

Each call takes one decision, stores it and returns it with its exit code:

    skipped: paused           the guard is paused (by hand, or after three triggered optimizations
                              in a row without a significant lift); nothing is evaluated      exit 0
    skipped: above threshold  the version scored at least the threshold on its golden cases   exit 0
    skipped: cooldown         below the threshold, but the last optimization was too recent   exit 1
    ran                       below the threshold: an optimization ran; exit 0 when it found a
                              significant lift (moved to the label with `promote`), else 1

Two guards started together cannot both optimize: the cooldown is checked and taken in one write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from promptlab.errors import ProviderError, UsageError
from promptlab.store.guards import PAUSE_AFTER, Guards

if TYPE_CHECKING:
    from promptlab.config import Settings
    from promptlab.optimizers.base import Budget
    from promptlab.progress import Progress
    from promptlab.store import Store

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, where: str = "--cooldown") -> float:
    """'0s', '30m', '24h', '7d' → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not match:
        raise UsageError(f"{where}: '{text}' is not a duration; give a number and a unit: 0s, 30m, 24h or 7d")
    return float(match[1]) * _UNITS[match[2]]


@dataclass(frozen=True)
class GuardRequest:
    prompt: str                     # NAME@LABEL (or NAME@VERSION, NAME)
    below: float                    # optimize when the score is below this
    cooldown_s: float
    strategy: str
    budget: Budget
    metric: str = "exact_match"
    model: str | None = None
    proposer: str | None = None
    split: str | None = None        # golden cases of this split only (default: every golden case)
    seed: int = 0
    knobs: dict[str, Any] = field(default_factory=dict)
    promote: bool = False           # a significant winner takes the label


def family(ref: str) -> str:
    return ref.split("@", 1)[0]


def guard(store: Store, settings: Settings, project_id: int, request: GuardRequest, *,
          progress: Progress) -> dict[str, Any]:
    from promptlab.optimizers import STRATEGIES

    if request.strategy not in STRATEGIES:
        raise UsageError(f"guard: unknown --strategy '{request.strategy}'; use one of {', '.join(STRATEGIES)}")
    version = store.prompt(project_id, request.prompt)  # an unknown prompt or label: exit 2, nothing stored
    guards = Guards(store.db)
    state = guards.get(project_id, family(request.prompt))
    decision: dict[str, Any] = {"ref": version.ref, "threshold": request.below}
    if state.paused:
        return _decide(guards, state.id, decision, "skipped: paused", 0,
                       f"{state.paused_reason or 'paused'}; `promptlab guard --prompt {state.prompt} --resume` "
                       "resumes it")
    run_name, score = _evaluate(store, settings, project_id, version, request)
    decision.update(run=run_name, score=score)
    if score >= request.below:
        return _decide(guards, state.id, decision, "skipped: above threshold", 0,
                       f"{version.ref} scores {score:.3f} >= {request.below} on its golden cases")
    until = guards.claim(state.id, request.cooldown_s)
    if until is not None:
        return _decide(guards, state.id, decision, "skipped: cooldown", 1,
                       f"{version.ref} scores {score:.3f} < {request.below}; the last optimization was too "
                       f"recent, the next may start after {until}")
    report = _optimize(store, settings, project_id, version.ref, request, progress)
    from promptlab.optimizers.optimize import SIGNIFICANCE

    # the guard replaces the labelled version: what counts is the winner's lift over it (the base), paired
    lift = report["lift"]
    gain, p_value = lift.get("test_over_base"), lift.get("p_value")
    gained = bool(report["improved"] and p_value is not None and p_value < SIGNIFICANCE and (gain or 0) > 0)
    state = guards.after_optimization(state.id, gained)
    decision.update(optimization=report["name"], lift=gain, p_value=p_value, significant=int(gained))
    if gained:
        message = f"{report['winner']['ref']} lifts the test score by {gain:+.3f} (p {p_value:.3g})"
        label = request.prompt.split("@", 1)[1] if "@" in request.prompt else None
        if request.promote and label and not label.isdigit():
            store.set_label(store.prompt(project_id, report["winner"]["ref"]), label)
            message += f"; label '{label}' moved to it"
        elif label and not label.isdigit():
            message += f"; `promptlab prompt label {report['winner']['ref']} {label}` promotes it"
    else:
        message = f"{report['outcome']}: no significant lift over {version.ref}"
        if state.paused:
            message += f"; {PAUSE_AFTER} triggered optimizations in a row without one: the guard is now paused"
    return _decide(guards, state.id, decision, "ran", 0 if gained else 1, message, report=report)


def _decide(guards: Guards, guard_id: int, decision: dict[str, Any], verdict: str, code: int, message: str,
            report: dict | None = None) -> dict[str, Any]:
    row = {"score": None, "run": None, "optimization": None, "lift": None, "p_value": None, "significant": None,
           **decision, "decision": verdict, "exit_code": code, "message": message}
    guards.record(guard_id, row)
    return {**row, "significant": None if row["significant"] is None else bool(row["significant"]),
            "optimization_report": report}


def _evaluate(store: Store, settings: Settings, project_id: int, version: Any,
              request: GuardRequest) -> tuple[str, float]:
    """The version's headline score on its golden cases (cached when nothing changed)."""
    from promptlab.evaluation.plan import metric_context, plan_run
    from promptlab.progress import SilentProgress
    from promptlab.services.evaluate import EvaluateRequest, evaluate

    cases = store.cases(project_id, split=request.split, golden=True)
    if not cases:
        raise UsageError(f"guard: {version.ref} has no golden cases{' in split ' + request.split if request.split else ''}"
                         " to be judged on; import some with `promptlab case import`")
    name = f"guard-{family(request.prompt)}-{_stamp()}"
    with store.db.atomic():
        plan = plan_run(store, project_id, version, settings.resolve_model(request.model), cases, name=name,
                        metric_specs=[request.metric], concurrency=settings.concurrency(),
                        context=metric_context(settings), where="guard")
    ended = evaluate(store, settings, EvaluateRequest([plan], settings.concurrency(), use_cache=True),
                     progress=SilentProgress()).runs[0]
    if ended["status"] != "completed":
        raise ProviderError(f"guard: the evaluation '{name}' {ended['status']}: {ended.get('error')}; "
                            f"nothing was decided")
    score = (ended.get("scores") or {}).get(_metric_name(request.metric))
    if score is None:
        raise UsageError(f"guard: the run '{name}' has no score for metric '{request.metric}'")
    return name, float(score)


def _metric_name(spec: str) -> str:
    return spec.split(":", 1)[0]


def _optimize(store: Store, settings: Settings, project_id: int, ref: str, request: GuardRequest,
              progress: Progress) -> dict:
    from promptlab.optimizers.base import Objective
    from promptlab.optimizers.optimize import OptimizeRequest, start

    return start(store, settings, project_id, OptimizeRequest(
        name=f"guard-{family(request.prompt)}-{_stamp()}", strategy=request.strategy, prompt=ref,
        model=request.model, proposer=request.proposer, budget=request.budget, seed=request.seed,
        knobs=request.knobs, objective=Objective((request.metric,), (1.0,))), progress=progress)


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")


def status(store: Store, project_id: int, prompt: str) -> dict[str, Any]:
    guards = Guards(store.db)
    state = guards.find(project_id, family(prompt))
    if state is None:
        return {"prompt": family(prompt), "guarded": False, "paused": False, "no_gain": 0,
                "last_optimized_at": None, "decisions": []}
    return {"prompt": state.prompt, "guarded": True, "paused": state.paused, "paused_reason": state.paused_reason,
            "no_gain": state.no_gain, "last_optimized_at": state.last_optimized_at,
            "decisions": guards.decisions(state.id)}


def set_paused(store: Store, project_id: int, prompt: str, paused: bool) -> dict[str, Any]:
    store.prompt(project_id, prompt)  # the family exists
    guards = Guards(store.db)
    state = guards.get(project_id, family(prompt))
    guards.set_paused(state.id, paused, "paused by hand" if paused else None)
    return status(store, project_id, prompt)
