"""What an optimization may still spend: every budget counter and rule in one place (no model, no store).

- `calls` counts the model requests the search *needed*, a cached reply included
  (one per version × case evaluated, embedding or proposer reply), so a resumed
  search spends exactly what the uninterrupted one would and makes the same decisions.
- `test_reserve` calls are set aside up front for scoring the base, naive k-shot
  and the winner on the test split; the search may use the rest.
- The gateway's hard cap (`gateway_cap`, for `Gateway.max_calls`) keeps the
  requests really sent — retries and earlier sessions of the optimization
  included — within the budget.
- Tokens and cost are checked after each step (`exhausted`): the step that crosses
  them ends the search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptlab.optimizers.base import Budget, BudgetExhausted, Spent
from promptlab.providers.usage import Ledger as Usage, RoleUsage, calls_for, merged

if TYPE_CHECKING:
    from promptlab.config import ModelConfig
    from promptlab.providers.gateway import Gateway
    from promptlab.models import Completion


@dataclass
class Ledger:
    budget: Budget
    test_reserve: int = 0    # calls set aside for the test split
    sent_before: int = 0     # requests earlier sessions of this optimization sent
    sent_at_start: int = 0   # the gateway's count of sent requests when this session began
    calls: int = 0
    tokens: int = 0
    cost: float = 0.0
    test_calls: int = 0      # calls the test split took
    roles_before: dict[str, Any] = field(default_factory=dict)  # earlier sessions' usage by role (JSON)

    @property
    def remaining(self) -> int | None:
        """Calls the search may still need (None: no call budget)."""
        return None if self.budget.calls is None else self.budget.calls - self.test_reserve - self.calls

    def fits(self, calls: int) -> bool:
        return self.remaining is None or calls <= self.remaining

    def spend(self, calls: int) -> None:
        """Take calls from the search's share; BudgetExhausted (nothing taken) if they do not fit."""
        if not self.fits(calls):
            raise BudgetExhausted("call budget reached")
        self.calls += calls

    def charge(self, tokens: int = 0, cost: float = 0.0) -> None:
        self.tokens += tokens
        self.cost += cost

    def spend_test(self, calls: int) -> None:
        self.test_calls += calls

    @property
    def exhausted(self) -> bool:
        """The token or the cost budget is reached."""
        b = self.budget
        return (b.tokens is not None and self.tokens >= b.tokens) or (b.cost is not None and self.cost >= b.cost)

    def gateway_cap(self, *, test: bool = False) -> int | None:
        """The most requests the gateway may have sent (its own count) before the next is refused:
        the budget less what earlier sessions sent, less the test reserve while the search runs."""
        if self.budget.calls is None:
            return None
        return self.sent_at_start + self.budget.calls - (0 if test else self.test_reserve) - self.sent_before

    def projection(self) -> dict[str, int | None]:
        """Most calls the search and the test scoring may take (None: no call budget)."""
        budget = self.budget.calls
        return {"search": None if budget is None else budget - self.test_reserve,
                "test": self.test_reserve if budget is not None else None, "total": budget}

    def spent(self, sent_now: int, usage: Usage | None = None) -> Spent:
        """What the optimization spent, given the gateway's count of sent requests now and its
        usage ledger (requests, tokens and cost by role: task, judge, embedding, proposer)."""
        session: dict[str, RoleUsage] = {}
        for (_, role), used in (usage or {}).items():
            session = merged(session, {role: used})
        roles = merged({role: RoleUsage.of(u) for role, u in self.roles_before.items()}, session)
        return Spent(calls=self.calls, tokens=self.tokens, cost=round(self.cost, 6),
                     provider_calls=self.sent_before + sent_now - self.sent_at_start, test_calls=self.test_calls,
                     by_role={role: u.as_json() for role, u in roles.items()})


class Metered:
    """A gateway whose chat requests are paid from the ledger: one call before each is asked (a
    cached reply too, so the count replays on resume; BudgetExhausted when none is left), its
    tokens and cost after. What the proposer hands to `ask_json`, so its retries count too."""

    def __init__(self, gateway: Gateway, ledger: Ledger):
        self.gateway, self.ledger = gateway, ledger

    async def complete(self, model: ModelConfig, messages: list[dict], params: dict | None = None,
                       **options: Any) -> Completion:
        self.ledger.spend(1)
        with calls_for("proposer"):
            reply = await self.gateway.complete(model, messages, params, **options)
        self.ledger.charge(reply.usage.prompt_tokens + reply.usage.completion_tokens, reply.usage.cost or 0.0)
        return reply
