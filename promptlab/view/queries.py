"""The viewer's only way into the database: a read-only connection per request, and the few
queries the pages need beyond the report's facts.

`mode=ro` opens the file read-only, so SQLite can neither write it nor checkpoint the
write-ahead log into it; `query_only` refuses any statement that would write, even to
the log. The writers are other processes (eval, optimize); in WAL mode a reader sees
their last commit and never blocks them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from promptlab.store.records import Run
from promptlab.store import BUSY_TIMEOUT_MS, Database, Store

RATE_WINDOW_S = 10.0  # calls/s is measured over the results stored in the last few seconds
RUN_SORTS = ("created", "name", "score", "n", "errors", "status")
PAGE_SIZE = 100  # results on a run's page
RESULT_STATUSES = ("pass", "fail", "error")


@contextlib.contextmanager
def reading(path: Path) -> Iterator[Store]:
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    try:
        conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("pragma query_only = 1")
        yield Store(Database(conn, recursive_triggers=False), path)
    finally:
        conn.close()


def projects(store: Store) -> list[dict]:
    """Every project with how many prompt families, cases, runs and optimizations it holds."""
    return [dict(r) for r in store.db.query("""
        select p.id, p.name, p.description,
               (select count(distinct name) from prompts where project_id = p.id) as prompts,
               (select count(*) from cases where project_id = p.id) as cases,
               (select count(*) from runs where project_id = p.id and optimization_id is null) as runs,
               (select count(*) from optimizations where project_id = p.id) as optimizations
        from projects p order by p.name""")]


def project(store: Store, project_id: int) -> dict:
    from promptlab.errors import NotFoundError

    row = store.db.execute("select id, name, description from projects where id = ?", [project_id]).fetchone()
    if row is None:
        raise NotFoundError(f"no project with id {project_id}")
    return dict(zip(("id", "name", "description"), row))


def runs(store: Store, project_id: int, *, prompt: str | None, model: str | None, status: str | None,
         optimizer_runs: bool, sort: str, descending: bool) -> list[dict]:
    """The runs list with its filters, sorted by one column (missing values last)."""
    rows = store.run_rows(project_id, prompt_name=prompt or None, model=model or None, status=status or None,
                          optimizer_runs=optimizer_runs)
    ids = dict(store.db.execute("select name, id from runs where project_id = ?", [project_id]).fetchall())
    key = {"created": "created_at"}.get(sort, sort if sort in RUN_SORTS else "created_at")
    present = sorted((r for r in rows if r[key] is not None), key=lambda r: r[key], reverse=descending)
    return [r | {"id": ids[r["name"]]} for r in present + [r for r in rows if r[key] is None]]


def run_filters(store: Store, project_id: int) -> dict[str, list[str]]:
    """The values each runs-list filter can take."""
    def distinct(sql: str) -> list[str]:
        return [r[0] for r in store.db.execute(sql, [project_id]).fetchall() if r[0] is not None]

    return {"prompt": distinct("select distinct p.name from runs r join prompts p on p.id = r.prompt_id "
                               "where r.project_id = ? order by 1"),
            "model": distinct("select distinct model from runs where project_id = ? order by 1"),
            "status": distinct("select distinct status from runs where project_id = ? order by 1")}


def optimizations(store: Store, project_id: int) -> list[dict]:
    return [dict(r) for r in store.db.query(
        "select id, name, strategy, status, created_at from optimizations where project_id = ? order by id desc",
        [project_id])]


def prompt_families(store: Store, project_id: int) -> list[dict]:
    return [dict(r) for r in store.db.query(
        "select name, count(*) as versions, sum(candidate) as candidates, max(created_at) as updated_at "
        "from prompts where project_id = ? group by name order by name", [project_id])]


def progress(store: Store, run: Run) -> dict[str, Any]:
    """A run's live counters from its stored results (its summary is written only when it ends)."""
    done, passed, errors, cached = store.db.execute(
        "select count(*), coalesce(sum(passed), 0), coalesce(sum(error_kind is not null), 0), "
        "coalesce(sum(cached), 0) from results where run_id = ?", [run.id]).fetchone()
    now = datetime.now(timezone.utc)
    since = max(_time(run.created_at) or now, now - timedelta(seconds=RATE_WINDOW_S))
    calls = store.db.execute(
        "select coalesce(sum(coalesce(attempts, 1)), 0) from results where run_id = ? and cached = 0 "
        "and created_at >= ?", [run.id, since.isoformat(timespec="milliseconds")]).fetchone()[0]
    window = (now - since).total_seconds()
    total = len(run.case_ids) * (run.repeat or 1)
    if run.status == "running":
        rate = round(calls / window, 2) if window > 0 else None
    else:  # an ended run: the rate its summary measured over its whole session
        rate = (run.summary or {}).get("calls_per_s")
    return {"status": run.status, "done": done, "total": total, "passed": passed, "errors": errors,
            "cached": cached, "pass_rate": passed / done if done else None, "calls_per_s": rate}


def _time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
