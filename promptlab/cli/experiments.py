"""`promptlab run FILE.yaml`: set up an experiment idempotently, evaluate it, apply its gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from promptlab.cli.common import (Baseline, JUnit, MaxErrorRate, MaxRegression, MinPassK, MinPassRate, MinScore,
                                  Notify, ProgressMode, ReportMd)


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
            max_error_rate: MaxErrorRate = None, min_pass_k: MinPassK = None, max_regression: MaxRegression = None,
            baseline: Baseline = None, junit: JUnit = None, report_md: ReportMd = None,
            notify: Notify = None, progress: ProgressMode = "auto",
            allow_endpoints: Annotated[bool, typer.Option(
                "--allow-endpoints", help="Let the file's own models send their key variables to the "
                "api_base it names (refused by default unless promptlab.toml configures or [trust]s them).")] = False,
            json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
        """Run an experiment file: project, signature, prompts, cases, models, metrics, gates.

        Gate flags override the file's gates; exit 1 when a gate fails. Running the same file again
        adds nothing that exists and continues its interrupted runs (replies come from the cache).

        Examples:

        \b
          promptlab run examples/quickstart/experiment.yaml
          promptlab run experiment.yaml --json --junit ci.xml --min-score 0.8
          promptlab run experiment.yaml --model gpt --split test --limit 20
          promptlab run experiment.yaml --notify https://hooks.example.com/promptlab
        """
        from promptlab.cases.files import read_experiment_file

        read_experiment_file(file)  # bad YAML (an alias bomb) fails before the evaluation machinery loads
        from promptlab import display
        from promptlab.cli.common import gate_flags, run_plans
        from promptlab.config import parse_concurrency
        from promptlab.display.progress import make_progress
        from promptlab.optimizers import experiment as optimize_section
        from promptlab.services.experiment import ExperimentRequest, check, prepare
        from promptlab.services.notify import check_url

        check_url(notify)  # before anything is written
        state = ctx.obj
        state.settings.allow_endpoints = allow_endpoints
        flags = gate_flags(min_score=min_score, min_pass_rate=min_pass_rate, max_error_rate=max_error_rate,
                           min_pass_k=min_pass_k, max_regression=max_regression, baseline=baseline)
        request = ExperimentRequest(file, models=model, split=split, limit=limit,
                                    concurrency=concurrency and parse_concurrency(concurrency, "--concurrency"),
                                    use_cache=not no_cache, gates=flags)
        checked = check(state.settings, request)  # before the store is opened: a bad file writes nothing
        prepared = prepare(state.store, state.settings, request, checked)

        def optimize() -> tuple[dict, list, Any]:  # after the baseline eval: search, then gate on the test split
            shown = make_progress("none" if json_ and progress == "auto" else progress)  # --json: a quiet search
            try:
                report, gates = optimize_section.run(state.store, state.settings, checked.experiment,
                                                     checked.optimize, prepared.project_id, progress=shown)
            except KeyboardInterrupt:
                typer.echo(f"promptlab: interrupted; finished evaluations are saved. Continue with "
                           f"`{prepared.evaluation.rerun}`, which resumes the optimization", err=True)
                raise typer.Exit(130) from None
            return {"optimization": report}, gates, lambda: display.print_optimization(report)

        run_plans(state, prepared.evaluation, progress=progress, as_json=json_, gates=checked.gates,
                  extra={"experiment": str(file)}, junit=junit, report_md=report_md,
                  then=optimize if checked.optimize is not None else None, notify=notify)
