"""`promptlab runs list|show|compare`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from promptlab.cli.common import emit_json

app = typer.Typer(help="Runs: list them, show one, compare two.", no_args_is_help=True)
Project = Annotated[Optional[str], typer.Option(help="Project name (optional when there is one).")]


@app.command("list")
def list_(ctx: typer.Context, project: Project = None,
          limit: Annotated[int, typer.Option(help="Newest N runs.")] = 30,
          json_: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List runs, newest first."""
    from promptlab import display
    from promptlab.evaluation import run_json

    store = ctx.obj.store
    runs = store.runs(ctx.obj.project_id(project), limit=limit)
    data = [run_json(r, store.prompt_by_id(r["prompt_id"])) | {"created_at": r["created_at"]} for r in runs]
    if json_:
        return emit_json(data)
    display.print_runs(data)


@app.command("show")
def show(ctx: typer.Context, name: str, project: Project = None,
         failures: Annotated[int, typer.Option(help="Failed cases to list.")] = 10,
         json_: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One run: scores with intervals, per-label P/R/F1, confusion matrix, failed cases."""
    from promptlab import display
    from promptlab.reports.facts import run_facts

    store = ctx.obj.store
    project_id = ctx.obj.project_id(project)
    facts = run_facts(store, project_id, store.run(project_id, name))
    if json_:
        run = store.run(project_id, name)
        return emit_json(facts["run"] | {"summary": run["summary"], "failed": facts["failed"][:failures],
                                         "slowest": facts["slowest"], "costliest": facts["costliest"],
                                         "distributions": facts["distributions"]})
    display.print_run_facts(facts, failures)


@app.command("compare")
def compare(ctx: typer.Context,
            a: Annotated[str, typer.Argument(help="Run A: a run name, or a prompt version (NAME@VERSION, "
                                                  "NAME@LABEL) meaning its latest completed run.")],
            b: Annotated[str, typer.Argument(help="Run B, compared against A (same forms; a prompt version "
                                                  "takes its latest run on A's model and cases, if any).")],
            project: Project = None,
            model: Annotated[Optional[str], typer.Option(
                help="When A or B is a prompt version: take its runs on this model only.")] = None,
            show: Annotated[int, typer.Option(help="Regressed and fixed cases to list.")] = 20,
            json_: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Compare two runs on their shared cases: deltas with paired bootstrap intervals and p-values,
    McNemar on pass/fail, the cases that regressed and were fixed, and the prompt diff."""
    from promptlab import display
    from promptlab.compare import compare_runs, resolve_runs

    store = ctx.obj.store
    project_id = ctx.obj.project_id(project)
    data = compare_runs(store, project_id, *resolve_runs(store, project_id, a, b, model))
    for warning in data["warnings"]:  # on stderr with --json too: a script's log shows them
        typer.echo(f"promptlab: warning: {warning}", err=True)
    if json_:
        return emit_json(data)
    display.print_comparison(data, show)
