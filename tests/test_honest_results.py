"""Honest results: versions are immutable in what they send, comparisons compare like with like,
scores come with the constant-answer baseline, and case generation gives up early on a weak model."""

import json

from tests.seeing import evaluate, rules, setup_project

OLD = "Classify the sentiment of the review."
NEW = "Say negative, whatever the review."
SIGNATURE = ("-i", "text", "-o", "label:enum:positive,negative")


def ok(ws, *args):
    result = ws.cli(*args)
    assert result.code == 0, (args, result.stderr)
    return result


def run_eval(ws, prompt, name, *extra):
    return json.loads(ok(ws, "eval", "--prompt", prompt, "--name", name, "--json", *extra).stdout)["runs"][0]


def sent(ws) -> set[str]:
    """The system messages of every request the fake server recorded."""
    return {json.dumps(body["messages"][:-1]) for body in ws.fake.stats()["bodies"]}


# ---- (1) signature versions ---------------------------------------------------

def test_changing_a_signature_leaves_existing_prompt_versions_as_they_were(workspace):
    ws = workspace
    ws.write("cases.jsonl", "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in (
        ("great phone", "positive"), ("awful screen", "negative"), ("great camera", "positive"),
        ("awful battery", "negative"), ("great price", "positive"), ("awful hinge", "negative"))))
    ok(ws, "project", "add", "demo")
    assert ok(ws, "signature", "add", "sentiment", *SIGNATURE, "--instruction", OLD).stdout.startswith(
        "signature sentiment@1")
    ok(ws, "case", "import", "cases.jsonl")
    ok(ws, "prompt", "add", "p", "--signature", "sentiment", "--template", "Review: {{ text }}")
    # under the new instruction the fake model answers "negative" to everything
    ws.fake.configure(record_bodies=True, rules=[[NEW, "great", "negative"], ["great", "positive"],
                                                 ["awful", "negative"]])
    first = run_eval(ws, "p@1", "before")
    assert first["scores"]["exact_match"] == 1.0 and first["provider_calls"] == 6
    before = sent(ws)
    assert all(OLD in messages for messages in before)

    changed = ok(ws, "signature", "add", "sentiment", *SIGNATURE, "--instruction", NEW)
    assert "signature 'sentiment' is now version 2 (instruction changed)" in changed.stdout
    assert ws.rows("select name, version, instruction from signatures order by id") == [
        ("sentiment", 1, OLD), ("sentiment", 2, NEW)]
    again = ok(ws, "signature", "add", "sentiment", *SIGNATURE, "--instruction", NEW)
    assert "sentiment@2 unchanged" in again.stdout and ws.rows("select count(*) from signatures") == [(2,)]

    # p@1 still sends what it sent: every reply comes from the cache, with the same score...
    calls = ws.fake.requests_total()
    cached = run_eval(ws, "p@1", "cached")
    assert ws.fake.requests_total() == calls and cached["provider_calls"] == 0 and cached["cached"] == 6
    assert cached["scores"] == first["scores"]
    # ...and when it does call the provider, the very same messages
    ws.fake.reset()
    ws.fake.configure(record_bodies=True, rules=[[NEW, "great", "negative"], ["great", "positive"],
                                                 ["awful", "negative"]])
    live = run_eval(ws, "p@1", "live", "--no-cache")
    assert sent(ws) == before and live["scores"] == first["scores"]

    # a prompt version added now binds to the new signature version and sends the new instruction
    assert ok(ws, "prompt", "add", "p", "--signature", "sentiment", "--template",
              "Review: {{ text }}").stdout.startswith("p@2")
    ws.fake.reset()
    ws.fake.configure(record_bodies=True, rules=[[NEW, "great", "negative"], ["great", "positive"],
                                                 ["awful", "negative"]])
    newer = run_eval(ws, "p@2", "newer")
    assert all(NEW in messages and OLD not in messages for messages in sent(ws))
    assert newer["scores"]["exact_match"] == 0.5
    prompts = json.loads(ok(ws, "prompt", "list", "--json").stdout)
    assert [(p["version"], p["signature"]) for p in prompts] == [(1, "sentiment"), (2, "sentiment")]
    assert ws.rows("select p.version, s.version from prompts p join signatures s on s.id = p.signature_id "
                   "order by p.version") == [(1, 1), (2, 2)]

    # reverting to p@1 restores its signature version too
    assert ok(ws, "prompt", "revert", "p@1").stdout.startswith("p@3")
    assert ws.rows("select s.version from prompts p join signatures s on s.id = p.signature_id "
                   "where p.version = 3") == [(1,)]

    listed = json.loads(ok(ws, "signature", "list", "--json").stdout)
    assert [(s["name"], s["version"], s["instruction"]) for s in listed] == [
        ("sentiment", 1, OLD), ("sentiment", 2, NEW)]
    assert f"instruction: {OLD}" in ok(ws, "signature", "show", "sentiment@1").stdout
    assert "version: 2" in ok(ws, "signature", "show", "sentiment").stdout
    missing = ws.cli("signature", "show", "sentiment@7")
    assert missing.code == 2 and "has no version 7 (versions 1 to 2)" in missing.stderr


def test_an_existing_database_migrates_to_signature_versions(tmp_path):
    import sqlite_utils

    from promptlab.store.migrations import migrations
    from promptlab.models import PromptContent, Signature
    from promptlab.store import open_store

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m004_signature_versions")
    project = db["projects"].insert({"name": "demo", "created_at": "x"}).last_pk
    sig = db["signatures"].insert({"project_id": project, "name": "s", "instruction": OLD,
                                   "inputs": '[{"name": "text"}]', "outputs": '[{"name": "label"}]'}).last_pk
    db["prompts"].insert({"project_id": project, "name": "p", "version": 1, "signature_id": sig,
                          "template": "{{ text }}", "content_hash": "h"})
    db.conn.close()

    store = open_store(path)
    old = store.prompt(project, "p@1")
    assert (old.signature, old.signature_version) == ("s", 1)
    new_id = store.upsert_signature(project, Signature(name="s", instruction=NEW, inputs=["text"],
                                                       outputs=["label"]))
    assert [(v.version, v.signature.instruction) for v in store.signature_versions(project)] == [(1, OLD), (2, NEW)]
    assert store.prompt_signature(store.prompt(project, "p@1")).instruction == OLD
    assert store.signature(project, "s").instruction == NEW
    p2 = store.add_prompt(project, "p", PromptContent(template="{{ text }}"), signature_id=new_id)
    assert store.prompt_signature(p2).instruction == NEW
    unique = [i.columns for i in store.db["signatures"].indexes if i.unique]
    assert unique == [["project_id", "name", "version"]]


# ---- (2) comparisons ----------------------------------------------------------

def add_model(ws, alias):
    path = ws.root / "promptlab.toml"
    path.write_text(path.read_text() + f'\n[models.{alias}]\nmodel = "openai/{alias}"\n'
                                       f'api_base = "{ws.fake.base_url}"\n')


def compare(ws, *args):
    result = ok(ws, "runs", "compare", *args, "--json")
    return json.loads(result.stdout), result.stderr


def test_compare_picks_runs_on_the_same_model_and_cases_and_warns_when_it_cannot(workspace):
    ws = workspace
    setup_project(ws, n=8)
    ok(ws, "prompt", "add", "p", "--signature", "sentiment", "--template", "Judge: {{ text }}")
    add_model(ws, "other")
    ws.fake.configure(rules=rules())
    evaluate(ws, "p@1", "A")
    evaluate(ws, "p@2", "B-same")
    evaluate(ws, "p@2", "B-fewer", "--limit", "4")  # newer, same model, other cases
    evaluate(ws, "p@3", "C-other", "--model", "other")
    ws.fake.configure(always_status_if_contains={"Rate: ": 400})
    evaluate(ws, "p@2", "B-other", "--model", "other", code=3)  # newest: another model, every item an error

    data, stderr = compare(ws, "p@1", "p@2")
    assert (data["a"]["name"], data["b"]["name"]) == ("A", "B-same")
    assert data["warnings"] == [] and "warning" not in stderr
    # B named by reference follows A named by run, whichever side it is on
    data, _ = compare(ws, "p@2", "A")
    assert data["a"]["name"] == "B-same"

    # p@3 only ran on the other model: that run, with a warning
    data, stderr = compare(ws, "p@1", "p@3")
    assert data["b"]["name"] == "C-other"
    assert data["warnings"] == ["A ran on fake and B on other: the difference mixes the prompts with the models"]
    assert stderr.count("promptlab: warning:") == 1 and "A ran on fake and B on other" in stderr
    # a run named outright is taken as it is, and said to be all errors
    data, stderr = compare(ws, "A", "B-other")
    assert len(data["warnings"]) == 2 and "every result of B (B-other) is an error" in data["warnings"][1]
    assert stderr.count("promptlab: warning:") == 2

    data, stderr = compare(ws, "A", "B-fewer")
    assert data["warnings"] == ["A and B were evaluated on different cases (8 and 4, 4 shared): "
                                "only the shared ones are compared"]
    assert "different cases" in stderr

    shown = ws.cli("runs", "compare", "A", "B-other")
    assert shown.code == 0 and "warning: every result of B (B-other) is an error" in shown.stderr


def test_small_p_values_print_as_less_than(workspace):
    from promptlab.display import p_text

    assert (p_text(1.9e-6), p_text(0.0001), p_text(0.01234), p_text(1.0)) == (
        "< 0.0001", "0.0001", "0.0123", "1.0000")
    setup_project(workspace, n=20)
    workspace.fake.configure(rules=rules(broken=range(20)))
    evaluate(workspace, "p@1", "A")
    evaluate(workspace, "p@2", "B")
    data, _ = compare(workspace, "A", "B")
    assert data["pass"]["mcnemar"]["p_value"] < 0.0001
    shown = ok(workspace, "runs", "compare", "A", "B").stdout
    assert "< 0.0001" in shown and "0.0000" not in shown


# ---- (3) the constant-answer baseline -----------------------------------------

def spam_project(ws, labels):
    ws.write("sms.jsonl", "".join(json.dumps({"text": f"message {i}", "label": label}) + "\n"
                                  for i, label in enumerate(labels)))
    for args in (("project", "add", "sms"),
                 ("signature", "add", "spam", "-i", "text", "-o", "label:enum:spam,ham"),
                 ("case", "import", "sms.jsonl"),
                 ("prompt", "add", "p", "--signature", "spam", "--template", "SMS: {{ text }}")):
        ok(ws, *args)


def test_a_prompt_answering_one_label_scores_the_baseline_and_is_called_collapsed(workspace):
    ws = workspace
    spam_project(ws, ["spam"] * 6 + ["ham"] * 4)
    ws.fake.configure(rules=[], default_reply="spam")
    run = run_eval(ws, "p", "always-spam")
    assert run["scores"]["exact_match"] == 0.6
    assert run["constant_baseline"] == {"field": "label", "label": "spam", "score": 0.6, "n": 10}
    assert run["collapse"] == {"field": "label", "label": "spam", "share": 1.0, "n": 10}
    assert len(run["warnings"]) == 1 and "100% of outputs answer label='spam'" in run["warnings"][0]
    [(summary,)] = ws.rows("select summary from runs where name = 'always-spam'")
    assert json.loads(summary)["constant_baseline"]["score"] == 0.6

    shown = json.loads(ok(ws, "runs", "show", "always-spam", "--json").stdout)
    assert shown["constant_baseline"]["score"] == 0.6 and shown["warnings"] == run["warnings"]
    table = ok(ws, "eval", "--prompt", "p", "--name", "again")
    assert "constant baseline 0.600 (always answering label='spam' on these 10 cases)" in table.stdout
    assert "collapsed to a constant answer" in table.stderr
    md = ok(ws, "report", "always-spam", "-f", "md").stdout
    assert "constant baseline: 0.600" in md and "collapsed to a constant answer" in md
    html = ok(ws, "report", "always-spam", "-f", "html").stdout
    assert "constant baseline" in html and "collapsed to a constant answer" in html


def test_a_prompt_that_tells_labels_apart_has_the_baseline_and_no_warning(workspace):
    spam_project(workspace, ["spam"] * 6 + ["ham"] * 4)
    workspace.fake.configure(rules=[[f"message {i}", "spam" if i < 6 else "ham"] for i in range(10)])
    run = run_eval(workspace, "p", "fair")
    assert run["scores"]["exact_match"] == 1.0 and run["constant_baseline"]["score"] == 0.6
    assert run["collapse"] is None and run["warnings"] == []


# ---- (4) case generation gives up early ----------------------------------------

def test_case_generate_stops_after_three_unusable_replies(workspace):
    ws = workspace
    spam_project(ws, ["spam", "ham"])
    before = ws.counts()["cases"]
    ws.fake.configure(rules=[], default_reply="Sure! Here are some great test cases for you.")
    result = ws.cli("case", "generate", "--n", "20")
    assert result.code == 3
    assert ws.fake.requests_total() == 3
    [line] = result.stderr.strip().splitlines()
    assert "no valid reply in 3 attempts (last: the reply holds no JSON object)" in line
    assert "capable instruction-following model" in line
    assert ws.counts()["cases"] == before


def test_case_generate_keeps_what_it_gathered_before_it_stopped(workspace):
    ws = workspace
    spam_project(ws, ["spam", "ham"])
    good = json.dumps({"cases": [{"inputs": {"text": "win a free prize"}, "expected": {"label": "spam"}},
                                 {"inputs": {"text": "lunch at noon?"}, "expected": {"label": "ham"}}]})
    # the first question gets two cases; the next (which lists them as taken) only garbage
    ws.fake.configure(rules=[["- win a free prize", "no"], ["We are writing", good]], default_reply="no")
    result = ws.cli("case", "generate", "--n", "10", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["added"] == 2 and data["requests"] == 2 and ws.fake.requests_total() == 4
    assert data["stopped"] == "no valid reply in 3 attempts (last: the reply holds no JSON object)"
    assert "only 2 of 10 new cases after 2 requests (stopped: no valid reply in 3 attempts" in result.stderr


def test_case_generate_warns_up_front_about_the_embedded_model(workspace):
    ws = workspace
    spam_project(ws, ["spam", "ham"])
    path = ws.root / "promptlab.toml"
    path.write_text(path.read_text() + '\n[models.tiny]\nmodel = "local/missing-model.gguf"\n')
    result = ws.cli("case", "generate", "--n", "2", "--model", "tiny")
    assert result.stderr.startswith("promptlab: warning: case generate needs a capable instruction-following "
                                    "model; the embedded 270M model")
    assert result.code == 3 and ws.fake.requests_total() == 0
