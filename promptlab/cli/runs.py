"""`promptlab runs list|show`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from promptlab.cli.common import emit_json

app = typer.Typer(help="Runs: list them, show one.", no_args_is_help=True)
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
    """One run: scores with intervals, per-metric details, failed cases."""
    import json

    from promptlab import display
    from promptlab.evaluation import run_json

    store = ctx.obj.store
    project_id = ctx.obj.project_id(project)
    run = store.run(project_id, name)
    data = run_json(run, store.prompt_by_id(run["prompt_id"]))
    results = store.results(run["id"])
    failed = [r for r in results if not r["passed"]]
    if json_:
        return emit_json(data | {"summary": run["summary"], "failed": failed[:failures]})
    display.print_runs([data])
    cases = {c.id: c for c in store.cases(project_id, ids=[r["case_id"] for r in failed[:failures]])}
    display.print_table(f"failed cases ({len(failed)})", ["case", "input", "expected", "output", "error"],
                        [[r["case_id"], json.dumps(cases[r["case_id"]].inputs, ensure_ascii=False)[:60],
                          json.dumps(cases[r["case_id"]].expected, ensure_ascii=False)[:30],
                          (r["output"] or "")[:40], r["error"] or r["parse_error"]] for r in failed[:failures]])
