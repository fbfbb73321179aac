"""`promptlab suggest RUN`: a run's failures → top confusions, categories, edits; --apply evaluates one."""

import json

PROPOSER = json.dumps({
    "analysis": "billing questions are answered as refunds",
    "patterns": ["the word bill is read as a refund request"],
    "edits": [{"title": "Define billing", "rationale": "the instruction never says what billing is",
               "instruction": "Label the banking message. Billing means a charge on the bill; refund means "
                              "money sent back."}]})
RULES = [["", "Reply (JSON):", PROPOSER],
         ["Billing means a charge", "bill", "billing"],  # the suggested instruction fixes the confusion
         ["bill", "refund"], ["refund", "refund"], ["card", "card"]]


def banking(ws, rules=RULES):
    rows = [{"text": f"{word} {split} question {i}", "label": label, "split": split}
            for split, n in (("test", 10), ("train", 3)) for i in range(n)
            for word, label in (("bill", "billing"), ("refund", "refund"), ("card", "card"))]
    ws.write("cases.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ws.fake.configure(rules=rules)
    for args in (("project", "add", "bank"),
                 ("signature", "add", "intent", "-i", "text", "-o", "label:enum:billing,refund,card",
                  "--instruction", "Label the banking message."),
                 ("case", "import", "cases.jsonl"),
                 ("prompt", "add", "p", "--signature", "intent", "--template", "Message: {{ text }}"),
                 ("eval", "--prompt", "p", "--name", "r1", "--split", "test")):
        result = ws.cli(*args)
        assert result.code == 0, (args, result.stderr)


def test_suggest_names_the_confused_pair_first_and_offers_edits(workspace):
    banking(workspace)
    result = workspace.cli("suggest", "r1", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["failed"] == 10 and data["n"] == 30
    top = data["classification"]["confusions"][0]
    assert top["labels"] == ["billing", "refund"] and top["a_as_b"] == 10 and top["b_as_a"] == 0
    assert data["categories"][0] == {"kind": "label", "name": "billing", "n": 10, "failed": 10, "f1": 0.0}
    assert data["model_analysis"] == "billing questions are answered as refunds"
    assert [e["source"] for e in data["edits"]][:1] == ["model"] and len(data["edits"]) >= 2
    assert "+" in data["edits"][0]["diff"] and "Billing means a charge" in data["edits"][0]["diff"]
    assert data["applied"] is None
    assert workspace.rows("select count(*) from prompts")[0][0] == 1  # analysis adds no version

    shown = workspace.cli("suggest", "r1")  # the table view
    assert shown.code == 0 and "billing ↔ refund" in shown.stdout and "edit 1 (model)" in shown.stdout


def test_apply_evaluates_the_edit_on_the_same_cases_with_a_p_value(workspace):
    banking(workspace)
    result = workspace.cli("suggest", "r1", "--apply", "--json")
    assert result.code == 0, result.stderr
    applied = json.loads(result.stdout)["applied"]
    assert applied["edit"] == 1 and applied["pairs"] == 30
    assert round(applied["base"], 3) == 0.667 and applied["candidate"] == 1.0
    assert applied["p_value"] < 0.05 and applied["significant"] is True and applied["promoted"] is False
    # a candidate version: not the family's latest until promoted
    assert workspace.rows("select version, candidate, made_by from prompts order by version") == \
        [(1, 0, "person"), (2, 1, "suggest:r1")]
    runs = workspace.rows("select name, status from runs order by id")
    assert runs == [("r1", "completed"), ("r1-suggest-1", "completed")]

    promoted = workspace.cli("suggest", "r1", "--apply", "--promote", "--json")
    assert promoted.code == 0, promoted.stderr
    assert json.loads(promoted.stdout)["applied"]["promoted"] is True
    assert workspace.rows("select max(version) from prompts where candidate = 0")[0][0] >= 2


def test_an_unusable_reply_is_said_plainly_and_rule_edits_remain(workspace):
    banking(workspace, rules=[["", "Reply (JSON):", "I think you should try harder!"], *RULES[2:]])
    result = workspace.cli("suggest", "r1", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert "not usable" in data["model_note"] and data["model_analysis"] is None
    sources = [e["source"] for e in data["edits"]]
    assert sources and set(sources) == {"rule"}
    titles = " ".join(e["title"] for e in data["edits"])
    assert "'billing' and 'refund'" in titles  # train examples of the confused pair
    demo_edit = next(e for e in data["edits"] if "billing" in e["title"])
    assert "bill train question" in demo_edit["diff"] and "test question" not in demo_edit["diff"]


def test_suggest_refuses_bad_input_with_one_line(workspace):
    banking(workspace)
    for args, words in ((("suggest", "nope"), "no run named 'nope'"),
                        (("suggest", "r1", "--apply", "--edit", "9"), "--edit 9"),
                        (("suggest", "r1", "--promote"), "--promote needs --apply")):
        result = workspace.cli(*args)
        assert result.code == 2 and words in result.stderr, (args, result.stderr)


def test_suggest_reads_a_run_a_page_at_a_time_with_the_same_analysis(workspace, monkeypatch):
    """A run of any size: results are decoded as they stream and their cases fetched a page at a
    time (100,000 results: 498 MB at peak before, 74 MB after; `python bench/big_run.py`)."""
    from promptlab.services import suggest
    from promptlab.store import Store

    banking(workspace)
    whole = workspace.cli("suggest", "r1", "--json")
    assert whole.code == 0, whole.stderr
    pages: list[int] = []
    by_id = Store.cases_by_id

    def fetched(self, project_id, ids):
        ids = list(ids)
        pages.append(len(ids))
        return by_id(self, project_id, ids)

    def every_result(*args, **kwargs):
        raise AssertionError("suggest read the whole run at once")

    monkeypatch.setattr(suggest, "PAGE", 7)
    monkeypatch.setattr(Store, "cases_by_id", fetched)
    monkeypatch.setattr(Store, "results", every_result)
    paged = workspace.cli("suggest", "r1", "--json")
    assert paged.code == 0, paged.stderr
    assert json.loads(paged.stdout) == json.loads(whole.stdout)
    assert pages and max(pages) <= 7 and sum(pages) >= 30
