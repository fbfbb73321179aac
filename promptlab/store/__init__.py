"""The SQLite store: one `Store` for callers, made of one part per record family.

    store/database.py       open (WAL, migrations), the write lock, JSON columns, errors
    store/projects.py       projects            store/signatures.py   signatures
    store/prompts.py        prompt versions     store/cases.py        cases
    store/runs.py           runs                store/results.py      results
    store/optimizations.py  optimizations       store/cache.py        the response cache
    store/lease.py          who owns a running run or optimization (host, pid, heartbeat)
    store/records.py        the typed records the reads return
    store/guards.py         the guard's state and decisions

One unit of work = one `with db.atomic():` (see store/database.py).
"""

from __future__ import annotations

from pathlib import Path

from promptlab.store.cache import ResponseCache
from promptlab.store.cases import Cases
# the helpers callers take from the store: JSON columns, lock and write errors, one clock
from promptlab.store.database import (Database, dumps, is_locked, loads, open_database, parse_ref,  # noqa: F401
                                      storage_error)
from promptlab.store.lease import Leases, now  # noqa: F401
from promptlab.store.optimizations import Optimizations
from promptlab.store.projects import Projects
from promptlab.store.prompts import Prompts
from promptlab.store.results import Results
from promptlab.store.runs import Runs
from promptlab.store.signatures import Signatures


class Store(Projects, Signatures, Prompts, Cases, Runs, Results, Optimizations, Leases, ResponseCache):
    """Every read and write of the database, by record family (see the modules above)."""


def open_store(path: Path) -> Store:
    """Open (creating if needed, private to this user) and migrate; refuse a newer database."""
    return Store(open_database(path), path)
