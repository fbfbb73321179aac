"""A run's results as the reports show them, read from the store a page at a time.

`ResultRows` stands where a list of result dicts stood: `len()` counts in SQL, `[a:b]` reads that
slice, iteration streams in pages, so a report of a 1,000,000-result run holds one page at a time.
Each row is one result with its case (inputs, expected, tags, split), secrets masked as it is read.

    ResultRows(store, project_id, run_id, status="fail", search="refund")   a filtered view
    ResultRows(...).top("latency", 10)     the slowest ten (SQL order by … limit)
    one_result(store, project_id, run_id, case_id, repeat)                   by its key
    score_values(store, run_id)            (metric, value) of every score, streamed
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from promptlab.prompting import images
from promptlab.store import Store, loads

PAGE = 500

_COLUMNS = ("r.case_id, r.repeat, r.output, r.parsed, r.passed, r.score, r.scores, r.error_kind, r.error, r.parse_error, "
            "r.latency_ms, r.prompt_tokens, r.completion_tokens, r.cost, r.cached, r.attempts, r.expected, "
            "c.id, c.inputs, c.expected, c.tags, c.split")
_FROM = "from results r left join cases c on c.id = r.case_id and c.project_id = ?"
_PASSED = "coalesce(r.passed, 0) != 0"
STATUSES = {"pass": f"{_PASSED} and r.error_kind is null", "fail": f"not {_PASSED} and r.error_kind is null",
            "error": "r.error_kind is not null", "failed": f"not {_PASSED}",
            "live": "not coalesce(r.cached, 0) and r.error_kind is null"}  # answered by the model just now
# the orders the top-N tables use; ties keep the results' own order (case, repeat), as a stable sort did
_ORDERS = {"latency": "coalesce(r.latency_ms, 0) desc", "cost": "coalesce(r.cost, 0) desc",
           "tokens": "coalesce(r.prompt_tokens, 0) + coalesce(r.completion_tokens, 0) desc"}


def _row(values: tuple, mask: Callable[[Any], Any]) -> dict[str, Any]:
    (case_id, repeat, output, parsed, passed, score, scores, error_kind, error, parse_error, latency_ms,
     prompt_tokens, completion_tokens, cost, cached, attempts, kept, found, inputs, expected, tags, split) = values
    case = found is not None
    return mask({
        "case_id": case_id, "repeat": repeat,
        "inputs": images.shorten(loads(inputs)) if case else None,  # an image as a label, not its base64
        # what the result was scored against (kept with it), else its case's as it is now
        "expected": loads(kept) if kept is not None else loads(expected, {}) if case else None,
        "tags": list(loads(tags, [])) if case else [], "split": split if case else None,
        "output": output, "parsed": loads(parsed), "passed": bool(passed), "score": score,
        "scores": {k: s["value"] for k, s in loads(scores, {}).items()},
        "error_kind": error_kind, "error": error, "parse_error": parse_error,
        "latency_ms": latency_ms, "prompt_tokens": prompt_tokens or 0,
        "completion_tokens": completion_tokens or 0, "cost": cost, "cached": bool(cached),
        "attempts": attempts})


class ResultRows:
    """A run's results (those with `status`, and text containing `search`, if given), by case and
    repeat: a sequence read from the store on demand."""

    def __init__(self, store: Store, project_id: int, run_id: int, *, status: str = "", search: str = "",
                 key: tuple[int, int] | None = None):
        from promptlab.redact import redactor

        self._db, self._mask = store.db, redactor()
        clauses, self._args = ["r.run_id = ?"], [project_id, run_id]
        if status:
            clauses.append(STATUSES[status])
        if key is not None:
            clauses.append("r.case_id = ? and r.repeat = ?")
            self._args += key
        if search:  # any text a result page shows: input, expected, output, errors
            clauses.append("(instr(lower(coalesce(c.inputs, '') || char(10) || coalesce(r.expected, c.expected, '') || "
                           "char(10) || coalesce(r.output, '') || char(10) || coalesce(r.error, '') || "
                           "char(10) || coalesce(r.parse_error, '')), lower(?)) > 0)")
            self._args.append(search)
        self._where = " and ".join(clauses)
        self._len: int | None = None

    def _query(self, order: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        rows = self._db.execute(f"select {_COLUMNS} {_FROM} where {self._where} order by {order} "
                                f"limit ? offset ?", [*self._args, limit, offset]).fetchall()
        return [_row(values, self._mask) for values in rows]

    def __len__(self) -> int:
        if self._len is None:
            self._len = self._db.execute(f"select count(*) {_FROM} where {self._where}", self._args).fetchone()[0]
        return self._len

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every row, a page at a time: each page starts after the last key read (no offset rescans)."""
        last = (-1, -1)
        while True:
            rows = self._db.execute(
                f"select {_COLUMNS} {_FROM} where {self._where} and (r.case_id, r.repeat) > (?, ?) "
                f"order by r.case_id, r.repeat limit ?", [*self._args, *last, PAGE]).fetchall()
            yield from (_row(values, self._mask) for values in rows)
            if len(rows) < PAGE:
                return
            last = rows[-1][:2]

    def __getitem__(self, index: slice | int) -> list[dict[str, Any]] | dict[str, Any]:
        if isinstance(index, int):
            found = self[index:index + 1] if index >= 0 else self[len(self) + index:len(self) + index + 1]
            if not found:
                raise IndexError(index)
            return found[0]
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("result rows take contiguous slices only")
        return self._query("r.case_id, r.repeat", max(0, stop - start), start) if stop > start else []

    def latency_s(self) -> float:
        """The seconds these results waited on the model (a cached one waited for nothing)."""
        return self._db.execute(
            f"select coalesce(sum(latency_ms), 0) from (select coalesce(r.latency_ms, 0) as latency_ms {_FROM} "
            f"where {self._where} and not coalesce(r.cached, 0) order by r.case_id, r.repeat)",
            self._args).fetchone()[0] / 1000

    def top(self, by: str, n: int) -> list[dict[str, Any]]:
        """The first `n` by `by` ('latency', 'cost' or 'tokens'), largest first."""
        return self._query(f"{_ORDERS[by]}, r.case_id, r.repeat", n)


def one_result(store: Store, project_id: int, run_id: int, case_id: int, repeat: int) -> dict[str, Any] | None:
    """One result by its key, with its case (None if the run has none for it)."""
    found = ResultRows(store, project_id, run_id, key=(case_id, repeat))[:1]
    return found[0] if found else None


def score_values(store: Store, run_id: int) -> Iterator[tuple[str, Any]]:
    """(metric, value) of every score of a run's results, streamed from the database (SQLite reads
    the JSON; the rare row it cannot, one holding NaN or Infinity, is decoded here)."""
    yield from store.db.execute(
        "select j.key, json_extract(j.value, '$.value') from results r, json_each(r.scores) j "
        "where r.run_id = ? and json_valid(r.scores)", [run_id])
    for (scores,) in store.db.execute(
            "select scores from results where run_id = ? and not json_valid(scores)", [run_id]):
        yield from ((name, s["value"]) for name, s in loads(scores).items())


def all_costed(store: Store, run_id: int) -> bool:
    """Whether the run has results and every one of them has a cost."""
    n, costed = store.db.execute("select count(*), count(cost) from results where run_id = ?", [run_id]).fetchone()
    return n > 0 and n == costed


def counts(store: Store, run_id: int) -> dict[str, int]:
    """How many results a run has, and how many passed, failed and ended in an error."""
    total, passed, failed, errors = store.db.execute(
        f"select count(*), coalesce(sum({_PASSED}), 0), coalesce(sum({STATUSES['fail']}), 0), "
        f"coalesce(sum({STATUSES['error']}), 0) from results r where r.run_id = ?", [run_id]).fetchone()
    return {"results": total, "passed": passed, "failed": failed, "errors": errors}
