"""The SQLite database under the store: opened with WAL and migrations, one write lock per unit of work.

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
from typing import Any

# sqlite_utils imports numpy (most of a `runs list`'s start) only to map numpy scalars to column
# types; promptlab declares its columns in migrations.py, so numpy is kept out of that import.
_NUMPY_ALREADY = "numpy" in sys.modules
if not _NUMPY_ALREADY:
    sys.modules["numpy"] = None  # type: ignore[assignment]  # `import numpy` raises ImportError
try:
    import sqlite_utils
    from sqlite_utils.db import NotFoundError as RowNotFound  # noqa: F401  (the record families catch it)
finally:
    if not _NUMPY_ALREADY:
        del sys.modules["numpy"]

from promptlab.errors import StorageError, UsageError
from promptlab.store.migrations import migrations

BUSY_TIMEOUT_MS = 30_000


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
    where = db_name(path)
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return StorageError(f"cannot read {where}: it is damaged or not a promptlab database ({exc}); keep a "
                            f"copy, then recover what is readable with `sqlite3 {where} .recover | sqlite3 "
                            f"recovered.db` and point PROMPTLAB_DB at recovered.db (or restore a backup)")
    if "full" in text or "i/o" in text or "too large" in text:
        return StorageError(f"disk full (or file size limit reached) writing {where}: {exc}; free space")
    if "readonly" in text or "read-only" in text or "permission" in text:
        return StorageError(f"cannot write {where} ({exc}); make the file and its folder writable")
    return StorageError(f"cannot {verb} {where}: {type(exc).__name__}: {exc}")




class StoreBase:
    """What every record family works on: the database and the file it came from."""

    def __init__(self, db: Database, path: Path | None = None):
        self.db = db
        self.path = path

    def free_name(self, table: str, project_id: int, base: str) -> str:
        """`base`, or `base-2`, `base-3`… whichever is not yet a name in `table` (runs, optimizations)."""
        like = base.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "-%"
        taken = {row[0] for row in self.db.execute(
            f"select name from [{table}] where project_id = ? and (name = ? or name like ? escape '\\')",
            [project_id, base, like])}
        return next(name for n in itertools.count(1) if (name := base if n == 1 else f"{base}-{n}") not in taken)

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file and truncate it."""
        self.db.execute("pragma wal_checkpoint(TRUNCATE)")


_opened: Path | None = None  # the database this process opened, named in write errors


def db_name(path: Path | None) -> Path | str:
    """The database to name in an error: this store's file, else the one this process opened."""
    return path or _opened or "the database"


def open_database(path: Path) -> Database:
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
    return db


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
