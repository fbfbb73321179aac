"""Experiment files end to end against the loopback server, and what bad input gets."""

import json

import pytest

from tests.conftest import SENTIMENT_EXPERIMENT

CASES = [
    {"text": "a great phone", "label": "positive"},
    {"text": "awful battery", "label": "negative"},
    {"text": "great screen, great price", "label": "positive"},
    {"text": "great idea, awful result", "label": "negative"},  # the fake says positive: wrong
]


def write_cases(ws, rows=CASES, name="cases.jsonl"):
    ws.write(name, "".join(json.dumps(r) + "\n" for r in rows))


def test_experiment_runs_end_to_end_and_rerun_makes_no_calls(workspace, monkeypatch):
    secret = "sk-secret-value-123456"
    monkeypatch.setenv("FAKE_KEY", secret)
    workspace.write("promptlab.toml", workspace.root.joinpath("promptlab.toml").read_text()
                    + 'api_key_env = "FAKE_KEY"\n')
    write_cases(workspace)
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT)

    first = workspace.cli("run", "exp.yaml", "--json")
    assert first.code == 0, first.stderr
    report = json.loads(first.stdout)
    run = report["runs"][0]
    assert report["passed"] is True
    assert (run["prompt"], run["version"], run["model"], run["n"], run["errors"]) == ("one-word", 1, "fake", 4, 0)
    assert run["scores"]["exact_match"] == pytest.approx(0.75)
    assert workspace.fake.stats()["auth_values"] == {f"Bearer {secret}": 4}

    results = workspace.rows("select c.inputs, r.output, r.passed from results r join cases c on c.id = r.case_id")
    assert len(results) == 4
    assert {json.loads(i)["text"]: (o, p) for i, o, p in results}["great idea, awful result"] == ("positive", 0)
    assert secret.encode() not in workspace.db_path.read_bytes()
    assert not any(secret.encode() in p.read_bytes() for p in workspace.db_path.parent.iterdir())

    calls = workspace.fake.requests_total()
    again = workspace.cli("run", "exp.yaml", "--json")
    assert again.code == 0, again.stderr
    assert workspace.fake.requests_total() == calls  # all from the cache
    rerun = json.loads(again.stdout)["runs"][0]
    assert rerun["cached"] == 4 and rerun["scores"] == run["scores"]
    # idempotent setup: still one project, one prompt version, four cases; two runs
    assert workspace.rows("select count(*) from prompts")[0][0] == 1
    assert workspace.rows("select count(*) from cases")[0][0] == 4
    assert workspace.rows("select count(*) from runs")[0][0] == 2


def test_gate_failure_exits_1(workspace):
    write_cases(workspace)
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT.replace("min_score: 0.5", "min_score: 0.9"))
    result = workspace.cli("run", "exp.yaml")
    assert result.code == 1
    assert "gate" in result.stderr and "0.750" in result.stderr


def test_matrix_of_prompts_and_models(workspace):
    write_cases(workspace)
    exp = SENTIMENT_EXPERIMENT.replace("models: [fake]", f"models: [fake, {{name: other, model: openai/other, "
                                       f"api_base: '{workspace.fake.base_url}'}}]")
    exp = exp.replace('    template: "Review: {{ text }}"\n',
                      '    template: "Review: {{ text }}"\n  - name: terse\n    template: "{{ text }}"\n')
    workspace.write("exp.yaml", exp)
    result = workspace.cli("run", "exp.yaml", "--json")
    assert result.code == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert sorted((r["prompt"], r["model"]) for r in runs) == [
        ("one-word", "fake"), ("one-word", "other"), ("terse", "fake"), ("terse", "other")]
    assert all(r["n"] == 4 for r in runs)
    assert set(workspace.fake.stats()["models"]) == {"fake", "other"}


BAD_INPUTS = {
    "malformed yaml": ({"exp.yaml": "project: demo\nsignature: [unclosed\n"}, "malformed YAML"),
    "unknown template variable": ({"exp.yaml": SENTIMENT_EXPERIMENT.replace("{{ text }}", "{{ body }}")},
                                  "template variable 'body'"),
    "unknown metric": ({"exp.yaml": SENTIMENT_EXPERIMENT.replace("[exact_match]", "[exact_matsch]")},
                       "unknown metric 'exact_matsch'"),
    "missing cases file": ({"exp.yaml": SENTIMENT_EXPERIMENT.replace("cases.jsonl", "nope.jsonl")},
                           "nope.jsonl: cases file not found"),
    "unknown model alias": ({"exp.yaml": SENTIMENT_EXPERIMENT.replace("[fake]", "[gpt-9]")},
                            "unknown model 'gpt-9'"),
    "case missing an input field": ({"exp.yaml": SENTIMENT_EXPERIMENT,
                                     "cases.jsonl": '{"text": "ok", "label": "positive"}\n{"body": "x", "label": "negative"}\n'},
                                    "lacks input field 'text'"),
    "missing api key": ({"exp.yaml": SENTIMENT_EXPERIMENT.replace(
        # the provider's own variable (a file may not name other variables: test_key_consent)
        "models: [fake]", "models: [{name: keyed, model: openai/x, api_key_env: OPENAI_API_KEY}]")},
        "OPENAI_API_KEY is not set"),
    "a rate of zero": ({"exp.yaml": SENTIMENT_EXPERIMENT.replace(
        "models: [fake]", "models: [{name: slow, model: openai/x, rpm: 0}]")}, "models.0.rpm"),
    "unknown gate": ({"exp.yaml": SENTIMENT_EXPERIMENT.replace("min_score: 0.5", "min_scor: 0.5")},
                     "unknown gate 'min_scor'"),
    "missing template": ({"exp.yaml": SENTIMENT_EXPERIMENT.replace('    template: "Review: {{ text }}"\n', "")},
                         "prompts.0.template"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_db_unchanged(workspace, case):
    write_cases(workspace)
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT)
    assert workspace.cli("run", "exp.yaml").code == 0  # a database with real content
    before = workspace.counts()
    calls = workspace.fake.requests_total()

    files, expected = BAD_INPUTS[case]
    for name, text in files.items():
        workspace.write(name, text)
    result = workspace.cli("run", "exp.yaml")
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert workspace.counts() == before
    assert workspace.fake.requests_total() == calls


def test_debug_shows_traceback(workspace):
    workspace.write("exp.yaml", "project: [")
    result = workspace.cli("--debug", "run", "exp.yaml")
    assert "Traceback" in result.stderr
    assert result.code == 2  # the same exit code as without --debug
