"""The response cache: replies and embeddings by content-addressed key (written with results)."""

from __future__ import annotations

import json

from promptlab.store.database import StoreBase


class ResponseCache(StoreBase):
    """The response_cache table (read, counted, cleared here; written by `Results.save_results`)."""

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
