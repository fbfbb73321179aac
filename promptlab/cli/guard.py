"""`promptlab guard`: re-optimize a labelled prompt when its score falls (for a scheduled CI job)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from promptlab.cli.common import AsJson, Notify, ProgressMode

_HELP = """Evaluate a labelled prompt version on its golden cases and start an optimization only when
its score is below --below and the --cooldown since the last one has passed. After three triggered
optimizations in a row without a significant lift the guard pauses itself. Every decision is stored
(`--status` lists them) and printed.

Exit codes: 0 above the threshold, or an optimization found a significant lift, or the guard is
paused (nothing evaluated; --pause/--resume/--status also exit 0); 1 below the threshold and not
fixed (the optimization found no significant lift, or the cooldown has not passed); 2 bad input;
3 provider failure.

Examples:

\b
  promptlab guard --prompt classifier@production --below 0.80 --cooldown 24h --strategy bootstrap --budget-calls 400
  promptlab guard --prompt classifier --status --json
  promptlab guard --prompt classifier --pause
"""


def register(app: typer.Typer) -> None:
    @app.command("guard", help=_HELP)
    def guard(ctx: typer.Context,
              prompt: Annotated[str, typer.Option(help="The guarded version: NAME@LABEL (or NAME@VERSION, NAME).")],
              below: Annotated[Optional[float], typer.Option(min=0, max=1, help="Optimize when the score is below this.")] = None,
              cooldown: Annotated[str, typer.Option(help="Least time between two optimizations: 0s, 30m, 24h, 7d.")] = "24h",
              strategy: Annotated[str, typer.Option(help="Optimizer strategy.")] = "bootstrap",
              budget_calls: Annotated[int, typer.Option(min=1, help="Most requests one optimization may send.")] = 500,
              metric: Annotated[str, typer.Option(help="The metric judged and optimized.")] = "exact_match",
              model: Annotated[Optional[str], typer.Option(help="Task model (alias or LiteLLM model).")] = None,
              proposer: Annotated[Optional[str], typer.Option(help="Model that writes edits (default: the task model).")] = None,
              split: Annotated[Optional[str], typer.Option(help="Judge on the golden cases of this split only.")] = None,
              seed: Annotated[int, typer.Option(help="Seed of the optimization.")] = 0,
              knob: Annotated[list[str], typer.Option(help="Strategy knob NAME=VALUE (repeatable).")] = [],
              promote: Annotated[bool, typer.Option(help="Move the label to a winner with a significant lift.")] = False,
              pause: Annotated[bool, typer.Option("--pause", help="Pause the guard of this prompt.")] = False,
              resume: Annotated[bool, typer.Option("--resume", help="Resume a paused guard (its count of runs without gain restarts).")] = False,
              status: Annotated[bool, typer.Option("--status", help="Show the guard's state and its latest decisions.")] = False,
              project: Annotated[Optional[str], typer.Option(help="Project name.")] = None,
              notify: Notify = None,
              progress: ProgressMode = "auto",
              json_: AsJson = False) -> None:
        from promptlab.cli.common import emit_json, parse_pairs, send_notification
        from promptlab.errors import UsageError
        from promptlab.services import guard as guards
        from promptlab.services.notify import check_url

        check_url(notify)
        if sum((pause, resume, status)) > 1:
            raise UsageError("guard: give one of --pause, --resume and --status")
        state = ctx.obj
        if pause or resume or status:
            project_id = state.project_id(project)
            shown = (guards.status(state.store, project_id, prompt) if status
                     else guards.set_paused(state.store, project_id, prompt, pause))
            _show_status(shown, json_)
            return
        if below is None:
            raise UsageError("guard: give --below SCORE (the threshold), or --status, --pause or --resume")
        from promptlab.display.progress import make_progress
        from promptlab.optimizers.base import Budget

        request = guards.GuardRequest(prompt=prompt, below=below, cooldown_s=guards.parse_duration(cooldown),
                                      strategy=strategy, budget=Budget(calls=budget_calls), metric=metric,
                                      model=model, proposer=proposer, split=split, seed=seed,
                                      knobs=parse_pairs(knob, "--knob"), promote=promote)
        shown = make_progress("none" if json_ and progress == "auto" else progress)
        decision = guards.guard(state.store, state.settings, state.project_id(project), request, progress=shown)
        if json_:
            emit_json(decision)
        else:
            from promptlab.display import print_diff
            from promptlab.terminal import printable

            typer.echo(printable(f"guard {prompt}: {decision['decision']} — {decision['message']}"))
            report = decision["optimization_report"]
            if report and report["improved"]:
                print_diff(report["diff"])
        if notify:
            send_notification(notify, decision, reports={})
        if decision["exit_code"]:
            raise typer.Exit(decision["exit_code"])


def _show_status(data: dict, as_json: bool) -> None:
    from promptlab.cli.common import emit_json

    if as_json:
        emit_json(data)
        return
    from promptlab.display import print_table
    from promptlab.terminal import printable

    state = "paused" if data["paused"] else "active" if data["guarded"] else "not guarded yet"
    reason = f" ({data.get('paused_reason')})" if data["paused"] and data.get("paused_reason") else ""
    typer.echo(printable(f"guard {data['prompt']}: {state}{reason}; triggered runs without gain in a row: "
                         f"{data['no_gain']}; last optimization: {data['last_optimized_at'] or 'never'}"))
    if data["decisions"]:
        print_table("decisions (newest first)", ["at", "version", "decision", "score", "exit", "detail"],
                    [[d["at"], d["ref"], d["decision"], "" if d["score"] is None else f"{d['score']:.3f}",
                      d["exit_code"], d["message"]] for d in data["decisions"]])
