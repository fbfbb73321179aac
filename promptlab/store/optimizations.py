"""Optimizations: a search's record, history and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from promptlab.errors import StorageError, UsageError
from promptlab.store import lease
from promptlab.store.database import StoreBase, db_name, dumps, loads
from promptlab.store.lease import now
from promptlab.store.runs import run_record
from promptlab.store.records import CandidateRecord, Optimization, Run, Step, history_from_json, step_json


class Optimizations(StoreBase):
    """The optimizations table."""

    def find_optimization(self, project_id: int, name: str) -> Optimization | None:
        """The optimization with this name, or None."""
        rows = list(self.db["optimizations"].rows_where("project_id = ? and name = ?", [project_id, name],
                                                        limit=1))
        return _optimization(rows[0], self.path) if rows else None

    def optimization_by_id(self, optimization_id: int) -> Optimization:
        return _optimization(self.db["optimizations"].get(optimization_id), self.path)

    def optimization_runs(self, optimization_id: int) -> list[Run]:
        return [run_record(r) for r in self.db["runs"].rows_where(
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
        raise StorageError(f"{db_name(path)}: optimization '{row['name']}' has a {column} "
                           f"promptlab never writes ({exc}); delete that row or restore the database "
                           f"from a backup") from None
    return Optimization(**{**row, **decoded, "history": history, "candidates": candidates})
