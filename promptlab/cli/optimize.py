"""`promptlab optimize`: search for a better prompt version and prove it on held-out cases."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from promptlab.cli import completion
from promptlab.cli.common import Notify, ProgressMode, Project
from promptlab.optimizers import STRATEGIES

_HELP = """Search for a better version of a prompt and report it against the base on the held-out test split.

Every candidate becomes a prompt version (lineage, made_by optimize:NAME) kept out of the way
(`prompt list --candidates` shows them), every evaluation a run (cached, resumable). A candidate
wins only by beating the base's val score by more than min_gain (then best train, then fewest
tokens); the winner becomes the latest version of the prompt. Otherwise: "no improvement found",
the base is kept and no version is added. --budget-calls caps every request sent to the provider
(test scoring, proposer calls and retries included). Exit codes: 0 ok, 1 a gate failed,
2 bad input, 3 provider failure.

Examples:

\b
  promptlab optimize --prompt classifier --strategy bootstrap --budget-calls 400 --name tune-1
  promptlab optimize --prompt classifier@3 --strategy genetic --proposer gpt --seed 1
  promptlab optimize --resume tune-1
"""


class _WithKnobs(TyperCommand):
    """`optimize --help` ends with every strategy's knobs. Reading them imports each strategy
    module, so it happens when that help is printed, not on every start of the CLI."""

    def format_epilog(self, ctx, formatter) -> None:
        from promptlab.optimizers import knob_help

        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text("\b\nKnobs (--knob NAME=VALUE) with their defaults and what they do:\n"
                                 + knob_help())


def register(app: typer.Typer) -> None:
    @app.command("optimize", help=_HELP, cls=_WithKnobs)
    def optimize(ctx: typer.Context,
                 project: Project = None,
                 prompt: Annotated[Optional[str], typer.Option(help="Base version: NAME, NAME@VERSION or NAME@LABEL.", autocompletion=completion.prompts)] = None,
                 strategy: Annotated[str, typer.Option(help=f"One of: {', '.join(STRATEGIES)}.")] = "bootstrap",
                 model: Annotated[Optional[str], typer.Option(help="Task model (alias or LiteLLM model).")] = None,
                 proposer: Annotated[Optional[str], typer.Option(help="Model that writes edits (default: the task model).")] = None,
                 budget_calls: Annotated[Optional[int], typer.Option(min=1, help="Most requests sent to the provider in all: search, proposer, test scoring, retries (default 500 unless another budget is set).")] = None,
                 budget_tokens: Annotated[Optional[int], typer.Option(min=1, help="Most tokens (prompt + completion).")] = None,
                 budget_cost: Annotated[Optional[float], typer.Option(min=0, help="Most cost in USD.")] = None,
                 seed: Annotated[int, typer.Option(help="Seed of the search: demo draws and proposals (same seed, same search).")] = 0,
                 split_seed: Annotated[int, typer.Option(help="Seed of the train/val/test split of cases without a split; kept apart from --seed so searches with different seeds are scored on the same cases.")] = 0,
                 name: Annotated[Optional[str], typer.Option(help="Optimization name (unique in the project).")] = None,
                 knob: Annotated[list[str], typer.Option(help="Strategy knob NAME=VALUE (repeatable; see below).")] = [],
                 metric: Annotated[list[str], typer.Option(help="Objective metric (repeatable; default exact_match).")] = [],
                 weight: Annotated[list[str], typer.Option(help="Objective weight METRIC=W for a weighted mix.")] = [],
                 splits: Annotated[Optional[str], typer.Option(help="TRAIN,VAL,TEST sizes for cases without a split: fractions (0.4,0.3,0.3) or counts (60,60,180).")] = None,
                 concurrency: Annotated[Optional[int], typer.Option(min=1, help="Calls in flight.")] = None,
                 resume: Annotated[Optional[str], typer.Option(help="Continue an interrupted optimization by name.", autocompletion=completion.optimizations)] = None,
                 min_test_score: Annotated[Optional[float], typer.Option(min=0, max=1, help="Gate: the winner's test score >= this.")] = None,
                 min_lift: Annotated[Optional[float], typer.Option(min=-1, max=1, help="Gate: winner test score - the strongest of the base's, the best constant answer's and naive k-shot's >= this, significant (fails when no improvement was found).")] = None,
                 notify: Notify = None,
                 progress: ProgressMode = "auto",
                 quiet: Annotated[bool, typer.Option(help="No progress: --progress none.")] = False,
                 json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
        from promptlab import display
        from promptlab.cli.common import emit_json, metric_spec, parse_pairs, send_notification
        from promptlab.display.progress import make_progress
        from promptlab.errors import GateFailed, UsageError
        from promptlab.hints import command
        from promptlab.optimizers.base import Budget, Objective
        from promptlab.optimizers.optimize import OptimizeRequest, check_gates, resume as resume_opt, start
        from promptlab.optimizers.splits import parse_sizes
        from promptlab.services.notify import check_url

        check_url(notify)  # before anything is written
        if quiet and progress != "auto":  # before anything is written
            raise UsageError(f"optimize: --quiet is --progress none; drop one of --quiet and --progress {progress}")
        shown = make_progress("none" if quiet or (json_ and progress == "auto") else progress)
        state = ctx.obj
        store, settings = state.store, state.settings
        project_id = state.project_id(project)
        opt_name = resume or name or store.free_name("optimizations", project_id,
                                                     f"{(prompt or '').split('@')[0]}-{strategy}")
        try:
            if resume:
                report = resume_opt(store, settings, project_id, resume, progress=shown)
            else:
                if not prompt:
                    raise UsageError("optimize: give --prompt NAME[@VERSION] (or --resume NAME)")
                specs = [metric_spec(m) for m in metric] or ["exact_match"]
                weights = parse_pairs(weight, "--weight")
                names = [s if isinstance(s, str) else s["name"] for s in specs]
                unknown = sorted(set(weights) - set(names))
                if unknown:
                    raise UsageError(f"--weight {unknown[0]}: not one of the --metric names ({', '.join(names)})")
                try:
                    objective = Objective(tuple(specs), tuple(float(weights.get(n, 1.0)) for n in names))
                except (TypeError, ValueError) as exc:
                    raise UsageError(f"--weight: {exc}") from None
                budget = Budget(calls=budget_calls if budget_calls or budget_tokens or budget_cost is not None
                                else 500, tokens=budget_tokens, cost=budget_cost)
                request = OptimizeRequest(
                    name=opt_name, strategy=strategy,
                    prompt=prompt, model=model, proposer=proposer, budget=budget, seed=seed,
                    knobs=parse_pairs(knob, "--knob"), objective=objective,
                    split_sizes=parse_sizes(splits) if splits else None, split_seed=split_seed,
                    concurrency=concurrency)
                report = start(store, settings, project_id, request, progress=shown)
        except KeyboardInterrupt:
            import sys

            print(f"promptlab: interrupted; finished evaluations are saved. Continue with "
                  f"`{command(store, project_id, 'optimize', '--resume', opt_name)}`", file=sys.stderr)
            raise typer.Exit(130)
        gates = check_gates(report, min_test_score=min_test_score, min_lift=min_lift)
        passed = all(g.passed for g in gates)
        summary = {"optimization": report, "passed": passed, "gates": [g.__dict__ for g in gates]}
        if json_:
            emit_json(summary)
        else:
            display.print_optimization(report)
            display.print_gates(gates)
        if notify:
            send_notification(notify, summary, reports={})
        if not passed:
            failing = [g for g in gates if not g.passed]
            raise GateFailed(f"{len(failing)} gate(s) failed: " + "; ".join(g.message for g in failing))

