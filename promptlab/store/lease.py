"""Who is running a run or an optimization: host, pid and a heartbeat (a job lease).

A process that starts or resumes work records itself as the owner and beats
every HEARTBEAT_S seconds while it works. Another process may take the work
over only when the owner is gone: on this host, its pid no longer exists (or
is a zombie); elsewhere, its heartbeat is older than STALE_S.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from typing import Any, Iterable

from promptlab.errors import UsageError
from promptlab.store.database import StoreBase

HEARTBEAT_S = 5.0
STALE_S = 60.0
SKEW_S = 5.0  # clocks of hosts sharing a database may differ this much; a beat further ahead is forged
HOST = socket.gethostname()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def mine() -> dict:
    """The owner columns for this process."""
    return {"owner_host": HOST, "owner_pid": os.getpid(), "heartbeat_at": now()}


def holder(status: str, host: str | None, pid: int | None, heartbeat_at: str | None) -> str | None:
    """Who holds this running run or optimization (or submitted run: a batch waiter), when that is
    a live process other than this one; else None."""
    if status not in ("running", "submitted") or not pid:
        return None
    if host == HOST and pid == os.getpid():
        return None
    age = _age_s(heartbeat_at)
    # a heartbeat from the future (a skewed clock, a forged row) would keep a dead run live forever
    alive = _pid_alive(pid) if host == HOST else age is not None and -SKEW_S <= age < STALE_S
    if not alive:
        return None
    beat = f", last heartbeat {age:.0f} s ago" if age is not None else ""
    return f"pid {pid} on {host}{beat}"


def _age_s(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return (datetime.now(timezone.utc) - datetime.fromisoformat(stamp)).total_seconds()
    except (ValueError, TypeError):  # not a timestamp, or one without a time zone
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Leases(StoreBase):
    """Which process owns a run or an optimization row."""

    def claim(self, table: str, row_id: int, what: str, **fields: Any) -> None:
        """Make this process the owner of a run or optimization, unless a live process owns it."""
        with self.db.atomic():
            row = self.db[table].get(row_id)
            owner = holder(row["status"], row["owner_host"], row["owner_pid"], row["heartbeat_at"])
            if owner:
                raise UsageError(f"{what} is still running ({owner}); wait for it to finish or stop "
                                 f"that process, then resume")
            self.db[table].update(row_id, {"status": "running", **mine(), **fields})

    def heartbeat(self, table: str, ids: Iterable[int]) -> None:
        """Tell other processes that this one still works on these rows."""
        ids = list(ids)
        if ids:
            with self.db.atomic():
                self.db.execute(
                    f"update [{table}] set heartbeat_at = ? where owner_pid = ? and owner_host = ? "
                    f"and id in ({','.join('?' * len(ids))})", [now(), os.getpid(), HOST, *ids])
