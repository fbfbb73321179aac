"""Search's parts on the in-process fake model (no server): the evaluator and the proposer."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest

from promptlab.providers.gateway import Gateway, chat_key
from promptlab.models import Case, PromptContent, Signature
from promptlab.optimizers import operators as ops
from promptlab.optimizers.base import Budget, BudgetExhausted, CommonKnobs, Objective, Problem, SearchConfig
from promptlab.store.records import Note
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


@dataclass
class World:
    """Project p, prompt clf@1 (zero-shot), 3 good + 3 bad cases (train: the first 2, val: the rest)."""

    store: Any
    problem: Problem
    config: SearchConfig
    gateway: Gateway


def world(tmp_path, model, *, budget=Budget(calls=100), knobs=CommonKnobs()) -> World:
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
    return World(store, problem, SearchConfig(project_id, opt_id, "o", "iterative", knobs, 2),
                 Gateway(cache=KeptCache(), retries=0))


def make_search(tmp_path, model, *, budget=Budget(calls=100), knobs=CommonKnobs(), test_reserve=0):
    from promptlab.config import Settings
    from promptlab.optimizers.ledger import Ledger
    from promptlab.optimizers.search import Search

    w = world(tmp_path, model, budget=budget, knobs=knobs)
    return Search(w.config, w.problem, store=w.store, settings=Settings(), gateway=w.gateway,
                  ledger=Ledger(budget, test_reserve=test_reserve))


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
    assert search.history[-1] == Note("proposer", 0, {"operator": "rewrite", "ok": True, "attempts": 3})

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
        assert search.history[-1] == Note("proposer", 0, {"operator": "rewrite", "ok": False,
                                                          "reason": "the reply holds no JSON object"})
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
    last = search.history[-1].data
    assert last["ok"] is False and last["reason"].startswith("bad_request: ") and search.spent.calls == 1


# ---- the evaluator ------------------------------------------------------------------------
class Events:
    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)


def evaluator(w: World, ledger, progress=None):
    from promptlab.config import Settings
    from promptlab.optimizers.evaluator import Evaluator

    w.gateway.max_calls = ledger.gateway_cap()
    return Evaluator(store=w.store, settings=Settings(), gateway=w.gateway, ledger=ledger, config=w.config,
                     problem=w.problem, progress=progress or Events(), status=lambda: "the search's status")


def evaluate(ev, candidates, cases):
    return asyncio.run(ev.evaluate(candidates, cases))


def candidate(w: World, content=None):
    from promptlab.optimizers.evaluator import Candidate

    prompt = w.problem.base if content is None else w.store.add_prompt(
        w.config.project_id, "clf", content, signature_id=w.problem.base.signature_id, candidate=True)
    return Candidate(prompt=prompt, operator="x", iteration=0)


def test_the_evaluator_scores_what_is_missing_and_never_pays_twice(tmp_path):
    from promptlab.optimizers.ledger import Ledger

    with rules_model([["good", "positive"]], default="maybe") as model:
        w = world(tmp_path, model)
        ledger, events = Ledger(w.problem.budget), Events()
        ev, base = evaluator(w, ledger, events), candidate(w)
        done = evaluate(ev, [base], w.problem.val)
        assert [(c, [case.id for case in cases]) for c, cases in done.done] == [(base, [3, 4, 5, 6])]
        assert not done.short and not done.unsent
        assert base.scores == {3: 1.0, 4: 0.0, 5: 1.0, 6: 0.0} and base.outputs[4] == "maybe"
        assert base.metric_scores[3] == {"exact_match": 1.0} and base.parsed[3] == {"label": "positive"}
        assert ledger.calls == 4 and len(model.calls) == 4
        assert ledger.tokens == 4 * 5     # "Review: good item 0": 4 words in, 1 out
        # all val again and train: only the train cases are new
        done = evaluate(ev, [base], w.problem.train + w.problem.val)
        assert [[case.id for case in cases] for _, cases in done.done] == [[1, 2]]
        assert ledger.calls == 6 and len(model.calls) == 6
        assert evaluate(ev, [base], w.problem.val).done == [] and ledger.calls == 6
        # each batch that went to the runner: the search's state first, then the runner's events
        batch = lambda n: ["SearchEvaluating", "EvalStarted", *n * ["ItemFinished"], "EvalFinished"]  # noqa: E731
        assert [type(e).__name__ for e in events.events] == batch(4) + batch(2)
        assert events.events[0].status == "the search's status"

        # another session of the same search finds the runs: the same calls counted, none sent
        again_ledger = Ledger(w.problem.budget)
        again = candidate(w)
        evaluate(evaluator(w, again_ledger), [again], w.problem.val)
        assert again.scores == {3: 1.0, 4: 0.0, 5: 1.0, 6: 0.0}
        assert again_ledger.calls == 4 and again_ledger.tokens == 20 and len(model.calls) == 6
    assert w.store.db.execute("select count(*) from runs where optimization_id = ?",
                              [w.config.optimization_id]).fetchone()[0] == 2


def test_a_candidate_is_never_scored_on_a_case_it_carries_as_a_demo(tmp_path):
    from promptlab.optimizers.ledger import Ledger

    with rules_model([["good", "positive"], ["bad", "negative"]]) as model:
        w = world(tmp_path, model)
        shown = w.problem.val[0]
        cand = candidate(w, PromptContent(template="Review: {{ text }}",
                                          demos=[ops.demo_from_case(shown, SIGNATURE)]))
        ledger = Ledger(w.problem.budget)
        evaluate(evaluator(w, ledger), [cand], w.problem.val)
    assert shown.id not in cand.scores and len(cand.scores) == 3 and ledger.calls == 3
    assert cand.mean(w.problem.val) == 1.0


def test_candidates_past_the_call_budget_are_left_unevaluated(tmp_path):
    from promptlab.optimizers.ledger import Ledger

    with rules_model([], default="maybe") as model:
        w = world(tmp_path, model)
        ledger = Ledger(Budget(calls=10), test_reserve=3)      # 7 calls: one candidate on 4 val cases
        first, second = candidate(w), candidate(w, PromptContent(system="Be brief.", template="{{ text }}"))
        done = evaluate(evaluator(w, ledger), [first, second], w.problem.val)
    assert done.short and [c for c, _ in done.done] == [first]
    assert len(first.scores) == 4 and second.scores == {} and ledger.calls == 4 and len(model.calls) == 4


def test_requests_past_the_gateway_cap_stay_unscored_for_resume(tmp_path):
    from promptlab.optimizers.ledger import Ledger

    with rules_model([], default="maybe") as model:
        w = world(tmp_path, model)
        ledger = Ledger(Budget(calls=10), sent_before=8)      # an earlier session sent 8: 2 may go out
        cand = candidate(w)
        done = evaluate(evaluator(w, ledger), [cand], w.problem.val)
    assert done.unsent and len(model.calls) == 2 and len(cand.scores) == 2
    assert w.store.db.execute("select status, error from runs").fetchall() == [
        ("interrupted", "the call budget is spent")]


def test_the_test_split_is_scored_with_the_reserve(tmp_path):
    from promptlab.optimizers.ledger import Ledger
    with rules_model([["good", "positive"]], default="maybe") as model:
        w = world(tmp_path, model)
        ledger = Ledger(Budget(calls=10), test_reserve=6)
        ev, base = evaluator(w, ledger), candidate(w)
        evaluate(ev, [base], w.problem.val)                  # the search's 4 calls
        assert w.gateway.max_calls == 4
        assert asyncio.run(ev.evaluate_test([base], w.problem.train + w.problem.val)) is False
    assert w.gateway.max_calls == 10 and ledger.test_calls == 2 and ledger.calls == 4
    assert base.mean(w.problem.train) == 0.5


def test_a_failing_provider_stops_the_evaluation(tmp_path):
    import litellm

    from promptlab.errors import ProviderError
    from promptlab.optimizers.ledger import Ledger

    down = litellm.InternalServerError("down", model="rules", llm_provider="openai")
    with rules_model([["", down]]) as model:
        w = world(tmp_path, model)
        ledger = Ledger(w.problem.budget)
        with pytest.raises(ProviderError, match="task model rules: server: .*optimize --resume o"):
            evaluate(evaluator(w, ledger), [candidate(w)], w.problem.val)
    assert ledger.calls == 0
    assert w.store.db.execute("select status from runs").fetchall() == [("failed",)]
