"""The TPE searches: `mipro` (instructions × demo sets × selectors) and `params` (model parameters).

The world is test_optimizers': a review with "good" is answered "positive" only when
"positive" appears somewhere in the conversation, "bad" likewise; otherwise "maybe".
For `params` the fake server answers right whatever the prompt says, but only when the
request's temperature is in a band (`rules_temperature`): only those parameters help.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.test_optimizers import PROPOSER_REPLY, RULES, chat_calls, optimize, world

pytest.importorskip("optuna")

IN_BAND = [0.6, 0.8]
RIGHT = [["good", "positive"], ["bad", "negative"]]  # right whatever the prompt says (in the band)


def _history(ws, name: str) -> list[dict]:
    return json.loads(ws.rows("select history from optimizations where name = ?", (name,))[0][0])


def _runs(ws, name: str) -> list[tuple[int, int]]:
    """(prompt id, repeat) of every run the optimization made."""
    return ws.rows("select r.prompt_id, r.repeat from runs r join optimizations o on o.id = r.optimization_id "
                   "where o.name = ?", (name,))


def _prompt(ws, prompt_id: int) -> dict:
    """A version's content (its system text, template, demos, params and demo selector)."""
    from promptlab.store import open_store

    store = open_store(ws.db_path)
    try:
        return store.prompt_by_id(prompt_id).content.model_dump(mode="json")
    finally:
        store.db.close()


# ---- params ------------------------------------------------------------------------
def test_params_finds_the_temperature_band_and_its_lift_is_significant(workspace):
    ws = workspace
    world(ws, n=15)
    ws.fake.configure(rules=RIGHT, rules_temperature=IN_BAND)
    result, data = optimize(ws, "--strategy", "params", "--budget-calls", "700", "--seed", "0", "--name", "temp")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["improved"] is True and report["base"]["test"] == 0.0
    winner = _prompt(ws, report["winner"]["prompt_id"])
    base = _prompt(ws, report["base"]["prompt_id"])
    assert IN_BAND[0] <= winner["params"]["temperature"] <= IN_BAND[1]
    # the winner differs from the base in its params only
    assert {k: v for k, v in winner.items() if k != "params"} == {k: v for k, v in base.items() if k != "params"}
    assert report["winner"]["test"] == 1.0 and report["lift"]["test_over_base"] == 1.0
    assert report["lift"]["p_value"] < 0.05
    assert report["spent"]["calls"] + report["spent"]["test_calls"] <= 700
    assert chat_calls(ws) == report["spent"]["provider_calls"] <= 700
    # configurations that sample (and the base, whose temperature is the provider's default)
    # are scored three times per val case, one sample per run repeat
    runs = _runs(ws, "temp")
    assert (report["winner"]["prompt_id"], 3) in runs and (report["base"]["prompt_id"], 3) in runs
    samples = ws.rows("select count(*) from results s join runs r on r.id = s.run_id where r.prompt_id = ? "
                      "and r.repeat = 3", (report["winner"]["prompt_id"],))[0][0]
    assert samples == 3 * report["splits"]["val"]


def test_params_at_temperature_zero_takes_one_sample_and_declared_spaces_are_searched(workspace):
    ws = workspace
    world(ws)
    ws.fake.configure(rules=RIGHT, rules_temperature=[0.0, 0.0])
    result, data = optimize(ws, "--strategy", "params", "--budget-calls", "400", "--name", "t0",
                            "--knob", "params=temperature", "--knob", "space=temperature:0..1/0.5;top_k:1|5")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    winner = _prompt(ws, report["winner"]["prompt_id"])
    assert winner["params"]["temperature"] == 0.0 and winner["params"]["top_k"] in (1, 5)
    tried = {c["prompt_id"] for c in report["candidates"] if c["operator"] == "params"}
    assert {_prompt(ws, pid)["params"]["temperature"] for pid in tried} <= {0.0, 0.5, 1.0}
    assert all((repeat == 1) == (_prompt(ws, pid)["params"]["temperature"] == 0.0)
               for pid, repeat in _runs(ws, "t0") if pid in tried)


@pytest.mark.parametrize("space, says", [
    ("temperature:1..0", "LOW < HIGH"), ("temperature", "not NAME:SPEC"), ("top_k:a..b", "numbers"),
    ("lr:log:0..1", "LOW > 0"), ("x:1|1", "distinct")])
def test_a_bad_space_is_bad_input_naming_the_entry(workspace, space, says):
    ws = workspace
    world(ws)
    result, _ = optimize(ws, "--strategy", "params", "--name", "bad", "--knob", f"space={space}")
    assert result.code == 2 and says in result.stderr and "space" in result.stderr
    assert ws.rows("select count(*) from optimizations") == [(0,)]
    result, _ = optimize(ws, "--strategy", "params", "--name", "bad", "--knob", "params=presence_penalty")
    assert result.code == 2 and "declare it with --knob space='presence_penalty:LOW..HIGH'" in result.stderr


# ---- mipro ---------------------------------------------------------------------------
def test_mipro_lifts_the_base_within_budget_with_lineage(workspace):
    ws = workspace
    world(ws)
    result, data = optimize(ws, "--strategy", "mipro", "--budget-calls", "300", "--seed", "1", "--name", "mi",
                            "--knob", "max_demos=1")  # naive 1-shot names one label: not perfect yet
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["base"]["val"] == 0.0 and report["winner"]["val"] == 1.0 and report["winner"]["test"] == 1.0
    assert report["improved"] is True
    assert report["spent"]["calls"] + report["spent"]["test_calls"] <= 300
    assert chat_calls(ws) == report["spent"]["provider_calls"] <= 300
    made = ws.rows("select parent_id, message from prompts where made_by = 'optimize:mi' "
                   "and message like 'mipro:%'")  # the baselines (naive, structured on/off) aside
    assert made and all(parent == report["base"]["prompt_id"] for parent, _ in made)
    history = _history(ws, "mi")
    space = next(e for e in history if e["event"] == "mipro_space")
    # base, format stated, 3 label statements (one is the format) and the proposer's instruction;
    # fixed demos or the nearest train case, plain or label-balanced
    assert space["instructions"] == 5 and space["selectors"] == 3
    assert any(e["event"] == "proposer" and e["operator"] == "propose" and e["ok"] for e in history)
    assert any("proposed" in message for _, message in made)


def test_mipro_grounds_the_proposer_in_the_data(workspace):
    ws = workspace
    world(ws)
    ws.fake.configure(record_bodies=True)
    result, data = optimize(ws, "--strategy", "mipro", "--budget-calls", "300", "--name", "mi",
                            "--knob", "instructions=2", "--knob", "max_demos=1")
    assert result.code == 0, result.stderr
    asks = [b["messages"][-1]["content"] for b in ws.fake.stats()["bodies"]
            if b["messages"][-1]["content"].endswith("Instruction (JSON):")]
    assert len(asks) == 2
    n_train = data["optimization"]["splits"]["train"]
    for ask in asks:  # the signature, a summary of the data, the base instruction, train examples, a tip
        assert ask.startswith("Task: Label the review. Inputs: text. Output: label (one of positive/negative).")
        assert f"Data: {n_train} training examples" in ask and "2 labels seen, most common: " in ask
        assert "Current instruction: (none)" in ask
        assert ask.count(" | expected: {\"label\": ") == 3 and "\nTip: " in ask
    assert len({ask.split("Tip: ")[1] for ask in asks}) == 2


def test_mipro_works_without_a_proposer(workspace):
    ws = workspace
    world(ws)
    ws.fake.configure(rules=RULES[1:])  # the proposer's replies are useless
    result, data = optimize(ws, "--strategy", "mipro", "--budget-calls", "300", "--name", "weak",
                            "--knob", "max_demos=1")   # naive 1-shot names one label only
    assert result.code == 0, result.stderr
    assert data["optimization"]["winner"]["test"] == 1.0
    assert all(not e["ok"] for e in _history(ws, "weak") if e["event"] == "proposer")


def test_mipro_confirms_its_best_configurations_on_the_whole_val_split(workspace):
    ws = workspace
    world(ws, n=20)
    result, data = optimize(ws, "--strategy", "mipro", "--budget-calls", "600", "--name", "conf",
                            "--knob", "minibatch=4", "--knob", "trials=12", "--knob", "confirm=2",
                            "--knob", "patience=9", "--knob", "max_demos=1")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    n_val = report["splits"]["val"]
    scored = [c for c in report["candidates"] if c["operator"] == "mipro"]
    assert any(c["n_val"] == n_val for c in scored) and any(0 < c["n_val"] < n_val for c in scored)
    assert report["winner"]["val"] is not None  # the winner is judged on all of val


def test_mipro_resumes_to_the_same_winner(workspace):
    ws = workspace
    world(ws)
    args = ("--strategy", "mipro", "--budget-calls", "300", "--seed", "2", "--knob", "max_demos=1")
    _, first = optimize(ws, *args, "--name", "a")
    ws.fake.configure(rules=[], default_reply="maybe")  # a replay must take everything from the cache
    _, again = optimize(ws, *args, "--name", "b")
    same = ("winner", "base")
    assert [again["optimization"][k]["val"] for k in same] == [first["optimization"][k]["val"] for k in same]
    assert _prompt(ws, again["optimization"]["winner"]["prompt_id"]) == \
        _prompt(ws, first["optimization"]["winner"]["prompt_id"])
    assert again["optimization"]["spent"]["provider_calls"] == 0


# ---- both ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["mipro", "params"])
def test_nothing_helps_ends_with_no_improvement_within_budget(workspace, strategy):
    ws = workspace
    world(ws)
    # the reply depends on the case only: no instruction, demo or parameter changes it
    ws.fake.configure(rules=[["", "(JSON):", PROPOSER_REPLY], ["good", "positive"]], default_reply="maybe")
    result, data = optimize(ws, "--strategy", strategy, "--budget-calls", "250", "--name", "flat")
    assert result.code == 0, result.stderr
    report = data["optimization"]
    assert report["improved"] is False and report["outcome"] == "no improvement found"
    assert report["winner"]["ref"] == report["base"]["ref"] == "clf@1"
    assert report["spent"]["calls"] + report["spent"]["test_calls"] <= 250
    assert chat_calls(ws) == report["spent"]["provider_calls"] <= 250
    assert len([c for c in report["candidates"] if c["ref"] != "clf@1"]) >= 2   # it did search
    again = ws.cli("optimize", "--project", "p", "--prompt", "clf@1", "--strategy", strategy, "--budget-calls",
                   "250", "--name", "flat-shown")
    assert "no improvement found" in again.stdout


def test_optuna_missing_is_one_line_naming_the_extra(workspace, monkeypatch):
    ws = workspace
    world(ws)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    for strategy in ("mipro", "params"):
        result, _ = optimize(ws, "--strategy", strategy, "--name", "x")
        assert result.code == 2
        assert result.stderr.strip().splitlines() == [
            f"promptlab: error: strategy '{strategy}' needs Optuna, which is not installed: pip install 'promptlab[optuna]'"]
    assert ws.rows("select count(*) from optimizations") == [(0,)]
