"""`promptlab optimizations list`: the optimizations of a project, newest first."""

from __future__ import annotations

import typer

from promptlab.cli.common import AsJson, Project, emit_json, read_only

app = typer.Typer(help="Optimizations: list them (`promptlab optimize` starts one, `promptlab report "
                       "NAME` shows one).", no_args_is_help=True)


@app.command("list")
@read_only
def list_(ctx: typer.Context,
          project: Project = None,
          json_: AsJson = False) -> None:
    """List optimizations, newest first: name, strategy, status, base and winner, test lift, calls."""
    from promptlab import display

    store = ctx.obj.store
    rows = []
    for opt in reversed(store.optimizations(ctx.obj.project_id(project))):
        report, spent = opt.report or {}, opt.spent or {}
        versions = {i: store.prompt_by_id(i).ref for i in (opt.base_prompt_id, opt.winner_prompt_id) if i}
        rows.append({"name": opt.name, "strategy": opt.strategy, "status": opt.status,
                     "outcome": report.get("outcome"), "base": versions.get(opt.base_prompt_id),
                     "winner": versions.get(opt.winner_prompt_id),
                     "test_lift": (report.get("lift") or {}).get("test"),
                     "calls": spent.get("provider_calls", spent.get("calls")), "created_at": opt.created_at})
    if json_:
        return emit_json(rows)
    display.print_table("optimizations", ["name", "strategy", "status", "base", "winner", "test lift", "calls",
                                          "created"],
                        [[r["name"], r["strategy"], r["outcome"] or r["status"], r["base"], r["winner"],
                          "-" if r["test_lift"] is None else f"{r['test_lift']:+.3f}", r["calls"],
                          (r["created_at"] or "")[:16].replace("T", " ")] for r in rows])
