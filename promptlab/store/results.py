"""Results: one row per run × case × repeat, written in batches (insert or ignore: never twice)."""

from __future__ import annotations

from typing import Iterable, Iterator

from promptlab.store.database import StoreBase, loads
from promptlab.store.records import Result, Score


class Results(StoreBase):
    """The results table."""

    def done_keys(self, run_id: int) -> set[tuple[int, int]]:
        return {(r[0], r[1]) for r in self.db.execute(
            "select case_id, repeat from results where run_id = ?", [run_id])}

    def save_results(self, rows: list[dict], cache_rows: list[dict] = ()) -> None:
        """One commit for a batch of finished results (and the replies they cached)."""
        with self.db.atomic():
            self._insert_or_ignore("response_cache", cache_rows)
            self._insert_or_ignore("results", rows, expected_of_case=True)

    def _insert_or_ignore(self, table: str, rows: Iterable[dict], *, expected_of_case: bool = False) -> None:
        """Rows of prepared values (JSON already encoded), straight to executemany: sqlite-utils'
        insert_all reads the table's schema on every call, several times an eval's per-item cost.
        `expected_of_case`: each row also keeps its case's expected output as it is now, the one
        it was scored against (so a later `case edit` does not rewrite the run's history)."""
        by_columns: dict[tuple[str, ...], list[tuple]] = {}
        for row in rows:
            by_columns.setdefault(tuple(row), []).append(tuple(row.values()))
        for columns, values in by_columns.items():
            names, marks = [f"[{c}]" for c in columns], ["?"] * len(columns)
            if expected_of_case:
                names.append("[expected]")
                marks.append(f"(select expected from cases where id = ?{columns.index('case_id') + 1})")
            self.db.conn.executemany(
                f"insert or ignore into [{table}] ({', '.join(names)}) values ({', '.join(marks)})", values)

    def results(self, run_id: int, case_id: int | None = None) -> list[Result]:
        """A run's results (of one case, if given), by case and repeat."""
        where, args = ("run_id = ?", [run_id]) if case_id is None else ("run_id = ? and case_id = ?", [run_id, case_id])
        return [_result(r) for r in self.db["results"].rows_where(where, args, order_by="case_id, repeat")]

    def iter_results(self, run_id: int) -> Iterator[Result]:
        """A run's results by case and repeat, decoded as they are read (any number in bounded memory)."""
        for row in self.db["results"].rows_where("run_id = ?", [run_id], order_by="case_id, repeat"):
            yield _result(row)

    def drop_results(self, run_id: int, *, error_kinds: Iterable[str]) -> int:
        """Delete a run's results that ended in one of these error kinds (to retry them)."""
        kinds = list(error_kinds)
        with self.db.atomic():
            return self.db.execute(
                f"delete from results where run_id = ? and error_kind in ({','.join('?' * len(kinds))})",
                [run_id, *kinds]).rowcount


def _result(row: dict) -> Result:
    return Result(**{**row, "parsed": loads(row["parsed"]), "expected": loads(row.get("expected")),
                     "passed": bool(row["passed"]), "lenient": tuple(loads(row.get("lenient"), [])),
                     "scores": {name: Score(s["value"], bool(s["passed"]), s.get("detail") or {})
                                for name, s in loads(row["scores"], {}).items()},
                     "prompt_tokens": row["prompt_tokens"] or 0,
                     "completion_tokens": row["completion_tokens"] or 0, "cached": bool(row["cached"])})
