"""`promptlab run FILE.yaml`: set up an experiment idempotently, evaluate it, apply its gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from promptlab.cli.common import (Baseline, JUnit, MaxErrorRate, MaxRegression, MinPassRate, MinScore,
                                  ReportMd)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(ctx: typer.Context,
            file: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
            concurrency: Annotated[Optional[str], typer.Option(
                metavar="N|auto", help="Override eval.concurrency (auto: adapts to rate limits).")] = None,
            model: Annotated[list[str], typer.Option(
                help="Evaluate on this model instead of the file's models (repeatable).")] = [],
            split: Annotated[Optional[str], typer.Option(help="Override eval.split: only cases of this split.")] = None,
            limit: Annotated[Optional[int], typer.Option(min=1, help="Override eval.limit: at most N cases.")] = None,
            no_cache: Annotated[bool, typer.Option("--no-cache", help="Call the provider even when cached.")] = False,
            min_score: MinScore = None, min_pass_rate: MinPassRate = None,
            max_error_rate: MaxErrorRate = None, max_regression: MaxRegression = None,
            baseline: Baseline = None, junit: JUnit = None, report_md: ReportMd = None,
            json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
        """Run an experiment file: project, signature, prompts, cases, models, metrics, gates.

        Gate flags override the file's gates; exit 1 when a gate fails. Running the same file again
        adds nothing that exists and continues its interrupted runs (replies come from the cache).

        Examples:

        \b
          promptlab run examples/quickstart/experiment.yaml
          promptlab run experiment.yaml --json --junit ci.xml --min-score 0.8
          promptlab run experiment.yaml --model gpt --split test --limit 20
        """
        import functools

        from promptlab import batch as batches
        from promptlab.cli.common import gate_flags, run_plans
        from promptlab.config import parse_concurrency
        from promptlab.experiment import load_experiment, setup
        from promptlab.gates import check_baseline, validate_gates

        state = ctx.obj
        evals = {k: v for k, v in (("split", split), ("limit", limit)) if v is not None}
        overrides = {**({"models": model} if model else {}), **({"eval": evals} if evals else {})}
        experiment = load_experiment(file, state.settings, overrides)
        from promptlab.optimizers import experiment as optimize_section

        optimize = optimize_section.check(experiment, state.settings)
        flags = gate_flags(min_score=min_score, min_pass_rate=min_pass_rate, max_error_rate=max_error_rate,
                           max_regression=max_regression, baseline=baseline)
        gates = {**experiment.spec.gates, **flags}
        validate_gates(gates, f"{file}: gates")
        project_row = next((p for p in state.store.projects() if p["name"] == experiment.spec.project), None)
        check_baseline(state.store, project_row["id"] if project_row else None, gates,
                       [p.name for p in experiment.spec.prompts], str(file))
        workers = state.settings.concurrency(concurrency and parse_concurrency(concurrency, "--concurrency"),
                                             experiment.spec.eval.concurrency)
        mode = experiment.spec.eval.mode
        if mode == "batch":  # before anything is written
            for model in experiment.models:
                batches.check(model)
        project_id, plans = setup(state.store, experiment, concurrency=workers, settings=state.settings)
        chosen = batches.choose(mode, plans, state.store, state.settings.batch)
        then = None
        if optimize is not None:  # after the baseline eval: search, then gate on the held-out test
            then = functools.partial(optimize_section.run, state.store, state.settings, experiment,
                                     optimize, project_id, quiet=json_)
        run_plans(state, plans, concurrency=workers,
                  use_cache=experiment.spec.eval.cache and not no_cache, as_json=json_,
                  gates=gates, extra={"experiment": str(file)}, junit=junit, report_md=report_md,
                  then=then, rerun=f"promptlab run {file}", batch=frozenset(chosen))
