"""A run of any size in seconds: a real eval of a few cases against the fake server, then its
results copied in SQL onto as many synthetic cases as asked (each with its own latency, cost and
tokens, and a share failed or ended in an error), as a run of that size would leave them.

    grow_run(db_path, "r1", n)   -> the run now has n results (n cases, repeat 0)

Used by the big-run tests and by bench/big_run.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

TEMPLATE_CASES = [{"text": "great stuff", "label": "positive"}, {"text": "awful stuff", "label": "negative"},
                  {"text": "great but awful", "label": "negative"}, {"text": "meh", "label": "positive"},
                  {"text": "great again", "label": "positive"}]


def grow_run(db_path: Path, run_name: str, n: int) -> None:
    """Give the run `run_name` n results over n cases (the existing results are the pattern: case i
    copies result i mod k; every 97th is a timeout error)."""
    with sqlite3.connect(db_path) as db:
        run_id, project_id = db.execute("select id, project_id from runs where name = ?", [run_name]).fetchone()
        first = db.execute("select max(id) from cases").fetchone()[0] + 1
        db.execute("""
            insert into cases (id, project_id, inputs, expected, golden, tags, split, content_hash, source, created_at)
            with recursive i(k) as (select 0 union all select k + 1 from i where k + 1 < ?)
            select ? + k, ?, json_object('text', 'synthetic review ' || k || ': ' || substr('great awful meh', 1 + k % 3 * 6, 5)),
                   json_object('label', case when k % 2 then 'negative' else 'positive' end), 1,
                   case when k % 5 = 0 then '["five"]' else '[]' end, case when k % 2 then 'test' else 'train' end,
                   'big-' || k, 'big_run', '2026-01-01T00:00:00'
            from i""", [n, first, project_id])
        pattern = db.execute("select output, parsed, parse_error, scores, score, passed from results "
                             "where run_id = ? order by case_id", [run_id]).fetchall()
        db.execute("delete from results where run_id = ?", [run_id])
        db.execute("create temp table pattern (k integer primary key, output, parsed, parse_error, scores, score, passed)")
        db.executemany("insert into pattern values (?, ?, ?, ?, ?, ?, ?)",
                       [(k, *row) for k, row in enumerate(pattern)])
        db.execute("""
            insert into results (run_id, case_id, repeat, output, parsed, parse_error, scores, score, passed,
                                 error_kind, error, latency_ms, prompt_tokens, completion_tokens, cost, cached,
                                 attempts, created_at)
            select ?, c.id, 0, p.output, p.parsed, p.parse_error,
                   case when (c.id - ?) % 97 = 0 then '{}' else p.scores end,
                   case when (c.id - ?) % 97 = 0 then null else p.score end,
                   case when (c.id - ?) % 97 = 0 then 0 else p.passed end,
                   case when (c.id - ?) % 97 = 0 then 'timeout' end,
                   case when (c.id - ?) % 97 = 0 then 'the provider did not answer in 60 s' end,
                   ((c.id - ?) * 7919) % 1000 + 0.5, 20 + (c.id - ?) % 13, 1 + (c.id - ?) % 3,
                   ((c.id - ?) * 31 % 101) / 1e6, (c.id - ?) % 10 = 0, 1, '2026-01-01T00:00:01'
            from cases c join pattern p on p.k = (c.id - ?) % ?
            where c.source = 'big_run' and c.project_id = ?""",
                   [run_id, *[first] * 11, len(pattern), project_id])
        ids = [r[0] for r in db.execute("select case_id from results where run_id = ? order by case_id", [run_id])]
        db.execute("update runs set case_ids = ?, n_results = ?, n_errors = (select count(*) from results "
                   "where run_id = ? and error_kind is not null) where id = ?",
                   [json.dumps(ids), len(ids), run_id, run_id])
