"""The SQLite store: open (WAL, migrations) and every read and write.

One unit of work = one `with db.atomic():`, which takes the write lock up
front (BEGIN IMMEDIATE): in WAL mode a deferred transaction that reads and
then writes fails at once with SQLITE_BUSY when another process wrote in
between, and the busy timeout never applies to it. Many processes can then
share one database. The connection belongs to the thread that opened it; the
async runner hands results back to that thread.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

# sqlite_utils imports numpy (most of a `runs list`'s start) only to map numpy scalars to column
# types; promptlab declares its columns in migrations.py, so numpy is kept out of that import.
_NUMPY_ALREADY = "numpy" in sys.modules
if not _NUMPY_ALREADY:
    sys.modules["numpy"] = None  # type: ignore[assignment]  # `import numpy` raises ImportError
try:
    import sqlite_utils
    from sqlite_utils.db import NotFoundError as RowNotFound
finally:
    if not _NUMPY_ALREADY:
        del sys.modules["numpy"]

from promptlab.store import lease
from promptlab.store.lease import now  # one clock for every timestamp (callers import it from here too)
from promptlab.config import check_params
from promptlab.errors import NotFoundError, StorageError, UsageError
from promptlab.store.migrations import migrations
from promptlab.models import Case, Demo, PromptContent, PromptVersion, Signature, SignatureVersion
from promptlab.store.records import (CandidateRecord, Optimization, Result, Run, Score, Step, history_from_json,
                               step_json)

BUSY_TIMEOUT_MS = 30_000
CASE_BATCH = 1000  # cases per insert while importing


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """'name', 'name@3', 'name@production' → (name, selector or None)."""
    name, _, selector = ref.partition("@")
    if not name:
        raise UsageError(f"bad prompt reference '{ref}': use NAME, NAME@VERSION or NAME@LABEL")
    return name, selector or None


class Database(sqlite_utils.Database):
    """sqlite-utils' Database whose outermost transaction takes the write lock up front."""

    @contextlib.contextmanager
    def atomic(self):
        if self.conn.in_transaction:  # nested: sqlite-utils' savepoints
            with super().atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise


def is_locked(exc: BaseException) -> bool:
    """Lock contention (worth retrying), as opposed to a write that cannot succeed."""
    return isinstance(exc, sqlite3.OperationalError) and any(
        word in str(exc).lower() for word in ("locked", "busy"))


def storage_error(path: Path | None, exc: BaseException, verb: str = "write") -> StorageError:
    """One line for a failed read or write (`verb`): what went wrong with which file, and the fix."""
    text = str(exc).lower()
    where = path or _opened or "the database"
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return StorageError(f"cannot read {where}: it is damaged or not a promptlab database ({exc}); keep a "
                            f"copy, then recover what is readable with `sqlite3 {where} .recover | sqlite3 "
                            f"recovered.db` and point PROMPTLAB_DB at recovered.db (or restore a backup)")
    if "full" in text or "i/o" in text or "too large" in text:
        return StorageError(f"disk full (or file size limit reached) writing {where}: {exc}; free space")
    if "readonly" in text or "read-only" in text or "permission" in text:
        return StorageError(f"cannot write {where} ({exc}); make the file and its folder writable")
    return StorageError(f"cannot {verb} {where}: {type(exc).__name__}: {exc}")


class Store:
    def __init__(self, db: Database, path: Path | None = None):
        self.db = db
        self.path = path

    # ---- projects -------------------------------------------------------
    def ensure_project(self, name: str, description: str | None = None,
                       default_model: str | None = None) -> int:
        row = self._project_row(name)
        if row is None:
            return self.db["projects"].insert(
                {"name": name, "description": description or "", "default_model": default_model,
                 "settings": "{}", "created_at": now()}).last_pk
        updates = {k: v for k, v in (("description", description), ("default_model", default_model))
                   if v is not None and row[k] != v}
        if updates:
            self.db["projects"].update(row["id"], updates)
        return row["id"]

    def _project_row(self, name: str) -> dict | None:
        rows = list(self.db["projects"].rows_where("name = ?", [name], limit=1))
        return rows[0] if rows else None

    def project(self, name: str) -> dict:
        row = self._project_row(name)
        if row is None:
            known = ", ".join(r["name"] for r in self.db["projects"].rows) or "none yet"
            raise NotFoundError(f"no project '{name}' (projects: {known}); create it with "
                                f"`promptlab project add {name}`")
        return row

    def projects(self) -> list[dict]:
        return list(self.db["projects"].rows_where(order_by="name"))

    def project_id(self, name: str | None) -> int:
        """The named project, or the only one there is."""
        if name:
            return self.project(name)["id"]
        projects = self.projects()
        if len(projects) == 1:
            return projects[0]["id"]
        names = ", ".join(p["name"] for p in projects) or "none yet"
        raise UsageError(f"--project is required (projects: {names}); or choose one for every command "
                         f"with `promptlab project use NAME`")

    def free_name(self, table: str, project_id: int, base: str) -> str:
        """`base`, or `base-2`, `base-3`… whichever is not yet a name in `table` (runs, optimizations)."""
        like = base.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "-%"
        taken = {row[0] for row in self.db.execute(
            f"select name from [{table}] where project_id = ? and (name = ? or name like ? escape '\\')",
            [project_id, base, like])}
        return next(name for n in itertools.count(1) if (name := base if n == 1 else f"{base}-{n}") not in taken)

    def current_project(self) -> str | None:
        """The project `promptlab project use` chose in this database, if it still exists."""
        row = self.db.execute("select value from workspace where key = 'project'").fetchone()
        return row[0] if row and self._project_row(row[0]) else None

    def use_project(self, name: str | None) -> None:
        """Make `name` the current project of this database (None: no current project)."""
        with self.db.atomic():
            if name is None:
                self.db.execute("delete from workspace where key = 'project'")
            else:
                self.project(name)  # an unknown name is refused, naming the projects there are
                self.db["workspace"].upsert({"key": "project", "value": name}, pk="key")

    def delete_project(self, project_id: int) -> dict[str, int]:
        """Delete a project and everything it holds (cached replies, shared by all, stay); rows deleted by table."""
        runs = "select id from runs where project_id = ?"
        deleted = {}
        with self.db.atomic():
            for table in self.db.table_names():  # results, and any other record of a run
                if "run_id" in self.db[table].columns_dict:
                    deleted[table] = self.db.execute(f"delete from [{table}] where run_id in ({runs})",
                                                     [project_id]).rowcount
            for table in ("runs", "optimizations", "prompt_labels", "prompts", "cases", "signatures"):
                deleted[table] = self.db.execute(f"delete from [{table}] where project_id = ?",
                                                 [project_id]).rowcount
            self.db["projects"].delete(project_id)
        return {table: n for table, n in deleted.items() if n}

    def set_project_settings(self, project_id: int, settings: dict) -> None:
        self.db["projects"].update(project_id, {"settings": dumps(settings)})

    def project_settings(self, project_id: int) -> dict:
        """The project's settings (e.g. allow_code_execution), {} when none."""
        return loads(self.db["projects"].get(project_id)["settings"], {}) or {}

    def update_project_settings(self, project_id: int, **changes: Any) -> dict:
        settings = {**self.project_settings(project_id), **changes}
        self.set_project_settings(project_id, settings)
        return settings

    # ---- signatures -----------------------------------------------------
    # Versioned like prompts: the instruction opens every prompt's system message,
    # so a change adds a version and a prompt version keeps the one it was made with.
    def upsert_signature(self, project_id: int, sig: Signature) -> int:
        """The latest version's id when its content is `sig`'s, else a new version's."""
        data = sig.model_dump(mode="json")
        content = {"instruction": sig.instruction, "inputs": dumps(data["inputs"]),
                   "outputs": dumps(data["outputs"])}
        latest = self._signature_row(project_id, sig.name)
        if latest is not None and all((latest[k] or "") == v for k, v in content.items()):
            return latest["id"]
        return self.db["signatures"].insert({
            **content, "project_id": project_id, "name": sig.name,
            "version": latest["version"] + 1 if latest else 1, "updated_at": now()}).last_pk

    def _signature_row(self, project_id: int, name: str, version: int | None = None) -> dict | None:
        where, args = "project_id = ? and name = ?", [project_id, name]
        if version is not None:
            where, args = where + " and version = ?", args + [version]
        rows = list(self.db["signatures"].rows_where(where, args, order_by="version desc", limit=1))
        return rows[0] if rows else None

    def signature_version(self, project_id: int, name: str, version: int | None = None) -> SignatureVersion:
        """NAME's latest version, or the given one."""
        row = self._signature_row(project_id, name, version)
        if row is None:
            latest = self._signature_row(project_id, name) if version is not None else None
            if latest is not None:
                raise NotFoundError(f"signature '{name}' has no version {version} (versions 1 to "
                                    f"{latest['version']}); see `promptlab signature list`")
            raise NotFoundError(f"no signature '{name}' in this project; add it with "
                                f"`promptlab signature add`")
        return _signature_version(row)

    def signature(self, project_id: int, name: str | None = None, *, id: int | None = None) -> Signature:
        """By name: the latest version; by id: that version."""
        if id is None:
            return self.signature_version(project_id, name).signature
        try:
            return _signature(self.db["signatures"].get(id))
        except RowNotFound:
            raise NotFoundError(f"no signature version with id {id}") from None

    def signature_id(self, project_id: int, name: str) -> int:
        """The latest version's id (what a new prompt version binds to)."""
        return self.signature_version(project_id, name).id

    def prompt_signature(self, prompt: PromptVersion) -> Signature | None:
        """The signature version this prompt version was made with (never a later one)."""
        return self.signature(0, id=prompt.signature_id) if prompt.signature_id else None

    def signature_versions(self, project_id: int) -> list[SignatureVersion]:
        """Every version of every signature, by name then version."""
        return [_signature_version(r) for r in self.db["signatures"].rows_where(
            "project_id = ?", [project_id], order_by="name, version")]

    def signatures(self, project_id: int) -> list[Signature]:
        """The latest version of each signature."""
        latest = {v.signature.name: v.signature for v in self.signature_versions(project_id)}
        return list(latest.values())

    # ---- prompt versions ------------------------------------------------
    def add_prompt(self, project_id: int, name: str, content: PromptContent, *,
                   signature_id: int | None = None, parent_id: int | None = None,
                   made_by: str = "person", message: str = "", dedupe: bool = True,
                   candidate: bool = False) -> PromptVersion:
        """A new immutable version; identical content returns the existing version.

        A candidate (an optimizer's trial version) takes a version number but never
        becomes the family's latest until `promote_prompt`; it is matched only against
        the candidates of the same `made_by`, other versions only against non-candidates."""
        check_params(content.params, f"prompt '{name}'")
        with self.db.atomic():  # the number is allocated under the write lock: two writers never race
            return self._add_prompt(project_id, name, content, signature_id=signature_id,
                                    parent_id=parent_id, made_by=made_by, message=message,
                                    dedupe=dedupe, candidate=candidate)

    def _add_prompt(self, project_id: int, name: str, content: PromptContent, *, signature_id: int | None,
                    parent_id: int | None, made_by: str, message: str, dedupe: bool,
                    candidate: bool) -> PromptVersion:
        digest = content.hash()
        if dedupe:
            where = "project_id = ? and name = ? and content_hash = ? and candidate = ? and archived = 0"
            args: list[Any] = [project_id, name, digest, int(candidate)]
            if candidate:
                where, args = where + " and made_by = ?", args + [made_by]
            same = list(self.db["prompts"].rows_where(where, args, order_by="version desc", limit=1))
            if same and same[0]["signature_id"] == signature_id:
                return self._prompt(same[0])
        last = self.db.execute("select max(version) from prompts where project_id = ? and name = ?",
                               [project_id, name]).fetchone()[0] or 0
        if parent_id is None:  # the latest version people use (never a candidate)
            latest = self.db.execute(
                "select id from prompts where project_id = ? and name = ? and candidate = 0 and archived = 0 "
                "order by version desc limit 1", [project_id, name]).fetchone()
            parent_id = latest[0] if latest else None
        data = content.model_dump(mode="json")
        pk = self.db["prompts"].insert({
            "project_id": project_id, "name": name, "version": last + 1,
            "signature_id": signature_id, "system": content.system, "template": content.template,
            "demos": dumps(data["demos"]), "params": dumps(data["params"]),
            "demo_selector": dumps(data["demo_selector"]) if content.demo_selector else None,
            "tools": dumps(data["tools"]) if content.tools else None,
            "tool_choice": dumps(data["tool_choice"]) if content.tool_choice is not None else None,
            "structured": int(content.structured), "structured_fallback": int(content.structured_fallback),
            "content_hash": digest, "parent_id": parent_id, "made_by": made_by,
            "message": message, "candidate": int(candidate), "created_at": now()}).last_pk
        return self.prompt_by_id(pk)

    def remove_prompt(self, version: PromptVersion) -> str:
        """Delete a version nothing uses; archive one that runs, optimizations or later versions use,
        or the family's newest (its number is never given to other content). Returns what was done."""
        project_id = self.project_id(version.project)
        with self.db.atomic():
            labels = [r[0] for r in self.db.execute("select label from prompt_labels where prompt_id = ?",
                                                    [version.id])]
            if labels:
                raise UsageError(f"{version.ref} carries label {labels[0]}; remove it first with "
                                 f"`promptlab prompt label {version.name} {labels[0]} --remove`")
            used = (self.db["runs"].count_where("prompt_id = ?", [version.id])
                    or self.db["optimizations"].count_where("base_prompt_id = ? or winner_prompt_id = ?",
                                                            [version.id, version.id])
                    or self.db["prompts"].count_where("parent_id = ?", [version.id]))
            newest = self.db.execute("select max(version) from prompts where project_id = ? and name = ?",
                                     [project_id, version.name]).fetchone()[0] == version.version
            if used or newest:
                self.db["prompts"].update(version.id, {"archived": 1})
                return "archived"
            self.db["prompts"].delete(version.id)
        return "deleted"

    def promote_prompt(self, prompt_id: int) -> PromptVersion:
        """A candidate stops being one: it becomes a version like any other (the latest, being newest)."""
        self.db["prompts"].update(prompt_id, {"candidate": 0})
        return self.prompt_by_id(prompt_id)

    def prompt_by_id(self, prompt_id: int) -> PromptVersion:
        try:
            return self._prompt(self.db["prompts"].get(prompt_id))
        except RowNotFound:
            raise NotFoundError(f"no prompt version with id {prompt_id}") from None

    def prompt(self, project_id: int, ref: str) -> PromptVersion:
        """Resolve NAME (latest), NAME@VERSION or NAME@LABEL; the latest is never a candidate nor archived."""
        name, selector = parse_ref(ref)
        if selector is None or selector == "latest":
            where, args = "project_id = ? and name = ? and candidate = 0 and archived = 0", [project_id, name]
        elif selector.isdigit():
            where, args = "project_id = ? and name = ? and version = ?", [project_id, name, int(selector)]
        else:
            label = self.db.execute(
                "select prompt_id from prompt_labels where project_id = ? and name = ? and label = ?",
                [project_id, name, selector]).fetchone()
            if label is None:
                raise NotFoundError(f"prompt '{name}' has no label '{selector}'; set it with "
                                    f"`promptlab prompt label {name}@VERSION {selector}`")
            return self.prompt_by_id(label[0])
        rows = list(self.db["prompts"].rows_where(where, args, order_by="version desc", limit=1))
        if not rows:
            names = ", ".join(r[0] for r in self.db.execute(
                "select distinct name from prompts where project_id = ?", [project_id])) or "none yet"
            raise NotFoundError(f"no prompt '{ref}' (prompts: {names}); add it with "
                                f"`promptlab prompt add {name}`")
        return self._prompt(rows[0])

    def prompts(self, project_id: int, name: str | None = None, *,
                candidates: bool = False) -> list[PromptVersion]:
        """Prompt versions by name and version; optimizer candidates and archived versions only if asked."""
        where, args = "project_id = ?", [project_id]
        if not candidates:
            where += " and candidate = 0 and archived = 0"
        if name:
            where, args = where + " and name = ?", args + [name]
        return [self._prompt(r) for r in self.db["prompts"].rows_where(
            where, args, order_by="name, version")]

    def lineage(self, prompt: PromptVersion) -> list[PromptVersion]:
        """The version, its parent, its parent's parent… back to the root."""
        chain, seen = [prompt], {prompt.id}
        while chain[-1].parent_id and chain[-1].parent_id not in seen:
            parent = self.prompt_by_id(chain[-1].parent_id)
            chain.append(parent)
            seen.add(parent.id)
        return chain

    def set_label(self, prompt: PromptVersion, label: str) -> None:
        project_id = self.project(prompt.project)["id"]
        self.db["prompt_labels"].upsert(
            {"project_id": project_id, "name": prompt.name, "label": label,
             "prompt_id": prompt.id, "updated_at": now()}, pk=("project_id", "name", "label"))

    def remove_label(self, project_id: int, name: str, label: str) -> int:
        """Delete the label; returns the id of the version it pointed at."""
        with self.db.atomic():
            row = self.db.execute("select prompt_id from prompt_labels where project_id = ? and name = ? "
                                  "and label = ?", [project_id, name, label]).fetchone()
            if row is None:
                raise NotFoundError(f"prompt '{name}' has no label '{label}'; see `promptlab prompt list {name}`")
            self.db["prompt_labels"].delete((project_id, name, label))
        return row[0]

    def _prompt(self, row: dict) -> PromptVersion:
        project = self.db["projects"].get(row["project_id"])["name"]
        labels = tuple(r[0] for r in self.db.execute(
            "select label from prompt_labels where prompt_id = ? order by label", [row["id"]]))
        sig = self.db["signatures"].get(row["signature_id"]) if row["signature_id"] else None
        content = PromptContent(system=row["system"] or "", template=row["template"],
                                demos=tuple(Demo(**d) for d in loads(row["demos"], [])),
                                params=loads(row["params"], {}),
                                demo_selector=loads(row.get("demo_selector"), None),
                                tools=tuple(loads(row.get("tools"), [])),
                                tool_choice=loads(row.get("tool_choice"), None),
                                structured=bool(row.get("structured")),
                                structured_fallback=bool(row.get("structured_fallback")))
        return PromptVersion(id=row["id"], project=project, name=row["name"], version=row["version"],
                             content=content, content_hash=row["content_hash"],
                             signature=sig and sig["name"], signature_id=sig and sig["id"],
                             signature_version=sig and sig["version"],
                             parent_id=row["parent_id"], made_by=row["made_by"] or "person",
                             message=row["message"] or "", candidate=bool(row.get("candidate")),
                             archived=bool(row.get("archived")),
                             labels=labels,
                             created_at=row["created_at"] or "")

    # ---- cases ----------------------------------------------------------
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

    # ---- runs and results -----------------------------------------------
    def create_run(self, project_id: int, name: str, prompt: PromptVersion, **fields: Any) -> int:
        if self.db["runs"].count_where("project_id = ? and name = ?", [project_id, name]):
            raise UsageError(f"a run named '{name}' already exists in this project; choose another "
                             f"--name or continue it with --resume {name}")
        row = {"project_id": project_id, "name": name, "prompt_id": prompt.id, "status": "running",
               "created_at": now(), "n_results": 0, "n_errors": 0, **lease.mine()}
        row.update({k: dumps(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()})
        return self.db["runs"].insert(row).last_pk

    def run(self, project_id: int, name: str) -> Run:
        rows = list(self.db["runs"].rows_where("project_id = ? and name = ?", [project_id, name], limit=1))
        if not rows:
            raise NotFoundError(f"no run '{name}' in this project; see `promptlab runs list`")
        return _run(rows[0])

    def run_by_id(self, run_id: int) -> Run:
        return _run(self.db["runs"].get(run_id))

    def run_rows(self, project_id: int, *, prompt_id: int | None = None, prompt_name: str | None = None,
                 model: str | None = None, status: str | None = None, optimizer_runs: bool = False,
                 limit: int | None = None) -> list[dict]:
        """Runs for a listing, newest first: only the shown columns (the main score is the first
        metric's mean, read inside SQLite; a running run's n counts its stored results)."""
        where, args = ["r.project_id = ?"], [project_id]
        if prompt_id is not None:
            where.append("r.prompt_id = ?")
            args.append(prompt_id)
        if prompt_name is not None:
            where.append("p.name = ?")
            args.append(prompt_name)
        if model is not None:
            where.append("(r.model = ? or r.model_name = ?)")
            args += [model, model]
        if status is not None:
            where.append("r.status = ?")
            args.append(status)
        if not optimizer_runs:
            where.append("r.optimization_id is null")
        sql = f"""
            select r.name, r.status, p.name as prompt, p.version, r.model,
                   case when r.status in ('running', 'submitted')
                        then (select count(*) from results where run_id = r.id) else r.n_results end as n,
                   r.n_errors as errors, json_extract(r.metrics, '$[0].name') as metric,
                   json_extract(r.summary, '$.metrics."' || json_extract(r.metrics, '$[0].name') || '".mean')
                       as score,
                   r.optimization_id is not null as optimizer, r.created_at,
                   r.owner_host, r.owner_pid, r.heartbeat_at
            from runs r join prompts p on p.id = r.prompt_id
            where {' and '.join(where)} order by r.id desc"""
        if limit is not None:
            sql, args = sql + " limit ?", args + [limit]
        return [dict(row) for row in self.db.query(sql, args)]

    def prompt_history_runs(self, project_id: int, name: str, *,
                            optimizer_runs: bool = False) -> dict[int, list[dict]]:
        """A prompt family's completed runs by version id, oldest first: model, the split of the
        cases scored ("mixed" when they differ, "none" when unsplit), the first metric's mean."""
        sql = f"""
            select r.prompt_id, r.name, r.model, r.created_at, r.finished_at,
                   json_extract(r.metrics, '$[0].name') as metric,
                   json_extract(r.summary, '$.metrics."' || json_extract(r.metrics, '$[0].name') || '".mean')
                       as score,
                   (select case when count(distinct coalesce(c.split, 'none')) > 1 then 'mixed'
                                else max(coalesce(c.split, 'none')) end
                    from json_each(r.case_ids) j join cases c on c.id = j.value) as split
            from runs r join prompts p on p.id = r.prompt_id
            where r.project_id = ? and p.name = ? and r.status = 'completed'
                  {'' if optimizer_runs else 'and r.optimization_id is null'}
            order by r.id"""
        out: dict[int, list[dict]] = {}
        for row in self.db.query(sql, [project_id, name]):
            out.setdefault(row["prompt_id"], []).append(dict(row))
        return out

    def delete_run(self, run_id: int) -> int:
        """Delete a run, its results and any other record of it (provider batches); nothing else:
        cases, prompts and cached replies stay. Returns how many results went."""
        with self.db.atomic():
            removed = {table: self.db.execute(f"delete from [{table}] where run_id = ?", [run_id]).rowcount
                       for table in self.db.table_names() if "run_id" in self.db[table].columns_dict}
            self.db["runs"].delete(run_id)
        return removed["results"]

    def update_run(self, run_id: int, **fields: Any) -> None:
        self.db["runs"].update(run_id, {k: dumps(v) if isinstance(v, (dict, list)) else v
                                        for k, v in fields.items()})

    def claim(self, table: str, row_id: int, what: str, **fields: Any) -> None:
        """Make this process the owner of a run or optimization, unless a live process owns it."""
        with self.db.atomic():
            row = self.db[table].get(row_id)
            holder = lease.holder(row["status"], row["owner_host"], row["owner_pid"], row["heartbeat_at"])
            if holder:
                raise UsageError(f"{what} is still running ({holder}); wait for it to finish or stop "
                                 f"that process, then resume")
            self.db[table].update(row_id, {"status": "running", **lease.mine(), **fields})

    def heartbeat(self, table: str, ids: Iterable[int]) -> None:
        """Tell other processes that this one still works on these rows."""
        ids = list(ids)
        if ids:
            with self.db.atomic():
                self.db.execute(
                    f"update [{table}] set heartbeat_at = ? where owner_pid = ? and owner_host = ? "
                    f"and id in ({','.join('?' * len(ids))})", [now(), os.getpid(), lease.HOST, *ids])

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file and truncate it."""
        self.db.execute("pragma wal_checkpoint(TRUNCATE)")

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

    def find_run(self, project_id: int, name: str) -> Run | None:
        """The run with this name, or None."""
        rows = list(self.db["runs"].rows_where("project_id = ? and name = ?", [project_id, name], limit=1))
        return _run(rows[0]) if rows else None

    def latest_run(self, project_id: int, prompt_id: int, *, model: str | None = None,
                   status: str = "completed", exclude: Iterable[int] = ()) -> Run | None:
        """The newest run of a prompt version with this status (optionally on one model)."""
        where, args = "project_id = ? and prompt_id = ? and status = ?", [project_id, prompt_id, status]
        if model is not None:
            where, args = where + " and model = ?", args + [model]
        skip = list(exclude)
        if skip:
            where, args = where + f" and id not in ({','.join('?' * len(skip))})", args + skip
        rows = list(self.db["runs"].rows_where(where, args, order_by="id desc", limit=1))
        return _run(rows[0]) if rows else None

    def prompt_runs(self, project_id: int, prompt_id: int, status: str = "completed") -> list[Run]:
        """A prompt version's runs with this status, newest first."""
        return [_run(r) for r in self.db["runs"].rows_where(
            "project_id = ? and prompt_id = ? and status = ?", [project_id, prompt_id, status],
            order_by="id desc")]

    # ---- optimizations (read side, for reports) --------------------------
    def find_optimization(self, project_id: int, name: str) -> Optimization | None:
        """The optimization with this name, or None."""
        rows = list(self.db["optimizations"].rows_where("project_id = ? and name = ?", [project_id, name],
                                                        limit=1))
        return _optimization(rows[0], self.path) if rows else None

    def optimization_by_id(self, optimization_id: int) -> Optimization:
        return _optimization(self.db["optimizations"].get(optimization_id), self.path)

    def optimization_runs(self, optimization_id: int) -> list[Run]:
        return [_run(r) for r in self.db["runs"].rows_where(
            "optimization_id = ?", [optimization_id], order_by="id")]

    def create_optimization(self, project_id: int, name: str, strategy: str, *, config: dict,
                            base_prompt_id: int, splits: dict, budget: dict) -> int:
        with self.db.atomic():
            if self.db["optimizations"].count_where("project_id = ? and name = ?", [project_id, name]):
                raise UsageError(f"an optimization named '{name}' already exists in this project; choose "
                                 f"another --name or continue it with `promptlab optimize --resume {name}`")
            return self.db["optimizations"].insert({
                "project_id": project_id, "name": name, "strategy": strategy, "config": dumps(config),
                "base_prompt_id": base_prompt_id, "splits": dumps(splits), "budget": dumps(budget),
                "status": "running", "history": "[]", "spent": "{}", "created_at": now(),
                **lease.mine()}).last_pk

    def update_optimization(self, optimization_id: int, *, history: Iterable[Step] | None = None,
                            **fields: Any) -> None:
        if history is not None:
            fields["history"] = [step_json(step) for step in history]
        self.db["optimizations"].update(optimization_id, {
            k: dumps(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()})

    def optimizations(self, project_id: int) -> list[Optimization]:
        return [_optimization(r, self.path) for r in self.db["optimizations"].rows_where(
            "project_id = ?", [project_id], order_by="id")]

    def drop_results(self, run_id: int, *, error_kinds: Iterable[str]) -> int:
        """Delete a run's results that ended in one of these error kinds (to retry them)."""
        kinds = list(error_kinds)
        with self.db.atomic():
            return self.db.execute(
                f"delete from results where run_id = ? and error_kind in ({','.join('?' * len(kinds))})",
                [run_id, *kinds]).rowcount

    # ---- response cache -------------------------------------------------
    def cache_get(self, key: str) -> dict | None:
        row = self.db.execute("select response from response_cache where key = ?", [key]).fetchone()
        return None if row is None else json.loads(row[0])

    def cache_stats(self) -> dict:
        row = self.db.execute("select count(*), coalesce(sum(length(response)), 0) "
                              "from response_cache").fetchone()
        kinds = dict(self.db.execute("select kind, count(*) from response_cache group by kind").fetchall())
        groups = [{"model": m, "kind": k, "entries": n, "bytes": b} for m, k, n, b in self.db.execute(
            "select model, kind, count(*), sum(length(response)) from response_cache group by 1, 2 order by 1, 2")]
        return {"entries": row[0], "bytes": row[1], "by_kind": kinds, "by_model": groups}

    def cache_clear(self, model: str | None = None) -> int:
        with self.db.atomic():
            if model:
                return self.db.execute("delete from response_cache where model = ?", [model]).rowcount
            return self.db.execute("delete from response_cache").rowcount


def _signature(row: dict) -> Signature:
    return Signature(name=row["name"], instruction=row["instruction"] or "",
                     inputs=loads(row["inputs"]), outputs=loads(row["outputs"]))


def _signature_version(row: dict) -> SignatureVersion:
    return SignatureVersion(id=row["id"], version=row["version"], signature=_signature(row),
                            created_at=row["updated_at"] or "")


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


def _run(row: dict) -> Run:
    return Run(**{**row, "params": loads(row["params"], {}), "metrics": loads(row["metrics"], []),
                  "case_ids": loads(row["case_ids"], []), "summary": loads(row["summary"]),
                  "role_usage": loads(row.get("role_usage"))})


def _result(row: dict) -> Result:
    return Result(**{**row, "parsed": loads(row["parsed"]), "expected": loads(row.get("expected")),
                     "passed": bool(row["passed"]), "lenient": tuple(loads(row.get("lenient"), [])),
                     "scores": {name: Score(s["value"], bool(s["passed"]), s.get("detail") or {})
                                for name, s in loads(row["scores"], {}).items()},
                     "prompt_tokens": row["prompt_tokens"] or 0,
                     "completion_tokens": row["completion_tokens"] or 0, "cached": bool(row["cached"])})


def _optimization(row: dict, path: Path | None) -> Optimization:
    """The record of an optimization row; StorageError for a column in a shape promptlab never
    writes (every history step and candidate record has one shape, `Search`'s)."""
    decoded: dict[str, Any] = {}
    column = ""
    try:
        for column in ("config", "splits", "budget", "spent", "report"):
            decoded[column] = loads(row[column])
        column = "history"
        history = history_from_json(loads(row["history"], []))
        column = "report"
        candidates = tuple(CandidateRecord(**c) for c in (decoded["report"] or {}).get("candidates", []))
    except (ValueError, TypeError, AttributeError) as exc:
        raise StorageError(f"{path or _opened or 'the database'}: optimization '{row['name']}' has a {column} "
                           f"promptlab never writes ({exc}); delete that row or restore the database "
                           f"from a backup") from None
    return Optimization(**{**row, **decoded, "history": history, "candidates": candidates})


_opened: Path | None = None  # the database this process opened, named in write errors


def open_store(path: Path) -> Store:
    """Open (creating if needed, private to this user) and migrate; refuse a newer database."""
    global _opened
    _opened = path
    _create_private(path)
    try:
        db = Database(path)
        db.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
        if db.journal_mode != "wal":
            db.enable_wal()
        db.execute("pragma synchronous = NORMAL")
        db.execute("pragma foreign_keys = ON")
        known = {m.name for m in migrations._migrations}
        newer = [m.name for m in migrations.applied(db) if m.name not in known]
        if newer:
            raise UsageError(f"{path}: written by a newer promptlab (migration {newer[0]}); "
                             f"upgrade promptlab (pip install -U promptlab)")
        if migrations.pending(db):
            with db.atomic():  # two processes opening a new database migrate it once
                if migrations.pending(db):
                    migrations.apply(db)
    except sqlite3.DatabaseError as exc:
        if is_locked(exc):
            raise StorageError(f"{path} stayed locked by another process for "
                               f"{BUSY_TIMEOUT_MS // 1000} s; try again when it is less busy") from None
        raise storage_error(path, exc, "open") from None
    return Store(db, path)


def _create_private(path: Path) -> None:
    """A new database and its folder are readable by this user only (0600 / 0700).

    SQLite gives the -wal and -shm files the database file's mode.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    if not path.exists():
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:  # another process created it a moment ago
            pass
