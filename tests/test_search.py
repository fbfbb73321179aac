"""Search's parts on the in-process fake model (no server): the evaluator and the proposer."""

from __future__ import annotations

import asyncio
import json

import pytest

from promptlab.lm import Gateway, chat_key
from promptlab.models import Case, PromptContent, Signature
from promptlab.optimizers import operators as ops
from promptlab.optimizers.base import Budget, BudgetExhausted, CommonKnobs, Objective, Problem, SearchConfig
from tests.fake_model import rules_model

SIGNATURE = Signature(name="sentiment", instruction="Label the review.", inputs=["text"],
                      outputs=[{"name": "label", "type": "enum", "choices": ["positive", "negative"]}])
GOOD = '{"rationale": "it never names a label", "instruction": "Say positive or negative."}'


class KeptCache:
    """A response cache in memory that keeps the key of every reply stored."""

    def __init__(self):
        self.values: dict[str, dict] = {}

    def get(self, key):
        return self.values.get(key)

    def put(self, key, kind, model, value):
        self.values[key] = value


def make_search(tmp_path, model, *, budget=Budget(calls=100), knobs=CommonKnobs(), test_reserve=0):
    from promptlab.config import Settings
    from promptlab.optimizers.ledger import Ledger
    from promptlab.optimizers.search import Search
    from promptlab.store import open_store

    store = open_store(tmp_path / "s.db")
    project_id = store.ensure_project("p")
    sig_id = store.upsert_signature(project_id, SIGNATURE)
    base = store.add_prompt(project_id, "clf", PromptContent(template="Review: {{ text }}"), signature_id=sig_id)
    store.add_cases(project_id, [Case(inputs={"text": f"{word} item {i}"}, expected={"label": label})
                                 for i in range(3) for word, label in (("good", "positive"), ("bad", "negative"))])
    cases = tuple(store.cases(project_id))
    problem = Problem(base=base, signature=store.prompt_signature(base), train=cases[:2], val=cases[2:],
                      objective=Objective(), task_model=model, proposer=model, budget=budget)
    opt_id = store.create_optimization(project_id, "o", "iterative", config={}, base_prompt_id=base.id,
                                       splits={}, budget={})
    gateway = Gateway(cache=KeptCache(), retries=0)
    return Search(SearchConfig(project_id, opt_id, "o", "iterative", knobs, 2), problem, store=store,
                  settings=Settings(), gateway=gateway, ledger=Ledger(budget, test_reserve=test_reserve))


def propose(search, messages):
    return asyncio.run(search.propose("rewrite", messages, lambda o: ops.validate_instruction(o, "")))


PARAMS = {"temperature": 0.7, "max_tokens": 128}


def test_the_proposer_re_asks_with_every_unusable_reply_in_the_conversation(tmp_path):
    asked = ops.paraphrase_messages(SIGNATURE, "Label it.")
    with rules_model([["unusable: the reply holds no JSON", '{"rationale": "x"}'],
                      ["unusable: the \"instruction\" key", GOOD]], default="no json here") as model:
        search = make_search(tmp_path, model, knobs=CommonKnobs(proposer_retries=2))
        assert propose(search, asked) == json.loads(GOOD)
    # the requests, byte for byte (their cache keys): each retry holds every reply before it
    second = asked + [{"role": "assistant", "content": "no json here"},
                      {"role": "user", "content": "That reply is unusable: the reply holds no JSON object. "
                                                  "Reply with the JSON object only."}]
    third = second + [{"role": "assistant", "content": '{"rationale": "x"}'},
                      {"role": "user", "content": "That reply is unusable: the \"instruction\" key is missing "
                                                  "or empty. Reply with the JSON object only."}]
    assert list(search.gateway.cache.values) == [chat_key(model, convo, PARAMS) for convo in (asked, second, third)]
    assert search.spent.calls == 3 and search.spent.provider_calls == 3
    assert search.spent.tokens == sum(len(str(c["content"]).split()) + 1 for c in (asked[-1], second[-1], third[-1]))
    assert search.history[-1] == {"event": "proposer", "iteration": 0, "operator": "rewrite", "ok": True,
                                  "attempts": 3}

    # the same search again: every reply from the cache, every one counted against the budget
    with rules_model([], default="unused") as again:
        search2 = make_search(tmp_path / "2", again, knobs=CommonKnobs(proposer_retries=2))
        search2.gateway.cache = search.gateway.cache
        assert propose(search2, asked) == json.loads(GOOD) and again.calls == []
        assert search2.spent.calls == 3 and search2.spent.provider_calls == 0
        assert search2.spent.tokens == search.spent.tokens


def test_the_proposer_gives_up_after_its_retries_and_stops_at_the_budget(tmp_path):
    asked = ops.paraphrase_messages(SIGNATURE, "Label it.")
    with rules_model([], default="no json here") as model:
        search = make_search(tmp_path, model, budget=Budget(calls=5), knobs=CommonKnobs(proposer_retries=1))
        assert propose(search, asked) is None
        assert search.history[-1] == {"event": "proposer", "iteration": 0, "operator": "rewrite", "ok": False,
                                      "reason": "the reply holds no JSON object"}
        assert search.spent.calls == 2
        assert propose(search, ops.paraphrase_messages(SIGNATURE, "Other.")) is None  # calls 3 and 4
        with pytest.raises(BudgetExhausted, match="call budget reached"):
            propose(search, ops.paraphrase_messages(SIGNATURE, "Third."))       # call 5, then no room
        assert search.spent.calls == 5 and len(model.calls) == 5


def test_a_refused_proposer_request_is_an_unusable_reply(tmp_path):
    import litellm

    refused = litellm.BadRequestError("no such thing", model="rules", llm_provider="openai")
    with rules_model([["", refused]]) as model:
        search = make_search(tmp_path, model)
        assert propose(search, ops.paraphrase_messages(SIGNATURE, "Label it.")) is None
    last = search.history[-1]
    assert last["ok"] is False and last["reason"].startswith("bad_request: ") and search.spent.calls == 1
