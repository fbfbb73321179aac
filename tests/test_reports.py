"""`promptlab report` (HTML, Markdown, JSON, JUnit) and `runs show`.

The HTML report is opened in headless Chromium (Debian's `chromium`): it must
make no request but its own file, log no console error, run no script that
came from a model's output or a case, and paint a non-blank page.
"""

import base64
import hashlib
import json
import os
import re
from html import unescape

import junitparser
import pytest

from promptlab.store.records import CandidateStep, EvalStep, Note, step_json
from tests import browser
from tests.seeing import evaluate, rules, setup_project, text

HOSTILE = {
    1: "<script>window.__pwned=1</script>",
    2: '<img src=x onerror="window.__pwned=2">',
    4: "[/bold] [red]</pre></article><script>window.__pwned=3</script>",
}
HOSTILE_CASE = {"text": 'odd item <svg onload="window.__pwned=4"></svg>', "label": "positive"}


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    if not browser.available():
        if os.environ.get("CI"):
            pytest.fail(f"{browser.CHROMIUM} is missing: install Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with browser.Chromium.launch(tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


def hostile_run(ws, name="r1"):
    """A run whose outputs (and one case) carry markup and scripts; returns case number -> id."""
    ids = setup_project(ws, n=10, second=False)
    ws.write("odd.jsonl", json.dumps(HOSTILE_CASE) + "\n")
    assert ws.cli("case", "import", "odd.jsonl").code == 0
    ws.fake.configure(rules=rules(replies=HOSTILE, prefix="Review: ") + [["odd item", "negative"]])
    evaluate(ws, "p@1", name)
    return ids


PAGE_CHECKS = {
    "pwned": "typeof window.__pwned",
    "text": "document.body.innerText",
    "cases": "document.querySelectorAll('.case').length",
    "scripts": "document.scripts.length",
    "filter": """(() => {
        const q = document.getElementById('filter');
        const before = document.getElementById('filter-count').textContent;
        q.value = 'ONERROR'; q.dispatchEvent(new Event('input'));
        const after = document.getElementById('filter-count').textContent;
        const visible = [...document.querySelectorAll('.case')].filter(e => !e.hidden).length;
        q.value = ''; q.dispatchEvent(new Event('input'));
        return {before, after, visible};
    })()""",
}


def assert_clean(page, path):
    assert page.requests == [path.resolve().as_uri()]  # nothing but the file itself
    assert page.console_errors == []
    assert page.values["pwned"] == "undefined"  # no script from a model or a case ran
    assert browser.pixel_stddev(page.screenshot) > 10  # a page was painted, not a blank screen


def test_html_report_of_a_run_renders_safely_in_chromium(workspace, chromium):
    hostile_run(workspace)
    result = workspace.cli("report", "r1", "-o", "out/r1.html")
    assert result.code == 0, result.stderr
    path = workspace.root / "out" / "r1.html"
    html = path.read_text()
    assert html.count("<script") == 1 and "http://" not in html and "https://" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html

    page = chromium.open(path, PAGE_CHECKS)
    assert_clean(page, path)
    failed = workspace.rows("select count(*) from results where passed = 0")[0][0]
    assert failed == 4 and page.values["cases"] == failed and page.values["scripts"] == 1
    for payload in (*HOSTILE.values(), HOSTILE_CASE["text"]):
        assert payload in page.values["text"]  # shown as text
    assert page.values["filter"] == {"before": "4 of 4 shown", "after": "1 of 4 shown", "visible": 1}
    for heading in ("per label", "Score distribution", "Slowest cases", "Most expensive cases", "Failed cases"):
        assert heading in page.values["text"]


def test_html_report_of_an_optimization(workspace, chromium):
    setup_project(workspace, n=4)
    for template in ("Judge: {{ text }}", "</pre><script>window.__pwned=5</script>{{ text }}"):
        assert workspace.cli("prompt", "add", "p", "--signature", "sentiment", "--template", template).code == 0
    prompts = dict(workspace.rows("select version, id from prompts"))
    history = [joined(0, prompts[1], "p@1", "base")]
    for it, (version, train, val) in enumerate([(1, 0.5, 0.55), (2, 0.6, 0.5), (3, 0.7, 0.65), (4, 0.9, 0.85)]):
        if version > 1:
            history.append(joined(it, prompts[version], f"p@{version}", "<b>edit</b>", prompts[1]))
        history.append(scored(it, f"p@{version}", train, val))
    history += [step_json(Note("proposer", 2, {"ok": False, "reason": "<script>x()</script> bad JSON"})),
                step_json(Note("stop", 3, {"reason": "budget", "winner": "p@4"}))]
    insert_optimization(workspace, "opt1", prompts[1], prompts[4], history)

    result = workspace.cli("report", "opt1", "--format", "html", "-o", "opt.html")
    assert result.code == 0, result.stderr
    path = workspace.root / "opt.html"
    page = chromium.open(path, {**{k: PAGE_CHECKS[k] for k in ("pwned", "text", "scripts")},
                                "content": "document.body.textContent",
                                "points": "document.querySelectorAll('svg circle').length",
                                "lines": "document.querySelectorAll('svg polyline').length"})
    assert_clean(page, path)
    assert page.values["points"] == 8 and page.values["lines"] == 2  # train and val of 4 candidates
    assert "+</pre><script>window.__pwned=5</script>{{ text }}" in page.values["text"]  # the diff, as text
    log = page.values["content"]  # the log sits in a closed <details>: in the DOM, not in innerText
    assert "reason=budget" in log and "winner=p@4" in log and "reason=<script>x()</script> bad JSON" in log

    facts = json.loads(workspace.cli("report", "opt1", "-f", "json").stdout)
    assert [(c["ref"], c["train"], c["val"]) for c in facts["candidates"]] == [
        ("p@1", 0.5, 0.55), ("p@2", 0.6, 0.5), ("p@3", 0.7, 0.65), ("p@4", 0.9, 0.85)]
    assert facts["scores"]["winner"]["val"] == 0.85 and facts["scores"]["base"]["val"] == 0.55
    assert [e["event"] for e in facts["events"]] == ["proposer", "stop"]
    md = workspace.cli("report", "opt1", "-f", "md").stdout
    assert "| val | 0.550 | 0.850 | +0.300 |" in md and "```diff" in md


def joined(iteration, prompt_id, ref, operator="edit", parent_id=None):
    """A history step as `Search` writes it: a candidate joined."""
    return step_json(CandidateStep(iteration, prompt_id, ref, parent_id, operator))


def scored(iteration, ref, train, val):
    """A history step as `Search` writes it: a candidate was scored (its means after that)."""
    return step_json(EvalStep(iteration, ref, "val", 4, val, train, val, 8))


def insert_optimization(ws, name, base_id, winner_id, history, status="completed"):
    from promptlab.store import open_store

    store = open_store(ws.db_path)
    project_id = store.projects()[0]["id"]
    store.db["optimizations"].insert({
        "project_id": project_id, "name": name, "strategy": "iterative", "config": json.dumps({"seed": 0}),
        "base_prompt_id": base_id, "winner_prompt_id": winner_id, "status": status,
        "history": history if isinstance(history, str) else json.dumps(history),
        "budget": json.dumps({"calls": 100}), "spent": json.dumps({"calls": 40})})
    store.db.conn.close()


def test_optimization_reports_of_a_running_search(workspace):
    setup_project(workspace, n=2)
    insert_optimization(workspace, "opt", 1, None, [], status="running")
    for fmt in ("html", "md", "json", "junit"):
        result = workspace.cli("report", "opt", "-f", fmt, "-o", f"opt.{fmt}")
        assert result.code == 0, (fmt, result.stderr)
    facts = json.loads((workspace.root / "opt.json").read_text())
    assert facts["candidates"] == [] and "no candidate scores recorded yet" in (
        workspace.root / "opt.html").read_text()
    junitparser.JUnitXml.fromfile(str(workspace.root / "opt.junit"))

    insert_optimization(workspace, "two", 1, 2, [joined(0, 1, "p@1", "base"), scored(0, "p@1", 0.4, 0.5),
                                                 joined(1, 2, "p@2", "rewrite", 1), scored(1, "p@2", 0.6, 0.7),
                                                 scored(2, "p@2", 0.65, None)])
    facts = json.loads(workspace.cli("report", "two", "-f", "json").stdout)
    assert [(c["ref"], c["step"], c["note"], c["parent_id"], c["train"], c["val"]) for c in facts["candidates"]] \
        == [("p@1", 0, "base", None, 0.4, 0.5), ("p@2", 1, "rewrite", 1, 0.65, 0.7)]
    assert facts["candidates"][1]["evals"] == [{"train": 0.6, "val": 0.7, "test": None},
                                               {"train": 0.65, "val": None, "test": None}]
    assert facts["winner"]["ref"] == "p@2" and "+Rate: {{ text }}" in facts["diff"]


@pytest.mark.parametrize("history, why", [
    ("not json at all", "Expecting value"),
    ({"candidates": []}, "not a list of steps"),
    # shapes facts.py once guessed at: a step must be one that `Search` writes
    ([{"prompt_id": 1, "train": 0.4, "val": {"mean": 0.5}}], "is not a step"),
    ([{"event": "candidate", "iteration": 0, "prompt_id": 1, "ref": "p@1", "round": 0}],
     "a 'candidate' step has the fields"),
    ([{"event": "eval", "iteration": 0, "ref": "p@1", "split": "val", "n": 2, "val": 0.5, "train": None,
       "val_estimate": 0.5, "calls": 2}], "p@1 is evaluated before it joined"),
])
def test_a_history_in_another_shape_is_an_error_from_the_store(workspace, history, why):
    setup_project(workspace, n=2)
    insert_optimization(workspace, "opt", 1, 2, history, status="running")
    result = workspace.cli("report", "opt", "-f", "json", "-o", "opt.json")
    assert result.code == 2 and not (workspace.root / "opt.json").exists()
    [line] = result.stderr.splitlines()
    assert "optimization 'opt' has a history promptlab never writes" in line and why in line


def test_markdown_json_and_junit_of_a_run_agree_with_the_database(workspace):
    hostile_run(workspace)
    failed, errors = workspace.rows("select sum(passed = 0 and error_kind is null), sum(error_kind is not null) "
                                    "from results")[0]
    facts = json.loads(workspace.cli("report", "r1", "--format", "json").stdout)
    assert facts["kind"] == "run" and facts["counts"] == {"results": 11, "passed": 7, "failed": failed,
                                                          "errors": errors}
    assert len(facts["results"]) == 11 and {r["output"] for r in facts["failed"]} >= set(HOSTILE.values())
    assert facts["metrics"]["classification"]["labels"] == ["positive", "negative", "(other)"]

    assert workspace.cli("report", "r1", "-o", "junit.xml").code == 0
    xml = junitparser.JUnitXml.fromfile(str(workspace.root / "junit.xml"))
    [suite] = list(xml)
    assert (suite.tests, suite.failures, suite.errors) == (11, failed, errors)
    failing = [c for c in suite if c.result]
    assert any(HOSTILE[1] in (c.result[0].text or "") for c in failing)  # the raw output, XML-escaped

    md = workspace.cli("report", "r1", "-f", "md").stdout
    assert "| classification |" in md and f"{failed} failed case(s)" in md
    assert not re.search(r"(?<!\\)<(script|img|svg)", md)


def test_report_names_a_run_first_then_an_optimization(workspace):
    setup_project(workspace, n=2)
    workspace.fake.configure(rules=rules())
    evaluate(workspace, "p@1", "same")
    insert_optimization(workspace, "same", 1, 2, [])
    assert json.loads(workspace.cli("report", "same", "-f", "json").stdout)["kind"] == "run"
    missing = workspace.cli("report", "nothing", "-o", "x.html")
    assert missing.code == 2 and "no run or optimization named 'nothing'" in missing.stderr
    bad = workspace.cli("report", "same", "-f", "docx")
    assert bad.code == 2 and "unknown --format 'docx'" in bad.stderr
    assert not (workspace.root / "x.html").exists()


def test_runs_show_renders_labels_confusion_and_failed_cases(workspace):
    hostile_run(workspace)
    shown = workspace.cli("runs", "show", "r1")
    assert shown.code == 0, shown.stderr
    out = shown.stdout
    assert "classification: per label" in out and "confusion" in out and "failed cases (4)" in out
    assert "[/bold]" in out and "[red]</pre>" in out  # model output that looks like rich markup is printed as is
    data = json.loads(workspace.cli("runs", "show", "r1", "--json").stdout)
    assert data["scores"]["classification"] == pytest.approx(7 / 11)
    assert {f["inputs"]["text"] for f in data["failed"]} == {text(1), text(2), text(4), HOSTILE_CASE["text"]}
    assert data["summary"]["metrics"]["classification"]["confusion"] == [[4, 1, 1], [0, 3, 2], [0, 0, 0]]


def test_html_report_needs_no_browser_to_be_escaped(workspace):
    """The same guarantees checked statically (this runs even where Chromium is missing)."""
    hostile_run(workspace)
    html = workspace.cli("report", "r1", "-f", "html").stdout
    csp = unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1))
    script = html.split("<script>")[1].split("</script>")[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert "default-src 'none'" in csp and f"script-src 'sha256-{digest}'" in csp  # the page's own script only
    assert not re.search(r"<(img|svg)[^>]*\son\w+=", html)
    assert html.count("<script") == 1 and "window.__pwned" not in html.split("<script>")[1]


def test_report_of_a_real_optimization_run(workspace, chromium):
    """`promptlab optimize` (bootstrap, no proposer) on the fake server, then its reports."""
    setup_project(workspace, n=24, second=False)
    workspace.fake.configure(rules=rules(replies={3: HOSTILE[1]}, prefix=""))
    result = workspace.cli("optimize", "--prompt", "p", "--strategy", "bootstrap", "--knob", "use_proposer=false",
                           "--knob", "candidates=3", "--budget-calls", "150", "--name", "opt", "--quiet", "--json")
    assert result.code == 0, result.stderr
    assert workspace.rows("select status from optimizations where name = 'opt'") == [("completed",)]
    made = workspace.rows("select count(*) from prompts where made_by = 'optimize:opt'")[0][0]

    assert workspace.cli("report", "opt", "-o", "opt.html").code == 0
    path = workspace.root / "opt.html"
    page = chromium.open(path, {"pwned": PAGE_CHECKS["pwned"], "text": PAGE_CHECKS["text"],
                                "points": "document.querySelectorAll('svg circle').length"})
    assert_clean(page, path)
    facts = json.loads(workspace.cli("report", "opt", "-f", "json").stdout)
    scored = [c for c in facts["candidates"] if c["train"] is not None or c["val"] is not None]
    assert len(facts["candidates"]) >= 1 + made and scored
    assert page.values["points"] == sum((c["train"] is not None) + (c["val"] is not None) for c in scored)
    assert facts["scores"]["winner"]["test"] is not None and facts["summary"]["stopped"]
    assert sum(c["is_winner"] for c in facts["candidates"]) >= 1 and facts["runs"]
    assert "test score" in page.values["text"].lower()


def test_structured_outputs_get_a_per_field_table(workspace):
    from tests.test_structured_run import EXPERIMENT

    workspace.fake.configure(rules=[["Ann", '{"name": "Ann", "city": "Oslo"}'],
                                    ["Bob", '{"name": "Bob", "city": "Paris"}'],
                                    ["Cy", '{"name": "Cy", "city": "Lima"}']])
    assert workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT), "--json").code == 0
    name = workspace.rows("select name from runs")[0][0]
    html = workspace.cli("report", name, "-f", "html").stdout
    assert "field_f1: per field" in html and "micro F1 0.833" in html
    assert html.count('<article class="case') == 1 and "Paris" in html
