"""Where an evaluation's results and cached replies go: the store, buffered and committed once
per loop tick; and the gateway whose response cache it is."""

from __future__ import annotations

import asyncio
import time

from promptlab.config import Settings
from promptlab.errors import StorageError
from promptlab.providers.gateway import Gateway
from promptlab.models import ItemResult
from promptlab.store import Store, dumps, is_locked, now, storage_error


class StoreSink:
    """Sink and response cache over the store: buffered, committed once per loop tick.

    Every result finished in one turn of the event loop goes out in one commit,
    so a kill loses at most the items still in flight. A commit that meets lock
    contention keeps its rows and is retried; any other failure (disk full,
    I/O error) is kept in `failure`, and `check()` raises it so the runner
    stops calling the provider. Rows are never dropped before they are stored.
    """

    RETRY_S = 0.2

    def __init__(self, store: Store):
        self.store = store
        self.rows: list[dict] = []
        self.pending_cache: dict[str, dict] = {}
        self.scheduled = False
        self.failure: StorageError | None = None

    def get(self, key: str) -> dict | None:
        if key in self.pending_cache:
            return self.pending_cache[key]["value"]
        return self.store.cache_get(key)

    def put(self, key: str, kind: str, model: str, value: dict) -> None:
        self.pending_cache[key] = {"key": key, "kind": kind, "model": model, "value": value}
        self._schedule()

    def add(self, item: ItemResult) -> None:
        self.rows.append(item.row() | {"created_at": now()})
        self._schedule()

    def check(self) -> None:
        """Raise the write failure, if a commit failed: no more work should start."""
        if self.failure is not None:
            raise self.failure

    def _schedule(self, delay: float = 0.0) -> None:
        if not self.scheduled:
            self.scheduled = True
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: flush right away
                self.flush()
                return
            if delay:
                loop.call_later(delay, self.flush)
            else:
                loop.call_soon(self.flush)

    def flush(self) -> bool:
        """Commit what is buffered; False when it could not be (it stays buffered)."""
        self.scheduled = False
        if not self.rows and not self.pending_cache or self.failure is not None:
            return self.failure is None
        cache_rows = [{"key": c["key"], "kind": c["kind"], "model": c["model"],
                       "response": dumps(c["value"]), "created_at": now()}
                      for c in self.pending_cache.values()]
        try:
            self.store.save_results(self.rows, cache_rows)
        except Exception as exc:  # never lost: lock contention retries, anything else stops the run
            if is_locked(exc):
                self._schedule(self.RETRY_S)
            else:
                self.failure = storage_error(self.store.path, exc)
            return False
        self.rows, self.pending_cache = [], {}
        return True

    def close(self, attempts: int = 20) -> None:
        """The last commit, retried through lock contention; a failure stays in `failure`."""
        for _ in range(attempts):
            if self.flush() or self.failure is not None:
                return
            time.sleep(self.RETRY_S)
        if self.rows or self.pending_cache:
            self.failure = StorageError(f"{self.store.path} stayed locked by other processes; "
                                        f"{len(self.rows)} results could not be saved")

    def beat(self, run_ids: list[int]) -> None:
        """Heartbeat of the runs this process owns (a locked database just skips a beat)."""
        try:
            self.store.heartbeat("runs", run_ids)
        except Exception as exc:
            if not is_locked(exc) and self.failure is None:
                self.failure = storage_error(self.store.path, exc)


def make_gateway(store: Store, settings: Settings) -> Gateway:
    return Gateway(cache=StoreSink(store), retries=settings.defaults.retries,
                   timeout=settings.defaults.timeout, max_reply_bytes=settings.defaults.max_reply_bytes)
