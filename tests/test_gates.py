"""Quality gates for CI: exit codes, the failure summary, baselines, and the JUnit/Markdown files."""

import json
import re

import junitparser
import pytest

from tests.seeing import V1, V2, evaluate, label, rules, setup_project, text

BROKEN = (1, 2, 5)


def experiment(ws, template: str = V1, gates: str = "{min_score: 0.5}", n: int = 12, extra: str = "") -> None:
    ws.write("cases.jsonl", "".join(json.dumps({"text": text(i), "label": label(i)}) + "\n" for i in range(n)))
    ws.write("exp.yaml", f"""\
project: demo
signature:
  name: sentiment
  inputs: [text]
  outputs:
    - {{name: label, type: enum, choices: [positive, negative]}}
prompts:
  - name: p
    template: "{template}"
models: [fake]
cases: {{file: cases.jsonl}}
metrics: [exact_match]
gates: {gates}
{extra}""")


def junit_cases(path):
    xml = junitparser.JUnitXml.fromfile(str(path))
    return xml, {case.name: case for suite in xml for case in suite}


def outcome(case):
    kinds = {type(r).__name__ for r in case.result}
    return "error" if "Error" in kinds else "failure" if "Failure" in kinds else "pass"


def test_failing_gate_exits_1_and_junit_shows_the_gate_and_the_failed_cases(workspace):
    experiment(workspace, V2, gates="{min_score: 0.9, max_error_rate: 0.5}")
    workspace.fake.configure(rules=rules(broken=BROKEN))
    result = workspace.cli("run", "exp.yaml", "--junit", "out/junit.xml", "--report-md", "summary.md")
    assert result.code == 1
    # the one-line summary names the failing gate; the table lists every gate
    assert "1 gate(s) failed: min_score[exact_match] p@1 on fake: exact_match mean 0.750 < 0.9" in result.stderr
    assert "max_error_rate" in result.stdout and "FAIL" in result.stdout
    assert workspace.rows("select status, n_results from runs") == [("completed", 12)]
    failed_ids = {r[0] for r in workspace.rows("select case_id from results where passed = 0")}
    assert len(failed_ids) == len(BROKEN)

    xml, cases = junit_cases(workspace.root / "out" / "junit.xml")
    assert (xml.tests, xml.failures, xml.errors) == (12 + 2, len(BROKEN) + 1, 0)
    gate = cases["min_score[exact_match] p@1 on fake"]
    assert outcome(gate) == "failure" and "0.750 < 0.9" in gate.result[0].message
    assert outcome(cases["max_error_rate p@1 on fake"]) == "pass"
    failing = {name for name, case in cases.items() if name.startswith("case ") and outcome(case) == "failure"}
    assert failing == {f"case {case_id}: {text(i)}" for case_id, i in zip(
        sorted(failed_ids), BROKEN)}
    detail = cases[next(iter(sorted(failing)))].result[0]
    assert "expected" in detail.message and "output:" in detail.text
    summary = (workspace.root / "summary.md").read_text()
    assert "Gates: 1 of 2 failed" in summary and "❌" in summary


def test_passing_gates_exit_0_with_a_clean_junit(workspace):
    experiment(workspace, V1, gates="{min_score: {exact_match: 0.9}, min_pass_rate: 0.9, max_error_rate: 0}")
    workspace.fake.configure(rules=rules())
    result = workspace.cli("run", "exp.yaml", "--junit", "junit.xml", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["passed"] is True
    xml, cases = junit_cases(workspace.root / "junit.xml")
    assert (xml.tests, xml.failures, xml.errors) == (12 + 3, 0, 0)
    assert all(outcome(c) == "pass" for c in cases.values())


def test_errors_become_junit_errors_and_fail_the_error_rate_gate(workspace):
    experiment(workspace, V1, gates="{max_error_rate: 0.1}")
    workspace.fake.configure(rules=rules(), always_status_if_contains={f"Review: {text(3)}": 400,
                                                                        f"Review: {text(4)}": 400})
    result = workspace.cli("run", "exp.yaml", "--junit", "junit.xml")
    assert result.code == 1
    assert "max_error_rate p@1 on fake: error rate 0.167 > 0.1" in result.stderr
    assert workspace.rows("select count(*) from results where error_kind = 'bad_request'") == [(2,)]
    xml, cases = junit_cases(workspace.root / "junit.xml")
    assert (xml.errors, xml.failures) == (2, 1)
    errored = sorted(name for name, c in cases.items() if outcome(c) == "error")
    assert [n.split(": ", 1)[1] for n in errored] == [text(3), text(4)]


def test_max_regression_against_the_production_label(workspace):
    experiment(workspace, V1)
    workspace.fake.configure(rules=rules(broken=BROKEN))
    assert workspace.cli("run", "exp.yaml").code == 0
    assert workspace.cli("prompt", "label", "p@1", "production").code == 0
    baseline = workspace.rows("select name from runs")[0][0]

    # the same prompt again: no regression against production's latest run
    regression = "{max_regression: 0.05, baseline: production}"
    experiment(workspace, V1, gates=regression)
    same = workspace.cli("run", "exp.yaml", "--json")
    assert same.code == 0, same.stderr
    [gate] = json.loads(same.stdout)["gates"]
    assert gate["passed"] and baseline in gate["message"]
    latest = workspace.rows("select name from runs order by id desc limit 1")[0][0]  # now production's latest

    # a new version that breaks 3 of 12 cases: a drop of 0.25 > 0.05
    experiment(workspace, V2, gates=regression)
    worse = workspace.cli("run", "exp.yaml", "--junit", "junit.xml")
    assert worse.code == 1
    assert "max_regression[exact_match] p@2 on fake" in worse.stderr and latest in worse.stderr
    assert "drop 0.250 > 0.05" in worse.stderr
    xml, cases = junit_cases(workspace.root / "junit.xml")
    assert outcome(cases["max_regression[exact_match] p@2 on fake"]) == "failure"
    assert workspace.rows("select count(*) from runs where status = 'completed'") == [(3,)]

    # the same as a flag on run (overriding the file) and on eval, against a run by name
    experiment(workspace, V2)
    flagged = workspace.cli("run", "exp.yaml", "--max-regression", "0.3", "--baseline", baseline)
    assert flagged.code == 0, flagged.stderr
    on_eval = workspace.cli("eval", "--prompt", "p@2", "--max-regression", "0.1", "--baseline", baseline)
    assert on_eval.code == 1 and "max_regression[exact_match]" in on_eval.stderr


def test_baseline_that_names_nothing_is_bad_input_and_writes_nothing(workspace):
    experiment(workspace, V1, gates="{max_regression: 0.05}")  # default baseline: production
    workspace.fake.configure(rules=rules())
    result = workspace.cli("run", "exp.yaml")
    assert result.code == 2
    assert "baseline 'production'" in result.stderr and "promptlab prompt label p@VERSION production" in result.stderr
    assert workspace.counts().get("runs", 0) == 0 and workspace.counts().get("prompts", 0) == 0

    setup_project(workspace, n=4, second=False)
    before = workspace.counts()
    on_eval = workspace.cli("eval", "--prompt", "p", "--max-regression", "0.1", "--baseline", "no-such-run")
    assert on_eval.code == 2 and "no-such-run" in on_eval.stderr
    assert workspace.counts() == before


def test_labelled_version_without_an_earlier_run_fails_the_gate(workspace):
    setup_project(workspace, n=4)
    workspace.cli("prompt", "label", "p@1", "production")
    workspace.fake.configure(rules=rules())
    result = workspace.cli("eval", "--prompt", "p@2", "--max-regression", "0.05", "--json")
    assert result.code == 1
    [gate] = json.loads(result.stdout)["gates"]
    assert not gate["passed"] and "no earlier completed run of p@1" in gate["message"]


@pytest.mark.parametrize("gates, message", [
    ("{baseline: production}", "set max_regression too"),
    ("{max_regression: lots}", "expected a number"),
    ("{max_regresion: 0.1}", "unknown gate 'max_regresion'"),
])
def test_bad_gates_are_usage_errors(workspace, gates, message):
    experiment(workspace, V1, gates=gates)
    result = workspace.cli("run", "exp.yaml")
    assert result.code == 2 and message in result.stderr
    assert workspace.counts().get("runs", 0) == 0


def test_eval_report_md_for_the_step_summary(workspace):
    setup_project(workspace, n=6, second=False)
    workspace.fake.configure(rules=rules(replies={2: "<img src=x onerror=alert(1)> @someone"}, prefix="Review: "))
    evaluate(workspace, "p", "r1", "--min-score", "0.5", "--report-md", "step.md")
    md = (workspace.root / "step.md").read_text()
    assert "Gates: all 2 passed" in md and "| exact\\_match | 0.833 |" in md
    assert not re.search(r"(?<!\\)<img", md)  # shown as text, never an HTML tag
    assert "\\<img src=x onerror=alert\\(1\\)\\>" in md and "@\u200bsomeone" in md
