"""An experiment file's runs: `check` reads the file (no database touched, so a bad file leaves
nothing behind), `prepare` checks what needs the store (the gates' baseline, batch mode's models),
then sets the experiment up idempotently and plans its runs."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab.evaluation import batch as batches
from promptlab.evaluation.experiment import Experiment, load_experiment, setup
from promptlab.evaluation.gates import check_baseline, validate_gates
from promptlab.optimizers import experiment as optimize_section
from promptlab.services.evaluate import EvaluateRequest

if TYPE_CHECKING:
    from promptlab.config import Concurrency, Settings
    from promptlab.store import Store


@dataclass(frozen=True)
class ExperimentRequest:
    file: Path
    models: list[str] = field(default_factory=list)  # instead of the file's models
    split: str | None = None  # overrides eval.split
    limit: int | None = None  # overrides eval.limit
    concurrency: Concurrency | None = None  # overrides eval.concurrency
    use_cache: bool = True  # False: call the provider even when cached
    gates: dict[str, Any] = field(default_factory=dict)  # given gates, over the file's


@dataclass(frozen=True)
class CheckedExperiment:
    experiment: Experiment
    gates: dict[str, Any]  # the file's, overridden by the request's
    optimize: optimize_section.OptimizeSpec | None  # the optimize section, run after the evaluation


@dataclass(frozen=True)
class PreparedExperiment:
    checked: CheckedExperiment
    project_id: int
    evaluation: EvaluateRequest


def check(settings: Settings, request: ExperimentRequest) -> CheckedExperiment:
    evals = {k: v for k, v in (("split", request.split), ("limit", request.limit)) if v is not None}
    overrides = {**({"models": request.models} if request.models else {}), **({"eval": evals} if evals else {})}
    experiment = load_experiment(request.file, settings, overrides)
    optimize = optimize_section.check(experiment, settings)
    gates = {**experiment.spec.gates, **request.gates}
    validate_gates(gates, f"{request.file}: gates")
    return CheckedExperiment(experiment, gates, optimize)


def prepare(store: Store, settings: Settings, request: ExperimentRequest,
            checked: CheckedExperiment) -> PreparedExperiment:
    experiment, gates = checked.experiment, checked.gates
    project_row = next((p for p in store.projects() if p["name"] == experiment.spec.project), None)
    check_baseline(store, project_row["id"] if project_row else None, gates,
                   [p.name for p in experiment.spec.prompts], str(request.file))
    workers = settings.concurrency(request.concurrency, experiment.spec.eval.concurrency)
    mode = experiment.spec.eval.mode
    if mode == "batch":
        for model in experiment.models:
            batches.check(model)
    project_id, plans = setup(store, experiment, concurrency=workers, settings=settings)
    chosen = batches.choose(mode, plans, store, settings.batch)
    evaluation = EvaluateRequest(plans, workers, experiment.spec.eval.cache and request.use_cache,
                                 batch=frozenset(chosen), rerun=shlex.join(["promptlab", "run", str(request.file)]))
    return PreparedExperiment(checked, project_id, evaluation)
