"""Who a model call is for: its role (task, judge, embedding, proposer) and the run it serves.

The gateway adds every request it sends and every reply it hands out (cached or not) to the
ledger of the caller's role, so a run or an optimization can say what each role cost. The role
travels in a context variable: the runner marks a task call and the scoring of its reply, the
optimizer marks the proposer's calls, and whatever they call (a judge, an embedding) inherits it.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any, Iterator

ROLES = ("task", "judge", "embedding", "proposer")
_CALLER: ContextVar[tuple[int | None, str]] = ContextVar("promptlab_caller", default=(None, "task"))


def caller() -> tuple[int | None, str]:
    """(the run the call serves or None, its role)."""
    return _CALLER.get()


@contextmanager
def calls_for(role: str, run_id: int | None = None) -> Iterator[None]:
    """Calls made inside are `role`'s, for `run_id` (default: the run already in the context)."""
    token = _CALLER.set((run_id if run_id is not None else _CALLER.get()[0], role))
    try:
        yield
    finally:
        _CALLER.reset(token)


@dataclass
class RoleUsage:
    """What one role spent: requests sent (retries included), replies used (cached ones too),
    tokens, and cost (None once a reply had no known price: an unpriced model is n/a, cached or not)."""

    requests: int = 0
    replies: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = 0.0

    def reply(self, prompt_tokens: int, completion_tokens: int, cost: float | None, cached: bool) -> None:
        self.replies += 1
        self.cached += cached
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost = None if cost is None or self.cost is None else self.cost + (0.0 if cached else cost)

    def add(self, other: "RoleUsage") -> "RoleUsage":
        cost = None if self.cost is None or other.cost is None else self.cost + other.cost
        return RoleUsage(self.requests + other.requests, self.replies + other.replies,
                         self.cached + other.cached, self.prompt_tokens + other.prompt_tokens,
                         self.completion_tokens + other.completion_tokens, cost)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cost"] = None if self.cost is None else round(self.cost, 6)
        return data

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> "RoleUsage":
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


Ledger = dict[tuple[int | None, str], RoleUsage]


def by_run(ledger: Ledger, run_id: int | None, roles: tuple[str, ...] = ROLES) -> dict[str, RoleUsage]:
    """The ledger's entries of one run, by role."""
    return {role: usage for (owner, role), usage in ledger.items() if owner == run_id and role in roles}


def merged(*parts: dict[Any, RoleUsage]) -> dict[Any, RoleUsage]:
    """Role (or ledger key) → usage, summed over parts."""
    out: dict[Any, RoleUsage] = {}
    for part in parts:
        for role, usage in part.items():
            out[role] = out[role].add(usage) if role in out else usage
    return out


def total_cost(roles: dict[str, RoleUsage]) -> float | None:
    """The sum over roles that had replies; n/a when any of them is unpriced."""
    costs = [u.cost for u in roles.values() if u.replies]
    return None if any(c is None for c in costs) else round(sum(costs), 6)
