"""`promptlab run FILE.yaml`: set up an experiment idempotently, evaluate it, apply its gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(ctx: typer.Context,
            file: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
            concurrency: Annotated[Optional[int], typer.Option(min=1, help="Override eval.concurrency.")] = None,
            no_cache: Annotated[bool, typer.Option("--no-cache", help="Call the provider even when cached.")] = False,
            json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
        """Run an experiment file: project, signature, prompts, cases, models, metrics, gates."""
        from promptlab.cli.common import run_plans
        from promptlab.experiment import load_experiment, setup
        from promptlab.gates import validate_gates

        state = ctx.obj
        experiment = load_experiment(file, state.settings)
        validate_gates(experiment.spec.gates, f"{file}: gates")
        workers = concurrency or experiment.spec.eval.concurrency or state.settings.defaults.concurrency
        _, plans = setup(state.store, experiment, concurrency=workers)
        run_plans(state, plans, concurrency=workers,
                  use_cache=experiment.spec.eval.cache and not no_cache, as_json=json_,
                  gates=experiment.spec.gates, extra={"experiment": str(file)})
