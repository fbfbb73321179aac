"""Numbers that cannot flatter: errors count, echoes are not answers, fields score one by one,
repeats are repeats, gates compare like with like, and costs add up."""

import json

from tests.seeing import evaluate, label, rules, setup_project, text


def run_of(result) -> dict:
    return json.loads(result.stdout)["runs"][0]


# ---- every planned item counts ------------------------------------------------------------

def test_a_provider_that_errors_on_a_fifth_of_the_items_cannot_pass_min_score(workspace):
    ws = workspace
    setup_project(ws, 40, second=False)
    ws.fake.configure(rules=rules(), error_rate=0.2, error_status=400, seed=3)
    result = ws.cli("eval", "--prompt", "p@1", "--name", "r", "--min-score", "0.9", "--json")
    assert result.code == 1, result.stderr
    data = json.loads(result.stdout)
    run = data["runs"][0]
    errors = run["errors"]
    assert errors >= 8 and run["n"] == 40 and run["status"] == "completed"
    # the headline counts an error as 0: mean and pass rate over every planned item
    assert run["scores"]["exact_match"] == (40 - errors) / 40 <= 0.8
    assert run["pass_rate"] == (40 - errors) / 40
    assert not data["passed"] and not data["gates"][0]["passed"]
    # the scored-only figures stay, labelled as such
    assert run["scored"] == {"n": 40 - errors, "pass_rate": 1.0, "scores": {"exact_match": 1.0}}
    # the errors are named, with a message
    assert run["error_kinds"] == {"bad_request": errors}
    assert run["top_errors"][0]["kind"] == "bad_request" and run["top_errors"][0]["count"] == errors
    assert "injected item error 400" in run["top_errors"][0]["message"]

    table = ws.cli("runs", "show", "r")
    assert table.code == 0, table.stderr
    assert f"{errors} of 40 items errored, each scored 0 in the headline (bad_request ×{errors}:" in table.stdout
    assert f"scored only: exact_match 1.000 over {40 - errors} scored of 40; {errors} errors" in table.stdout
    # reports and the viewer say it too
    assert ws.cli("report", "r", "--format", "md", "--output", "r.md").code == 0
    assert ws.cli("report", "r", "--format", "html", "--output", "r.html").code == 0
    for shown in ((ws.root / "r.md").read_text(), (ws.root / "r.html").read_text(), viewer_page(ws, "/runs/1")):
        assert f"{errors} of 40 items errored, each scored 0 in the headline" in shown
        assert f"over {40 - errors} scored of 40; {errors} errors" in shown


def viewer_page(ws, path: str) -> str:
    from starlette.testclient import TestClient

    from promptlab.view.app import make_app

    with TestClient(make_app(ws.db_path), base_url="http://127.0.0.1") as client:
        page = client.get(path)
    assert page.status_code == 200, page.text[:300]
    return page.text


# ---- strict parsing -----------------------------------------------------------------------

def test_echoes_and_non_answers_are_parse_failures_and_a_lenient_field_is_counted(workspace):
    ws = workspace
    setup_project(ws, 6, second=False)
    replies = {0: "Answer (positive or negative): negative", 1: "positive or negative",
               2: "The review is not negative", 3: "Positive.", 4: "negative!", 5: "I cannot tell"}
    ws.fake.configure(rules=[[text(i), reply] for i, reply in replies.items()])
    run = evaluate(ws, "p@1", "strict", code=0)["runs"][0]
    assert run["scores"]["exact_match"] == 2 / 6  # "Positive." and "negative!" are the choices
    parse_errors = [e for (e,) in ws.rows("select parse_error from results where parse_error is not null")]
    assert sum("names more than one choice (positive, negative)" in e for e in parse_errors) == 2
    assert sum("is not one of positive, negative" in e for e in parse_errors) == 2
    assert run["lenient"] == {"replies": 0, "fields": {}}

    ok = ws.cli("signature", "add", "sentiment", "-i", "text", "-o", "label:enum:positive,negative:lenient")
    assert ok.code == 0, ok.stderr
    ws.cli("prompt", "add", "p", "--signature", "sentiment", "--template", "Review: {{ text }}")
    lenient = evaluate(ws, "p@2", "lenient")["runs"][0]
    assert lenient["lenient"] == {"replies": 3, "fields": {"label": 3}}
    assert "3 replies accepted only leniently (label ×3)" in ws.cli("runs", "show", "lenient").stdout


# ---- per-field scoring --------------------------------------------------------------------

TRANSFER = """\
project: pay
signature:
  name: transfer
  inputs: [text]
  outputs:
    - {name: amount, type: float}
    - {name: currency, type: enum, choices: [EUR, USD, GBP]}
    - {name: recipient, type: string}
    - {name: day, type: enum, choices: [monday, tuesday, wednesday]}
prompts:
  - name: extract
    template: "Extract: {{ text }}"
models: [fake]
cases: {file: transfers.jsonl}
metrics: [json_field_match, field_f1]
"""


def test_one_wrong_field_in_every_reply_leaves_the_other_three_right(workspace):
    ws = workspace
    rows, rules = [], []
    for i in range(8):
        expected = {"amount": 10.0 + i, "currency": "EUR", "recipient": f"person {i}", "day": "monday"}
        rows.append({"text": f"transfer {i}", **expected})
        # every reply gives a day that is not a choice: that field fails, the others parse
        rules.append([f"transfer {i}", json.dumps({**expected, "day": "someday"})])
    ws.write("transfers.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ws.write("exp.yaml", TRANSFER)
    ws.fake.configure(rules=rules)
    result = ws.cli("run", "exp.yaml", "--json")
    assert result.code == 0, result.stderr
    run = run_of(result)
    assert run["scores"]["json_field_match"] == 0.75
    assert {name: f["accuracy"] for name, f in run["fields"].items()} == {
        "amount": 1.0, "currency": 1.0, "recipient": 1.0, "day": 0.0}
    assert run["fields"]["day"]["unparsed"] == 8
    shown = ws.cli("runs", "show", run["name"])
    assert "per-field accuracy: amount 1.000, currency 1.000, day 0.000 (8 unparsed), recipient 1.000" in shown.stdout


# ---- repeats ------------------------------------------------------------------------------

def test_repeats_of_a_deterministic_provider_do_not_narrow_the_interval(workspace):
    ws = workspace
    setup_project(ws, 20, second=False)
    ws.fake.configure(rules=rules(broken=range(0, 20, 3), prefix="Review: "))
    once = evaluate(ws, "p@1", "once")["runs"][0]
    thrice = evaluate(ws, "p@1", "thrice", "--repeat", "3")["runs"][0]
    width = lambda run: run["intervals"]["exact_match"][1] - run["intervals"]["exact_match"][0]  # noqa: E731
    assert width(once) > 0 and abs(width(thrice) - width(once)) <= 0.1 * width(once)
    repeats = thrice["repeats"]
    assert repeats["k"] == 3 and repeats["pass_hat_k"] == repeats["pass_at_1"] == once["pass_rate"]
    assert repeats["flaky"] == [] and repeats["agreement"] == 1.0


def test_a_provider_flipping_answers_shows_flaky_cases_and_fails_min_pass_k(workspace):
    ws = workspace
    ids = setup_project(ws, 20, second=False)
    ws.fake.configure(rules=rules(), flip_rate=0.3, flip_choices=["positive", "negative"], seed=5)
    result = ws.cli("eval", "--prompt", "p@1", "--name", "flips", "--repeat", "3", "--min-pass-k", "0.9",
                    "--json")
    assert result.code == 1, result.stderr
    repeats = run_of(result)["repeats"]
    assert repeats["pass_hat_k"] < repeats["pass_at_k"] and repeats["flaky"]
    assert set(repeats["flaky"]) <= set(ids.values()) and repeats["agreement"] < 1.0
    gate = json.loads(result.stdout)["gates"][0]
    assert gate["name"].startswith("min_pass_k") and f"pass^3 {repeats['pass_hat_k']:.3f} < 0.9" in gate["message"]
    shown = ws.cli("runs", "show", "flips").stdout
    assert f"{len(repeats['flaky'])} flaky cases: " in shown and "pass^3" in shown


# ---- like with like -----------------------------------------------------------------------

def split_project(ws) -> None:
    """p@1 with its production label, 8 val and 8 test cases."""
    rows = [{"text": text(i), "label": label(i), "split": "val" if i < 8 else "test"} for i in range(16)]
    ws.write("cases.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    for args in (("project", "add", "demo"),
                 ("signature", "add", "sentiment", "-i", "text", "-o", "label:enum:positive,negative"),
                 ("case", "import", "cases.jsonl"),
                 ("prompt", "add", "p", "--signature", "sentiment", "--template", "Review: {{ text }}"),
                 ("prompt", "label", "p@1", "production")):
        assert ws.cli(*args).code == 0, args
    ws.fake.configure(rules=rules(broken=[0, 1], prefix="Review: "))


def test_a_baseline_on_another_split_cannot_judge_the_run(workspace):
    ws = workspace
    split_project(ws)
    assert ws.cli("eval", "--prompt", "p@1", "--split", "val", "--name", "on-val").code == 0
    # the same prompt and model on test: the val run is no baseline for it
    by_label = ws.cli("eval", "--prompt", "p@1", "--split", "test", "--name", "on-test", "--max-regression", "0.01")
    assert by_label.code == 2
    assert ("cannot judge: no completed run of p@1 (p@production) is on this run's model and cases: its latest, "
            "'on-val', ran on split val (8 cases), this run on split test (8 cases)") in by_label.stderr
    by_name = ws.cli("eval", "--prompt", "p@1", "--split", "test", "--name", "again", "--max-regression", "0.01",
                     "--baseline", "on-val", "--json")
    assert by_name.code == 2 and not json.loads(by_name.stdout)["passed"]
    assert ("baseline run 'on-val' ran on split val (8 cases), this run on split test (8 cases)"
            in by_name.stderr)
    # a test run of production is found once there is one, and judges
    judged = ws.cli("eval", "--prompt", "p@1", "--split", "test", "--name", "third", "--max-regression", "0.01",
                    "--json")
    assert judged.code == 0, judged.stderr
    assert "in baseline again" in json.loads(judged.stdout)["gates"][0]["message"]  # the latest on test


def test_a_baseline_on_another_model_cannot_judge_the_run(workspace):
    ws = workspace
    split_project(ws)
    with open(ws.root / "promptlab.toml", "a") as toml:
        toml.write(f'\n[models.other]\nmodel = "openai/other"\napi_base = "{ws.fake.base_url}"\n')
    assert ws.cli("eval", "--prompt", "p@1", "--name", "on-fake").code == 0
    other = ws.cli("eval", "--prompt", "p@1", "--model", "other", "--max-regression", "0.01", "--baseline", "on-fake")
    assert other.code == 2 and "baseline run 'on-fake' ran on model fake, this run on other" in other.stderr


# ---- the lift is over the strongest baseline -----------------------------------------------

def test_the_headline_lift_and_min_lift_are_over_naive_k_shot_when_it_is_strongest():
    from types import SimpleNamespace

    from promptlab.scorers.baselines import ConstantBaseline
    from promptlab.models import Case
    from promptlab.optimizers.optimize import _lift, check_gates

    cases = [Case(id=i, inputs={"text": str(i)}, expected={"label": "a" if i < 12 else "b"}) for i in range(20)]
    base = {i: float(i % 2) for i in range(20)}                 # 0.50
    naive = {i: float(i % 10 != 0) for i in range(20)}          # 0.90
    winner = SimpleNamespace(scores={i: float(i % 5 != 0) for i in range(20)})  # 0.80: above base, below naive
    search = SimpleNamespace(base=SimpleNamespace(scores=base), naive=SimpleNamespace(scores=naive))
    lift = _lift(search, winner, {"val": 0.5, "test": 0.5}, {"test": 0.9}, {"val": 0.8, "test": 0.8},
                 ConstantBaseline("label", "a", 0.6, 20), SimpleNamespace(test=cases))
    assert lift["over"] == "naive" and lift["over_score"] == 0.9 and lift["test"] == -0.1
    assert lift["test_over_base"] == 0.3 and lift["best_baseline"]["name"] == "naive"
    report = {"improved": True, "base": {"ref": "p@1"}, "winner": {"ref": "p@3", "test": 0.8}, "lift": lift}
    (gate,) = check_gates(report, min_lift=0.0)
    assert not gate.passed and "test lift -0.100 over naive k-shot < 0.0" in gate.message


# ---- costs that add up --------------------------------------------------------------------

def test_an_unpriced_model_is_n_a_fresh_and_from_the_cache(workspace):
    ws = workspace
    setup_project(ws, 4, second=False)
    ws.fake.configure(rules=rules())
    fresh, cached = (evaluate(ws, "p@1", name)["runs"][0] for name in ("fresh", "cached"))
    assert cached["cached"] == 4 and cached["provider_calls"] == 0
    assert fresh["cost"] is None and cached["cost"] is None
    assert fresh["by_role"]["task"]["cost"] is None and cached["by_role"]["task"]["cost"] is None
    listing = ws.cli("runs", "show", "cached").stdout
    assert "n/a" in listing and "$0.0000" not in listing


def test_provider_calls_are_the_requests_sent_retries_included(workspace):
    ws = workspace
    setup_project(ws, 5, second=False)
    ws.fake.configure(rules=rules(), fail_first_n=2, fail_first_n_status=500)
    run = evaluate(ws, "p@1", "retried")["runs"][0]
    assert run["errors"] == 0 and run["mode"] == "call"
    assert run["provider_calls"] == 15 == ws.fake.requests_total("/v1/chat/completions")
    assert run["by_role"]["task"]["requests"] == 15 and run["by_role"]["task"]["replies"] == 5


def test_cost_and_tokens_are_split_by_role(workspace):
    ws = workspace
    setup_project(ws, 4, second=False)
    with open(ws.root / "promptlab.toml", "a") as toml:
        toml.write(f'\n[models.embed]\nmodel = "openai/fake-embed"\napi_base = "{ws.fake.base_url}"\n')
    ws.fake.configure(rules=rules())
    result = ws.cli("eval", "--prompt", "p@1", "--name", "roles", "--metric", "exact_match", "--metric",
                    'embedding_similarity:{"model": "embed", "threshold": 0.5}', "--json")
    assert result.code == 0, result.stderr
    roles = run_of(result)["by_role"]
    assert set(roles) == {"task", "embedding"}
    assert roles["task"]["requests"] == 4 and roles["embedding"]["requests"] >= 1
    assert roles["embedding"]["prompt_tokens"] > 0 and roles["embedding"]["cost"] is None
    assert run_of(result)["provider_calls"] == roles["task"]["requests"] + roles["embedding"]["requests"] \
        == ws.fake.requests_total()
    assert "by role: task 4 requests" in ws.cli("runs", "show", "roles").stdout


def test_a_run_summarised_before_these_numbers_still_displays(workspace):
    ws = workspace
    setup_project(ws, 4, second=False)
    ws.fake.configure(rules=rules())
    evaluate(ws, "p@1", "old")
    old = {"n": 4, "expected": 4, "errors": 0, "error_kinds": {}, "pass_rate": 1.0, "cost": None,
           "metrics": {"exact_match": {"n": 4, "errors": 0, "mean": 1.0, "ci_low": 1.0, "ci_high": 1.0,
                                       "pass_rate": 1.0}},
           "tokens": {"prompt": 20, "completion": 4, "per_call": 6.0}, "cached": 0, "provider_calls": 4,
           "latency_ms": {"p50": 1.0, "p95": 2.0}}
    import sqlite3
    with sqlite3.connect(ws.db_path) as conn:
        conn.execute("update runs set summary = ?, mode = null, role_usage = null", [json.dumps(old)])
        conn.execute("update results set lenient = null")
    shown = ws.cli("runs", "show", "old")
    assert shown.code == 0 and "1.000" in shown.stdout, shown.stderr
    assert ws.cli("runs", "list").code == 0
    assert ws.cli("report", "old", "--format", "html", "--output", "old.html").code == 0
    assert "old" in viewer_page(ws, "/runs/1")
    data = json.loads(ws.cli("runs", "show", "old", "--json").stdout)
    assert data["scored"] is None and data["repeats"] is None and data["scores"] == {"exact_match": 1.0}
