"""`promptlab runs compare`: paired deltas and p-values, McNemar, regressed and fixed cases, prompt diff."""

import json

from tests.seeing import evaluate, rules, setup_project, text

BROKEN = (3, 4, 8, 11, 15, 16, 22, 23, 27, 29)


def compare(ws, *args):
    result = ws.cli("runs", "compare", *args, "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_a_prompt_that_breaks_a_subset_lists_exactly_those_cases(workspace):
    ids = setup_project(workspace)
    workspace.fake.configure(rules=rules(broken=BROKEN))
    evaluate(workspace, "p@1", "A")
    evaluate(workspace, "p@2", "B")
    # both runs are stored and complete: 30 results each, B fails exactly the broken cases
    assert workspace.rows("select name, status, n_results from runs order by id") == [
        ("A", "completed", 30), ("B", "completed", 30)]
    failed_b = {r[0] for r in workspace.rows(
        "select case_id from results join runs on runs.id = run_id where runs.name = 'B' and passed = 0")}
    assert failed_b == {ids[i] for i in BROKEN}

    data = compare(workspace, "A", "B")
    assert data["pairs"] == 30 and data["only_a"] == data["only_b"] == 0
    assert sorted(c["case_id"] for c in data["regressed"]) == sorted(ids[i] for i in BROKEN)
    assert data["fixed"] == []
    first = next(c for c in data["regressed"] if c["case_id"] == ids[3])
    assert first["inputs"] == {"text": text(3)} and first["expected"] == {"label": "positive"}
    assert (first["a"]["output"], first["b"]["output"]) == ("positive", "negative")
    assert (first["a"]["passed"], first["b"]["passed"]) == (True, False)

    for metric in ("classification", "exact_match"):
        m = data["metrics"][metric]
        assert (m["a_mean"], m["b_mean"]) == (1.0, 20 / 30)
        assert abs(m["delta"] + 10 / 30) < 1e-9 and m["ci_low"] <= m["delta"] <= m["ci_high"] < 0
        assert m["p_value"] < 0.05
    mc = data["pass"]["mcnemar"]
    assert (mc["b10"], mc["b01"]) == (10, 0) and mc["p_value"] < 0.05
    assert "-Review: {{ text }}" in data["prompt_diff"] and "+Rate: {{ text }}" in data["prompt_diff"]

    # reversed, by prompt reference (each version's latest completed run): the same cases are fixed
    back = compare(workspace, "p@2", "p@1")
    assert (back["a"]["name"], back["b"]["name"]) == ("B", "A")
    assert sorted(c["case_id"] for c in back["fixed"]) == sorted(ids[i] for i in BROKEN)
    assert back["regressed"] == [] and back["metrics"]["exact_match"]["delta"] > 0

    # the table for people names the regressed cases and the p-values
    shown = workspace.cli("runs", "compare", "A", "B")
    assert shown.code == 0, shown.stderr
    assert "regressed (10)" in shown.stdout and text(3) in shown.stdout and "McNemar" in shown.stdout


def test_two_runs_of_the_same_prompt_are_not_significantly_different(workspace):
    setup_project(workspace, second=False)
    workspace.fake.configure(rules=rules())
    evaluate(workspace, "p@1", "first")
    calls = workspace.fake.requests_total()
    evaluate(workspace, "p@1", "again", "--no-cache")
    assert workspace.fake.requests_total() == calls + 30  # a real second run, not the cache
    data = compare(workspace, "first", "again")
    assert data["regressed"] == [] and data["fixed"] == [] and data["same_prompt"] is True
    assert all(m["delta"] == 0 and m["p_value"] > 0.05 for m in data["metrics"].values())
    assert data["pass"]["mcnemar"]["p_value"] > 0.05
    assert data["prompt_diff"] == ""


def test_a_small_difference_is_not_significant(workspace):
    setup_project(workspace)
    workspace.fake.configure(rules=rules(broken=(5,)))
    evaluate(workspace, "p@1", "A")
    evaluate(workspace, "p@2", "B")
    data = compare(workspace, "A", "B")
    assert len(data["regressed"]) == 1
    assert data["metrics"]["exact_match"]["p_value"] > 0.05
    assert data["pass"]["mcnemar"]["p_value"] > 0.05


def test_an_error_in_b_is_a_regression_and_unshared_cases_are_left_out(workspace):
    ids = setup_project(workspace, n=12)
    workspace.fake.configure(rules=rules(), always_status_if_contains={f"Rate: {text(7)}": 400})
    evaluate(workspace, "p@1", "A", "--limit", "10")
    evaluate(workspace, "p@2", "B")
    assert workspace.rows("select error_kind from results join runs on runs.id = run_id "
                          "where runs.name = 'B' and case_id = ?", (ids[7],)) == [("bad_request",)]
    data = compare(workspace, "A", "B")
    assert (data["pairs"], data["only_a"], data["only_b"]) == (10, 0, 2)
    assert any("only in B" in note for note in data["notes"])
    [regressed] = data["regressed"]
    assert regressed["case_id"] == ids[7] and regressed["b"]["error_kind"] == "bad_request"
    assert data["metrics"]["exact_match"]["b_mean"] == 0.9  # the error counts as 0


def test_repeats_pair_by_case_and_repeat(workspace):
    ids = setup_project(workspace, n=6)
    workspace.fake.configure(rules=rules(broken=(2,)))
    evaluate(workspace, "p@1", "A", "--repeat", "2")
    evaluate(workspace, "p@2", "B", "--repeat", "2")
    data = compare(workspace, "A", "B")
    assert data["pairs"] == 12
    [regressed] = data["regressed"]
    assert (regressed["case_id"], regressed["repeats"], regressed["a_pass_share"], regressed["b_pass_share"]) == (
        ids[2], 2, 1.0, 0.0)


def test_unknown_names_are_usage_errors(workspace):
    setup_project(workspace, n=4)
    workspace.fake.configure(rules=rules())
    evaluate(workspace, "p@1", "A")
    missing = workspace.cli("runs", "compare", "A", "nope")
    assert missing.code == 2 and "no run or prompt version 'nope'" in missing.stderr
    unrun = workspace.cli("runs", "compare", "A", "p@2")
    assert unrun.code == 2 and "p@2 has no completed run" in unrun.stderr
    assert workspace.rows("select count(*) from runs") == [(1,)]  # comparing writes nothing


def test_large_runs_compare_without_hitting_sqlite_variable_limits(tmp_path):
    """1,200 paired results written straight to a store (no model): more ids than one SQL statement takes."""
    from promptlab.services.compare import compare_runs
    from promptlab.models import Case, PromptContent
    from promptlab.reports import render
    from promptlab.reports.facts import run_facts
    from promptlab.store import dumps, open_store

    store = open_store(tmp_path / "big.db")
    project = store.ensure_project("big")
    store.add_cases(project, [Case(inputs={"text": f"t{i}"}, expected={"label": "x"}) for i in range(1200)])
    cases = store.cases(project)
    runs = {}
    for name, broken in (("A", set()), ("B", {c.id for c in cases[::7]})):
        prompt = store.add_prompt(project, "p", PromptContent(template=f"{name} {{{{ text }}}}"))
        runs[name] = store.create_run(project, name, prompt, model="m", metrics=[{"name": "exact_match"}])
        store.save_results([{"run_id": runs[name], "case_id": c.id, "repeat": 0, "output": "x",
                             "scores": dumps({"exact_match": {"value": float(c.id not in broken),
                                                              "passed": c.id not in broken}}),
                             "score": float(c.id not in broken), "passed": int(c.id not in broken),
                             "latency_ms": 1.0, "cached": 0, "attempts": 1} for c in cases])
        store.update_run(runs[name], status="completed")
    data = compare_runs(store, project, store.run_by_id(runs["A"]), store.run_by_id(runs["B"]), n_resamples=2000)
    assert len(data["regressed"]) == 172 and data["fixed"] == []
    assert data["regressed"][0]["inputs"] == {"text": "t0"}
    assert data["metrics"]["exact_match"]["p_value"] < 0.05 and data["pass"]["mcnemar"]["method"] == "chi2"
    facts = run_facts(store, project, store.run_by_id(runs["B"]))
    assert len(facts["failed"]) == 172 and all(r["inputs"] for r in facts["results"])
    assert render(facts, "html").count("<article class=\"case") == 172  # a run with no summary renders too
