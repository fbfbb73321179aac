"""Test cases: imported in batches, read by filter (split, tags, golden) or page by page."""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

from promptlab.errors import NotFoundError, UsageError
from promptlab.models import Case
from promptlab.store.database import StoreBase, dumps, loads
from promptlab.store.lease import now

CASE_BATCH = 1000  # cases per insert while importing


class Cases(StoreBase):
    """The cases table."""

    def add_cases(self, project_id: int, cases: Iterable[Case], source: str = "") -> tuple[int, int]:
        """Insert the new cases; returns (added, already present: repeats within `cases` included).

        Any number, in bounded memory: they are staged CASE_BATCH at a time in a temporary table
        (on disk, this connection's own, so no lock on the database while the file is read), then
        copied in one statement whose insert-or-ignore on the content-hash index drops the ones
        already present. A bad case met on the way leaves nothing written."""
        conn = self.db.conn
        outer = conn.in_transaction  # part of a caller's unit of work: stage and copy inside it
        conn.execute("create temp table staged_cases (inputs, expected, golden, tags, split, content_hash)")
        try:
            total = 0
            for batch in _batches(cases, CASE_BATCH):
                conn.executemany("insert into temp.staged_cases values (?, ?, ?, ?, ?, ?)",
                                 [(dumps(c.inputs), dumps(c.expected), int(c.golden), dumps(list(c.tags)),
                                   c.split, c.hash()) for c in batch])
                total += len(batch)
            if not outer:
                conn.commit()  # the staging only: the copy below takes the write lock up front
            with self.db.atomic():
                before = conn.total_changes
                conn.execute("insert or ignore into cases (project_id, inputs, expected, golden, tags, split, "
                             "content_hash, source, created_at) select ?, inputs, expected, golden, tags, "
                             "split, content_hash, ?, ? from temp.staged_cases order by rowid",
                             [project_id, source, now()])
                added = conn.total_changes - before
        finally:
            if not outer and conn.in_transaction:  # a bad case: the staging is dropped
                conn.rollback()
            conn.execute("drop table temp.staged_cases")
        return added, total - added

    def cases(self, project_id: int, *, split: str | None = None, tags: Iterable[str] = (),
              golden: bool | None = None, limit: int | None = None) -> list[Case]:
        """The cases a new selection may take (archived ones never), by id; selected in SQL, so
        `limit` reads no more rows than it returns, and only the columns a Case holds."""
        where, args = _case_filter(project_id, split, tags, golden)
        return [_case(r) for r in self.db["cases"].rows_where(where, args, select=_CASE_COLUMNS,
                                                              order_by="id", limit=limit)]

    def iter_cases(self, project_id: int, *, split: str | None = None, tags: Iterable[str] = (),
                   golden: bool | None = None) -> Iterator[Case]:
        """What `cases` returns, read CASE_BATCH at a time (after the last id seen): any number of
        cases in bounded memory."""
        where, args = _case_filter(project_id, split, tags, golden)
        last = 0
        while True:
            page = [_case(r) for r in self.db["cases"].rows_where(
                where + " and id > ?", [*args, last], select=_CASE_COLUMNS, order_by="id", limit=CASE_BATCH)]
            yield from page
            if len(page) < CASE_BATCH:
                return
            last = page[-1].id

    def case_fields(self, project_id: int, *, split: str | None = None, tags: Iterable[str] = (),
                    golden: bool | None = None) -> tuple[list[str], list[str]]:
        """The input and the expected field names those cases use (a CSV export's header)."""
        where, args = _case_filter(project_id, split, tags, golden)
        return tuple([r[0] for r in self.db.execute(
            f"select distinct j.key from cases, json_each(cases.{column}) j where {where} order by 1", args)]
            for column in ("inputs", "expected"))

    def count_cases(self, project_id: int, *, split: str | None = None, tags: Iterable[str] = (),
                    golden: bool | None = None) -> int:
        """How many cases `cases` would return (counted in SQL)."""
        return self.db["cases"].count_where(*_case_filter(project_id, split, tags, golden))

    def cases_by_hash(self, project_id: int, hashes: list[str]) -> list[Case]:
        """Stored cases for these content hashes, in the order given (archived ones left out)."""
        by_hash = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            for row in self.db["cases"].rows_where(
                    f"project_id = ? and archived = 0 and content_hash in ({','.join('?' * len(chunk))})",
                    [project_id, *chunk]):
                by_hash[row["content_hash"]] = _case(row)
        return [by_hash[h] for h in dict.fromkeys(hashes) if h in by_hash]

    def cases_by_id(self, project_id: int, ids: Iterable[int]) -> dict[int, Case]:
        """Stored cases by id (queried in chunks, so any number of ids works)."""
        wanted, out = sorted(set(ids)), {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            for row in self.db["cases"].rows_where(
                    f"project_id = ? and id in ({','.join('?' * len(chunk))})", [project_id, *chunk]):
                out[row["id"]] = _case(row)
        return out

    def case_facets(self, project_id: int) -> tuple[dict[str, int], dict[str, int]]:
        """How many selectable cases each split ('none' for cases without one) and each tag has."""
        splits = dict(self.db.execute(
            "select coalesce(split, 'none'), count(*) from cases where project_id = ? and archived = 0 "
            "group by 1 order by 1", [project_id]).fetchall())
        tags = dict(self.db.execute(
            "select j.value, count(*) from cases c, json_each(c.tags) j where c.project_id = ? "
            "and c.archived = 0 group by 1 order by 1", [project_id]).fetchall())
        return splits, tags

    def case_runs(self, project_id: int, ids: Iterable[int]) -> dict[int, list[str]]:
        """For each of these cases that a run planned or scored, the names of those runs."""
        wanted, used = sorted(set(ids)), {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for case_id, name in self.db.execute(
                    f"select j.value, r.name from runs r, json_each(r.case_ids) j "
                    f"where r.project_id = ? and j.value in ({marks}) "
                    f"union select s.case_id, r.name from results s join runs r on r.id = s.run_id "
                    f"where r.project_id = ? and s.case_id in ({marks}) order by 2",
                    [project_id, *chunk, project_id, *chunk]):
                used.setdefault(case_id, []).append(name)
        return used

    def case_demo_prompts(self, project_id: int, ids: Iterable[int]) -> dict[int, list[str]]:
        """For each of these cases in a prompt version's demo-selector pool, those versions' refs."""
        wanted, used = sorted(set(ids)), {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            for case_id, ref in self.db.execute(
                    f"select j.value, p.name || '@' || p.version from prompts p, "
                    f"json_each(p.demo_selector, '$.pool') j where p.project_id = ? "
                    f"and p.demo_selector is not null and j.value in ({','.join('?' * len(chunk))}) "
                    f"order by p.name, p.version", [project_id, *chunk]):
                used.setdefault(case_id, []).append(ref)
        return used

    def remove_cases(self, project_id: int, ids: Iterable[int]) -> tuple[list[int], list[int]]:
        """Delete these cases, but archive the ones a run or a demo selector's pool uses (a version
        must render as it did); returns (deleted ids, archived ids)."""
        ids = sorted(set(ids))
        with self.db.atomic():
            found = self.cases_by_id(project_id, ids)
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFoundError(f"no case with id {', '.join(map(str, missing))} in this project; "
                                    f"see `promptlab case list`")
            used = {**self.case_runs(project_id, ids), **self.case_demo_prompts(project_id, ids)}
            archived = [i for i in ids if i in used]
            deleted = [i for i in ids if i not in used]
            for case_id in archived:
                self.db["cases"].update(case_id, {"archived": 1})
            for case_id in deleted:
                self.db["cases"].delete(case_id)
        return deleted, archived

    def case(self, project_id: int, case_id: int) -> Case:
        case = self.cases_by_id(project_id, [case_id]).get(case_id)
        if case is None:
            raise NotFoundError(f"no case with id {case_id} in this project; see `promptlab case list`")
        return case

    def edit_case(self, project_id: int, case_id: int, *, expected: dict | None = None,
                  split: str | None = None, tags: Iterable[str] | None = None) -> Case:
        """Change a case's expected output, split or tags (its content hash follows its expected output)."""
        with self.db.atomic():
            case = self.case(project_id, case_id)
            changes = {k: v for k, v in (("expected", expected), ("split", split),
                                         ("tags", None if tags is None else tuple(tags))) if v is not None}
            new = Case(**{**case.model_dump(), **changes})
            pools = self.case_demo_prompts(project_id, [case_id]).get(case_id)
            if pools and new.expected != case.expected:
                raise UsageError(f"case {case_id} is a demo that {', '.join(pools[:3])} may pick (its demo "
                                 f"selector's pool): changing its expected output would change what that "
                                 f"version sends; add a corrected case instead")
            digest = new.hash()
            if digest != case.hash() and self.db["cases"].count_where(
                    "project_id = ? and content_hash = ?", [project_id, digest]):
                raise UsageError(f"case {case_id}: another case already has these inputs and this expected "
                                 f"output; delete one of them with `promptlab case delete`")
            self.db["cases"].update(case_id, {"expected": dumps(new.expected), "split": new.split,
                                              "tags": dumps(list(new.tags)), "content_hash": digest})
        return new

    def set_golden(self, project_id: int, ids: Iterable[int], golden: bool = True) -> int:
        ids = list(ids)
        with self.db.atomic():
            for case_id in ids:
                self.db.execute("update cases set golden = ? where project_id = ? and id = ?",
                                [int(golden), project_id, case_id])
        return len(ids)


def _case_filter(project_id: int, split: str | None, tags: Iterable[str],
                 golden: bool | None) -> tuple[str, list]:
    """The WHERE clause selecting cases (tags: every one of them among the case's, via json_each)."""
    where, args = ["project_id = ? and archived = 0"], [project_id]
    if split:
        where.append("split = ?")
        args.append(split)
    if golden is not None:
        where.append("golden = ?")
        args.append(int(golden))
    wanted = sorted(set(tags))
    if wanted:
        where.append(f"(select count(distinct value) from json_each(cases.tags) "
                     f"where value in ({','.join('?' * len(wanted))})) = ?")
        args += [*wanted, len(wanted)]
    return " and ".join(where), args


def _batches(items: Iterable[Any], size: int) -> Iterable[list]:
    """`items` in lists of `size` (itertools.batched, which Python 3.11 lacks)."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


_CASE_COLUMNS = "id, inputs, expected, golden, tags, split"  # what _case reads


def _case(row: dict) -> Case:
    return Case(id=row["id"], inputs=loads(row["inputs"]), expected=loads(row["expected"], {}),
                golden=bool(row["golden"]), tags=tuple(loads(row["tags"], [])), split=row["split"])
