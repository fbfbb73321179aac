"""The `optimize:` section of an experiment file, run by `promptlab run` after the baseline eval.

    optimize:
      prompt: classifier        # which of the file's prompts is the base (default: the first)
      strategy: bootstrap       # iterative | bootstrap | genetic | mcts | reflect | mipro | params
      model: local              # task model (default: the file's first model)
      proposer: local           # model that writes edits (default: the task model)
      budget: {calls: 600}      # calls, tokens and/or cost
      seed: 0                   # the search's seed
      split_seed: 0             # the split's own seed
      knobs: {max_demos: 8}
      objective: {exact_match: 1.0}   # weights over the file's metrics (default: the first metric)
      splits: [0.4, 0.3, 0.3]         # for cases without a split (fractions or counts)
      gates: {min_test_score: 0.8, min_lift: 0.1}

The optimization is named after its settings (or `name:`): running the file
again reuses a finished one and resumes an interrupted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptlab.errors import UsageError
from promptlab.models import content_hash
from promptlab.optimizers import UnknownStrategyError, get_strategy
from promptlab.optimizers.base import Budget, KnobError, Objective

if TYPE_CHECKING:
    from promptlab.config import Settings
    from promptlab.evaluation.experiment import Experiment
    from promptlab.progress import Progress
    from promptlab.store import Store


class BudgetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    calls: int | None = Field(default=None, ge=1)
    tokens: int | None = Field(default=None, ge=1)
    cost: float | None = Field(default=None, ge=0)


class OptimizeGates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_test_score: float | None = None
    min_lift: float | None = None


class OptimizeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    prompt: str | None = None
    strategy: str = "bootstrap"
    model: str | None = None
    proposer: str | None = None
    budget: BudgetSpec = BudgetSpec(calls=500)
    seed: int = 0
    split_seed: int = 0
    knobs: dict[str, Any] = Field(default_factory=dict)
    objective: dict[str, float] | None = None
    splits: list[float] | None = None
    concurrency: int | None = Field(default=None, ge=1)
    gates: OptimizeGates = OptimizeGates()


def check(experiment: Experiment, settings: Settings) -> OptimizeSpec | None:
    """Validate the section (before anything is written); None if the file has none."""
    raw, path = experiment.spec.optimize, experiment.path
    if raw is None:
        return None
    try:
        spec = OptimizeSpec(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"{path}: field 'optimize.{'.'.join(map(str, err['loc']))}': {err['msg']}; "
                         f"fix that field") from None
    try:
        strategy = get_strategy(spec.strategy, spec.knobs)
    except (KnobError, UnknownStrategyError) as exc:
        raise UsageError(f"{path}: optimize: {exc}") from None
    try:
        getattr(strategy, "check_ready", lambda: None)()
    except UsageError as exc:
        raise UsageError(f"{path}: optimize: {exc}") from None
    names = [p.name for p in experiment.spec.prompts]
    if spec.prompt is not None and spec.prompt not in names:
        raise UsageError(f"{path}: optimize.prompt '{spec.prompt}' is not one of the file's prompts "
                         f"({', '.join(names)})")
    aliases = {m.alias for m in experiment.models}
    for key in ("model", "proposer"):
        value = getattr(spec, key)
        if value is not None and value not in aliases:
            try:
                settings.resolve_model(value)
            except UsageError as exc:
                raise UsageError(f"{path}: optimize.{key}: {exc}") from None
    if spec.objective is not None:
        known = _metric_names(experiment)
        unknown = sorted(set(spec.objective) - set(known))
        if unknown or not spec.objective:
            raise UsageError(f"{path}: optimize.objective: '{unknown[0] if unknown else ''}' is not one of "
                             f"the file's metrics ({', '.join(known)})")
    if spec.splits is not None and len(spec.splits) != 3:
        raise UsageError(f"{path}: optimize.splits: give three sizes [train, val, test]")
    if spec.budget.calls is None and spec.budget.tokens is None and spec.budget.cost is None:
        raise UsageError(f"{path}: optimize.budget: set calls, tokens or cost")
    return spec


def _metric_names(experiment: Experiment) -> list[str]:
    return [m if isinstance(m, str) else str(m.get("name")) for m in experiment.spec.metrics]


def run(store: Store, settings: Settings, experiment: Experiment, spec: OptimizeSpec, project_id: int,
        *, progress: Progress) -> tuple[dict, list]:
    """Start (or reuse/resume) the optimization, reporting to `progress`; (its report, gate results)."""
    from promptlab.optimizers.optimize import OptimizeRequest, check_gates, resume, start

    prompt_spec = next(p for p in experiment.spec.prompts if p.name == (spec.prompt or experiment.spec.prompts[0].name))
    digest = experiment.content(store, project_id, prompt_spec).hash()
    base = next(p for p in store.prompts(project_id, prompt_spec.name) if p.content_hash == digest)
    metric_specs = experiment.spec.metrics
    names = _metric_names(experiment)
    weights = spec.objective or {names[0]: 1.0}
    objective = Objective(tuple(metric_specs[names.index(n)] for n in weights), tuple(weights.values()))
    settings_digest = content_hash({"spec": spec.model_dump(mode="json"), "base": digest,
                                    "metrics": metric_specs})[:8]
    name = spec.name or f"{prompt_spec.name}-{spec.strategy}-{settings_digest}"
    models = {m.alias: m for m in experiment.models}
    if store.find_optimization(project_id, name) is not None:
        report = resume(store, settings, project_id, name, progress=progress)
    else:
        request = OptimizeRequest(
            name=name, strategy=spec.strategy, prompt=base.ref,
            model=spec.model or experiment.models[0].alias, proposer=spec.proposer,
            budget=Budget(**spec.budget.model_dump()), seed=spec.seed, knobs=spec.knobs,
            objective=objective, split_sizes=tuple(spec.splits) if spec.splits else None,
            split_seed=spec.split_seed, concurrency=spec.concurrency)
        report = start(store, settings, project_id, request, progress=progress, models=models)
    gates = check_gates(report, min_test_score=spec.gates.min_test_score, min_lift=spec.gates.min_lift)
    return report, gates

