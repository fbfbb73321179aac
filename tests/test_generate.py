"""`promptlab case generate`: validated, retried, deduplicated, stored non-golden."""

import json

from promptlab.cases.generate import Deduper, input_text
from promptlab.models import Case, Signature

SIG = Signature(name="sentiment", inputs=["text"],
                outputs=[{"name": "label", "type": "enum", "choices": ["positive", "negative"]}])
SEEDS = [{"text": "a great phone", "label": "positive"}, {"text": "awful battery", "label": "negative"}]


def reply(*cases):
    return json.dumps({"cases": [{"inputs": {"text": t}, "expected": {"label": label}} for t, label in cases]})


GENERATED = reply(("a great phone", "positive"),               # exact duplicate of a seed
                  ("A great  phone!", "positive"),             # near duplicate (same words, punctuation)
                  ("the hinge broke after a week", "neutral"),  # not a choice: invalid
                  ("the screen cracked in a day", "negative"),
                  ("the battery lasts forever", "positive"),
                  ("a superb camera", "positive"))


def setup(ws):
    ws.sentiment_project(SEEDS, instruction="Classify the sentiment of the review.")


def cases(ws):
    return [(json.loads(i)["text"], g, s) for i, g, s in ws.rows("select inputs, golden, source from cases order by id")]


def test_deduper_exact_and_near_with_a_configurable_threshold():
    existing = [Case(inputs={"text": "a great phone"}, expected={"label": "positive"})]
    strict = Deduper(existing, SIG, near_threshold=90)
    assert strict.check(Case(inputs={"text": "a great phone"}, expected={"label": "positive"})) == "exact"
    assert strict.check(Case(inputs={"text": "A great phone!"}, expected={"label": "positive"})) == "near"
    assert strict.check(Case(inputs={"text": "an awful phone"}, expected={"label": "negative"})) is None
    assert strict.check(Case(inputs={"text": "an awful phone."}, expected={"label": "negative"})) == "near"
    loose = Deduper(existing, SIG, near_threshold=100)  # only identical input text is "near"
    assert loose.check(Case(inputs={"text": "A great phone!"}, expected={"label": "positive"})) is None
    assert loose.check(Case(inputs={"text": "a  GREAT phone"}, expected={"label": "negative"})) == "near"
    assert input_text({"text": "  Hello\n World "}, SIG) == "hello world"


def test_generate_dedups_and_stores_non_golden(workspace):
    setup(workspace)
    workspace.fake.configure(rules=[["We are writing test cases", GENERATED]], record_bodies=True)
    result = workspace.cli("case", "generate", "--project", "demo", "--signature", "sentiment", "--n", "2",
                           "--seed-cases", "2", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["added"], data["exact_duplicates"], data["near_duplicates"], data["invalid"]) == (2, 1, 1, 1)
    assert workspace.fake.stats()["total"] == 1
    assert cases(workspace) == [("a great phone", 1, "cases.jsonl"), ("awful battery", 1, "cases.jsonl"),
                                ("the screen cracked in a day", 0, "generated"),
                                ("the battery lasts forever", 0, "generated")]
    asked = workspace.fake.stats()["bodies"][0]["messages"][-1]["content"]
    assert "Classify the sentiment of the review." in asked and "label (one of positive, negative)" in asked
    assert '{"inputs": {"text": "awful battery"}, "expected": {"label": "negative"}}' in asked  # a seed

    # evaluations take golden cases only, unless asked
    run = json.loads(workspace.cli("eval", "--prompt", "p", "--json").stdout)["runs"][0]
    assert run["n"] == 2
    run = json.loads(workspace.cli("eval", "--prompt", "p", "--include-generated", "--json").stdout)["runs"][0]
    assert run["n"] == 4
    generated_ids = [i for (i,) in workspace.rows("select id from cases where golden = 0")]
    assert workspace.cli("case", "golden", *map(str, generated_ids[:1])).code == 0
    run = json.loads(workspace.cli("eval", "--prompt", "p", "--json").stdout)["runs"][0]
    assert run["n"] == 3

    # again: a new question (the new inputs are listed to avoid); the same reply adds only the unseen one
    again = workspace.cli("case", "generate", "--n", "3", "--json")
    assert again.code == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["added"] == 1 and data["exact_duplicates"] >= 3
    assert cases(workspace)[-1] == ("a superb camera", 0, "generated")
    last = workspace.fake.stats()["bodies"][-1]["messages"][-1]["content"]
    assert "- the screen cracked in a day" in last
    assert "only 1 of 3 new cases" in again.stderr


def test_an_invalid_reply_is_retried_and_a_hopeless_model_exits_3(workspace):
    setup(workspace)
    workspace.fake.configure(rules=[["We are writing test cases", "Here are some cases: 1. great phone"],
                                    ["That reply was not usable", reply(("great stuff", "positive"))]])
    result = workspace.cli("case", "generate", "--n", "1")
    assert result.code == 0, result.stderr
    assert "generated 1 cases" in result.stdout and "case golden" in result.stdout
    assert workspace.fake.stats()["total"] == 2
    assert cases(workspace)[-1] == ("great stuff", 0, "generated")

    before = workspace.counts()["cases"]
    workspace.fake.configure(rules=[], default_reply='{"cases": "none"}')
    result = workspace.cli("case", "generate", "--n", "2")
    assert result.code == 3
    assert len(result.stderr.strip().splitlines()) == 1
    assert "gave no usable cases" in result.stderr and "field 'cases'" in result.stderr
    assert workspace.counts()["cases"] == before
