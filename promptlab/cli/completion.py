"""Shell completion of names (`promptlab --install-completion`): projects, runs, prompts and
optimizations, read from the database the command would open through a read-only connection (a
completion never creates or writes a database, and one that cannot read completes nothing
rather than print an error into the command line being typed)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import typer

from promptlab.errors import PromptlabError


def _names(ctx: typer.Context, incomplete: str, sql: str, per_project: bool = True) -> list[str]:
    """The first column of `sql` (`?` the project's name, or every project's) starting with `incomplete`."""
    from promptlab.config import load_settings
    from promptlab.view.queries import reading

    try:
        db = ctx.find_root().params.get("db")
        path = Path(db) if db else load_settings().db_path
        if not path.exists():
            return []
        project = ctx.params.get("project") if per_project else None
        where = "project_id = (select id from projects where name = ?)" if project else "1"
        with reading(path) as store:
            rows = store.db.execute(sql.format(where=where), [project] * sql.count("{where}") if project else [])
            names = sorted({str(r[0]) for r in rows})
    except (PromptlabError, sqlite3.Error, OSError):
        return []
    return [n for n in names if n.startswith(incomplete)]


def projects(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, "select name from projects where {where}", per_project=False)


def runs(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, "select name from runs where {where} and optimization_id is null")


def prompts(ctx: typer.Context, incomplete: str) -> list[str]:
    """NAME, NAME@VERSION and NAME@LABEL (candidates left out, as `prompt list` leaves them)."""
    return _names(ctx, incomplete, "select name from prompts where {where} and candidate = 0 union "
                                   "select name || '@' || version from prompts where {where} and candidate = 0 "
                                   "union select name || '@' || label from prompt_labels where {where}")


def optimizations(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, "select name from optimizations where {where}")


def runs_and_prompts(ctx: typer.Context, incomplete: str) -> list[str]:
    """What `runs compare` takes: a run, or a prompt version meaning its latest run."""
    return runs(ctx, incomplete) + prompts(ctx, incomplete)


def reports(ctx: typer.Context, incomplete: str) -> list[str]:
    """What `report` takes: a run or an optimization."""
    return runs(ctx, incomplete) + optimizations(ctx, incomplete)
