"""The guard's records: one per guarded prompt family, and every decision it took.

    state = guards.get(project_id, "classifier")      # a GuardState, created on first use
    guards.claim(state.id, now, cooldown_s)            # the cooldown checked and taken in one write
    guards.record(state.id, decision)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from promptlab.store.lease import now as utc_now

PAUSE_AFTER = 3  # triggered runs in a row without a significant lift


@dataclass(frozen=True)
class GuardState:
    id: int
    project_id: int
    prompt: str
    paused: bool
    paused_reason: str | None
    no_gain: int
    last_optimized_at: str | None

    def cooldown_until(self, cooldown_s: float) -> str | None:
        if self.last_optimized_at is None:
            return None
        return _stamp(_parse(self.last_optimized_at) + timedelta(seconds=cooldown_s))


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


class Guards:
    def __init__(self, db: Any):
        self.db = db

    def get(self, project_id: int, prompt: str) -> GuardState:
        with self.db.atomic():
            self.db.execute("insert or ignore into guards (project_id, prompt, paused, no_gain, created_at) "
                            "values (?, ?, 0, 0, ?)", [project_id, prompt, utc_now()])
        return self._read(project_id, prompt)

    def find(self, project_id: int, prompt: str) -> GuardState | None:
        return self._read(project_id, prompt)

    def _read(self, project_id: int, prompt: str) -> GuardState | None:
        row = self.db.execute("select id, project_id, prompt, paused, paused_reason, no_gain, last_optimized_at "
                              "from guards where project_id = ? and prompt = ?", [project_id, prompt]).fetchone()
        return None if row is None else GuardState(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6])

    def set_paused(self, guard_id: int, paused: bool, reason: str | None) -> None:
        with self.db.atomic():
            self.db.execute("update guards set paused = ?, paused_reason = ?, no_gain = case when ? then no_gain "
                            "else 0 end where id = ?", [int(paused), reason, int(paused), guard_id])

    def claim(self, guard_id: int, cooldown_s: float) -> str | None:
        """Take the right to optimize now: None when taken (the time is stamped), else the time the
        cooldown ends. One write, so two guards started together never both optimize."""
        with self.db.atomic():
            last = self.db.execute("select last_optimized_at from guards where id = ?", [guard_id]).fetchone()[0]
            moment = _parse(utc_now())
            if last is not None and moment < _parse(last) + timedelta(seconds=cooldown_s):
                return _stamp(_parse(last) + timedelta(seconds=cooldown_s))
            self.db.execute("update guards set last_optimized_at = ? where id = ?", [_stamp(moment), guard_id])
        return None

    def after_optimization(self, guard_id: int, gained: bool) -> GuardState:
        """Count a triggered run; the third in a row without a significant lift pauses the guard."""
        with self.db.atomic():
            self.db.execute("update guards set no_gain = case when ? then 0 else no_gain + 1 end where id = ?",
                            [int(gained), guard_id])
            self.db.execute("update guards set paused = 1, paused_reason = ? where id = ? and no_gain >= ?",
                            [f"paused after {PAUSE_AFTER} triggered optimizations in a row without a "
                             "significant lift", guard_id, PAUSE_AFTER])
            row = self.db.execute("select project_id, prompt from guards where id = ?", [guard_id]).fetchone()
        return self._read(row[0], row[1])

    def record(self, guard_id: int, decision: dict[str, Any]) -> None:
        with self.db.atomic():
            self.db["guard_decisions"].insert({"guard_id": guard_id, "at": utc_now(), **decision})

    def decisions(self, guard_id: int, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.db.query("select at, ref, decision, exit_code, score, threshold, run, optimization, lift, "
                             "p_value, significant, message from guard_decisions where guard_id = ? "
                             "order by id desc limit ?", [guard_id, limit])
        return [{**r, "significant": None if r["significant"] is None else bool(r["significant"])} for r in rows]
