"""`promptlab project add|list|show|use|delete`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from promptlab.cli import completion
from promptlab.cli.common import AsJson, Yes, confirm, emit_json, read_only
from promptlab.terminal import printable

app = typer.Typer(help="Projects: each holds signatures, prompts, cases and runs.", no_args_is_help=True)


@app.command("add")
def add(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The project's name (unique).")],
        description: Annotated[Optional[str], typer.Option(help="What the project is for.")] = None,
        model: Annotated[Optional[str], typer.Option(help="Default model alias.")] = None,
        allow_code_execution: Annotated[Optional[bool], typer.Option(
            "--allow-code-execution/--no-allow-code-execution",
            help="Let metrics run model-written code in the sandbox (python_tests).")] = None) -> None:
    """Create a project (or update its description, default model and settings)."""
    store = ctx.obj.store
    with store.db.atomic():
        project_id = store.ensure_project(name, description, model)
        if allow_code_execution is not None:
            store.update_project_settings(project_id, allow_code_execution=allow_code_execution)
    note = {None: "", True: "; metrics may run model-written code (sandboxed)",
            False: "; metrics may not run model-written code"}[allow_code_execution]
    typer.echo(printable(f"project {name} (id {project_id}){note}"))


@app.command("list")
@read_only
def list_(ctx: typer.Context, json_: AsJson = False) -> None:
    """List projects."""
    from promptlab import display

    _, current = ctx.obj.current_project()
    projects = [{**p, "current": p["name"] == current} for p in ctx.obj.store.projects()]
    if json_:
        return emit_json(projects)
    display.print_table("projects", ["name", "current", "description", "default model", "created"],
                        [[p["name"], "*" if p["current"] else "", p["description"], p["default_model"],
                          p["created_at"]] for p in projects])


@app.command("use")
def use(ctx: typer.Context,
        name: Annotated[Optional[str], typer.Argument(
            metavar="[NAME]", help="The project commands work on when --project is not given.",
            autocompletion=completion.projects)] = None,
        unset: Annotated[bool, typer.Option("--unset", help="Have no current project in this database.")] = False,
        json_: AsJson = False) -> None:
    """Choose the current project of this database (without NAME: say which it is and why).

    Commands use --project, else PROMPTLAB_PROJECT, else the project chosen here, else [defaults]
    project in promptlab.toml, else the only project there is."""
    from promptlab.errors import UsageError

    state = ctx.obj
    if name and unset:
        raise UsageError("project use: give NAME or --unset, not both")
    if name or unset:
        state.store.use_project(name)
    source, current = state.current_project()
    if json_:
        return emit_json({"project": current, "from": source or None})
    typer.echo(printable(f"current project: {current} (from {source})" if current else
                         "no current project: commands need --project when the database holds more than one"))


@app.command("show")
@read_only
def show(ctx: typer.Context,
         name: Annotated[Optional[str], typer.Argument(
             metavar="[NAME]", help="The project (default: the current one, or the only one).",
             autocompletion=completion.projects)] = None,
         json_: AsJson = False) -> None:
    """Counts of what a project holds."""

    store = ctx.obj.store
    project = store.db["projects"].get(ctx.obj.project_id(name))
    counts = {table: store.db[table].count_where("project_id = ?", [project["id"]])
              for table in ("signatures", "prompts", "cases", "runs", "optimizations")}
    data = {**project, "counts": counts}
    if json_:
        return emit_json(data)
    typer.echo(printable(f"{project['name']}: {project['description'] or ''}"))
    for table, count in counts.items():
        typer.echo(f"  {table}: {count}")


@app.command("delete")
def delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The project to delete.", autocompletion=completion.projects)],
           yes: Yes = False) -> None:
    """Delete a project with its signatures, prompts, cases, runs and optimizations (the response
    cache, shared by every project, stays)."""

    store = ctx.obj.store
    project = store.project(name)
    counts = {table: store.db[table].count_where("project_id = ?", [project["id"]])
              for table in ("prompts", "cases", "runs")}
    confirm(f"Delete project '{name}' and its {counts['prompts']} prompt versions, {counts['cases']} "
            f"cases and {counts['runs']} runs?", yes)
    deleted = store.delete_project(project["id"])
    typer.echo(printable(f"deleted project {name}: " + (", ".join(f"{n} {t}" for t, n in deleted.items())
                                                       or "it was empty")))
