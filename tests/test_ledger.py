"""The budget ledger on its own: numbers in, decisions out (no model, no store)."""

import asyncio

import pytest

from promptlab.models import Completion, Usage
from promptlab.optimizers.base import Budget, BudgetExhausted, Spent
from promptlab.optimizers.ledger import Ledger, Metered


def test_the_search_spends_the_budget_less_the_test_reserve():
    ledger = Ledger(Budget(calls=100), test_reserve=30)
    assert ledger.remaining == 70 and ledger.projection() == {"search": 70, "test": 30, "total": 100}
    ledger.spend(60)
    assert ledger.fits(10) and not ledger.fits(11)
    with pytest.raises(BudgetExhausted, match="call budget reached"):
        ledger.spend(11)
    assert ledger.calls == 60   # a spend that does not fit takes nothing
    ledger.spend(10)
    assert ledger.remaining == 0 and not ledger.fits(1) and ledger.fits(0)
    ledger.spend_test(30)       # the test split has its own share
    assert ledger.calls == 70 and ledger.test_calls == 30


def test_without_a_call_budget_everything_fits_and_nothing_is_capped():
    ledger = Ledger(Budget(tokens=1000))
    ledger.spend(10 ** 6)
    assert ledger.remaining is None and ledger.fits(10 ** 9)
    assert ledger.gateway_cap() is None and ledger.gateway_cap(test=True) is None
    assert ledger.projection() == {"search": None, "test": None, "total": None}


def test_the_gateway_cap_counts_earlier_sessions_and_frees_the_reserve_for_the_test_split():
    # a resumed optimization: 40 requests sent before; this session's gateway had sent 5 when it began
    ledger = Ledger(Budget(calls=100), test_reserve=20, sent_before=40, sent_at_start=5)
    assert ledger.gateway_cap() == 5 + 100 - 20 - 40          # the gateway's own count, not the session's
    assert ledger.gateway_cap(test=True) == 5 + 100 - 40
    assert ledger.spent(sent_now=15).provider_calls == 40 + 10


def test_tokens_or_cost_past_their_budget_exhaust_it():
    tokens = Ledger(Budget(tokens=100))
    tokens.charge(99, 0.0)
    assert not tokens.exhausted
    tokens.charge(1, 0.0)
    assert tokens.exhausted
    cost = Ledger(Budget(cost=0.5))
    cost.charge(10 ** 6, 0.49)
    assert not cost.exhausted
    cost.charge(0, 0.01)
    assert cost.exhausted


def test_spent_is_what_the_optimization_reports():
    ledger = Ledger(Budget(calls=50), test_reserve=10, sent_before=3, sent_at_start=7)
    ledger.spend(12)
    ledger.spend_test(4)
    ledger.charge(120, 0.0123456789)
    assert ledger.spent(sent_now=20) == Spent(calls=12, tokens=120, cost=0.012346, provider_calls=16,
                                              test_calls=4)


class Replies:
    """A gateway stand-in: hands out replies, keeps what it was asked."""

    def __init__(self, *replies):
        self.replies, self.asked = list(replies), []

    async def complete(self, model, messages, params=None, **options):
        self.asked.append((messages, params, options))
        return self.replies.pop(0)


def test_a_metered_gateway_pays_each_request_before_it_is_asked_cached_or_not():
    ledger = Ledger(Budget(calls=3), test_reserve=1)
    gateway = Replies(Completion(text="a", usage=Usage(prompt_tokens=5, completion_tokens=2, cost=0.25)),
                      Completion(text="b", usage=Usage(prompt_tokens=5, completion_tokens=1), cached=True))
    metered = Metered(gateway, ledger)
    assert asyncio.run(metered.complete(None, [{"role": "user", "content": "x"}], {"t": 1}, sample=2)).text == "a"
    assert asyncio.run(metered.complete(None, [], None)).text == "b"
    assert (ledger.calls, ledger.tokens, ledger.cost) == (2, 13, 0.25)
    assert gateway.asked[0] == ([{"role": "user", "content": "x"}], {"t": 1}, {"sample": 2})
    with pytest.raises(BudgetExhausted):
        asyncio.run(metered.complete(None, [], None))   # the reserve is not the search's to spend
    assert len(gateway.asked) == 2
