"""Untrusted content stays data: secrets never stored or printed, a database names no code
to import, an experiment's code-execution consent stays with its file, terminal escapes
from cases and models never reach the terminal."""

import json
import sqlite3

import pytest

from promptlab.cli.common import fail
from promptlab.redact import redact

KEY_ENV = "PROMPTLAB_TEST_PROVIDER_KEY"  # no standard suffix: known because a model names it
KEY = "sk-test-0123456789abcdefSECRET"

EXPERIMENT = """\
project: demo
signature:
  name: sentiment
  inputs: [text]
  outputs:
    - {name: label, type: enum, choices: [positive, negative]}
prompts:
  - name: one-word
    template: "Review: {{ text }}"
models: [fake]
cases:
  - {text: a great phone, label: positive}
  - {text: awful battery, label: negative}
metrics: [exact_match]
"""


def config(ws, **model):
    lines = "".join(f'{k} = "{v}"\n' for k, v in {"model": "openai/fake", "api_base": ws.fake.base_url,
                                                   **model}.items())
    ws.write("promptlab.toml", f'[defaults]\nmodel = "fake"\n\n[models.fake]\n{lines}')


def all_db_text(ws) -> str:
    """Every value of every table, as text."""
    tables = [t for (t,) in ws.rows("select name from sqlite_master where type = 'table'")]
    return "\n".join(str(v) for t in tables for row in ws.rows(f"select * from [{t}]") for v in row)


# --------------------------------------------------------------------------- secrets

def test_a_provider_echoing_the_key_leaks_it_nowhere(workspace, call_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    config(workspace, api_key_env=KEY_ENV)
    workspace.fake.configure(echo_auth_in_error=True)
    exp = workspace.write("exp.yaml", EXPERIMENT)
    ran = workspace.cli("run", exp, "--junit", "ci.xml", "--report-md", "summary.md")
    assert ran.code == 3, ran.stderr  # every item failed
    assert f"Bearer {KEY}" in workspace.fake.stats()["auth_values"]  # the key was sent...
    errors = [e for (e,) in workspace.rows("select error from results union all select error from runs")]
    assert len(errors) == 3 and all("Authorization: Bearer [redacted]" in e for e in errors)  # ...and echoed
    (name,), = workspace.rows("select name from runs")

    outputs = [ran.stdout, ran.stderr]
    for fmt in ("html", "md", "json", "junit"):
        report = workspace.cli("report", name, "-f", fmt, "-o", f"report.{fmt}")
        assert report.code == 0, report.stderr
        outputs += [report.stderr, (workspace.root / f"report.{fmt}").read_text()]
        outputs.append(workspace.cli("report", name, "-f", fmt).stdout)
    for args in (("runs", "show", name), ("runs", "show", name, "--json"), ("runs", "list")):
        shown = workspace.cli(*args)
        assert shown.code == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    check = workspace.cli("models", "check")
    assert check.code == 3 and "[redacted]" in check.stderr
    outputs += [check.stdout, check.stderr]
    outputs += [(workspace.root / f).read_text() for f in ("ci.xml", "summary.md")]

    assert "[redacted]" in (workspace.root / "report.html").read_text()
    # not even a prefix: text cut short after masking would leave one
    assert all(KEY[:12] not in text for text in outputs)
    assert KEY[:12] not in all_db_text(workspace)


def test_reports_mask_a_key_that_an_older_database_still_holds(workspace, monkeypatch):
    monkeypatch.setenv("ACME_API_KEY", KEY)
    assert workspace.cli("run", workspace.write("exp.yaml", EXPERIMENT)).code == 0
    (name,), = workspace.rows("select name from runs")
    with sqlite3.connect(workspace.db_path) as conn:
        conn.execute("update results set error_kind = 'bad_request', passed = 0, error = ?",
                     (f"Authorization: Bearer {KEY}",))
    for fmt in ("html", "md", "json", "junit"):
        report = workspace.cli("report", name, "-f", fmt)
        assert report.code == 0 and "redacted" in report.stdout and KEY[:12] not in report.stdout, fmt


def test_an_unexpected_error_is_printed_masked_and_inert(monkeypatch, capsys):
    monkeypatch.setenv("ACME_API_KEY", KEY)
    with pytest.raises(SystemExit) as exit_:
        fail(RuntimeError(f"boom {KEY}\x1b]0;title\x07 done"))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("promptlab: unexpected error: RuntimeError: boom [redacted] done")


def test_standard_key_variables_are_masked_and_short_values_left_alone(monkeypatch):
    monkeypatch.setenv("ACME_API_KEY", "acme-key-7777777")
    monkeypatch.setenv("ACME_TOKEN", "short")
    monkeypatch.setenv("ACME_SECRET", "acme-key-7777777-and-more")  # contains the other one
    text = "keys acme-key-7777777-and-more, acme-key-7777777 and short"
    assert redact(text) == "keys [redacted], [redacted] and short"
    monkeypatch.delenv("ACME_SECRET")  # (it starts with the old value: a piece of a live key is masked)
    monkeypatch.setenv("ACME_API_KEY", "rotated-key-88888888")  # a new value is masked at once
    assert redact("rotated-key-88888888 acme-key-7777777") == "[redacted] acme-key-7777777"


def test_an_api_base_with_credentials_is_refused_before_anything_is_written(workspace):
    secret_url = workspace.fake.base_url.replace("http://", "http://user:sk-in-the-url-123@")
    config(workspace, api_base=secret_url)
    for args in (("run", workspace.write("exp.yaml", EXPERIMENT)), ("models", "check"), ("project", "add", "x")):
        result = workspace.cli(*args)
        assert result.code == 2, (args, result.stderr)
        assert result.stderr.strip().splitlines() == [
            f"promptlab: error: {workspace.root / 'promptlab.toml'}: models.fake.api_base carries "
            f"credentials; put the key in api_key_env"]
    assert workspace.counts() == {} and workspace.fake.requests_total() == 0

    config(workspace)  # a clean config, but the experiment's own model carries them
    inline = EXPERIMENT.replace("models: [fake]", f"models: [{{name: inline, model: openai/fake, "
                                                  f"api_base: '{secret_url}'}}]")
    result = workspace.cli("run", workspace.write("exp.yaml", inline))
    assert result.code == 2 and "models.inline.api_base carries credentials" in result.stderr
    assert workspace.counts().get("runs", 0) == 0 and workspace.fake.requests_total() == 0


# --------------------------------------------------------------------------- the database holds data

EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('imported')\n\ndef score(item):\n    return True\n"


def test_a_metric_spec_never_says_where_to_import_code_from(workspace):
    marker = workspace.root / "imported.txt"
    (workspace.root / "evil").mkdir()
    workspace.write("evil/evilmetrics.py", EVIL.format(marker=str(marker)))
    exp = workspace.write("exp.yaml", EXPERIMENT)
    ran = workspace.cli("run", exp, "--json")
    assert ran.code == 0, ran.stderr
    name = json.loads(ran.stdout)["runs"][0]["name"]
    # a database edited (or handed over) to point a run's metric at a folder of code
    spec = [{"name": "evilmetrics:score", "module_dir": str(workspace.root / "evil")}]
    with sqlite3.connect(workspace.db_path) as conn:
        conn.execute("update runs set metrics = ?, status = 'interrupted'", (json.dumps(spec),))
        conn.execute("delete from results where id = (select max(id) from results)")
    before = workspace.fake.requests_total()
    resumed = workspace.cli("eval", "--resume", name)
    assert resumed.code == 2
    assert len(resumed.stderr.strip().splitlines()) == 1 and "'module_dir' is not accepted" in resumed.stderr
    assert not marker.exists() and workspace.fake.requests_total() == before

    # nor can an experiment file put one into a stored spec
    runs = workspace.counts()["runs"]
    bad = EXPERIMENT.replace("metrics: [exact_match]", f"metrics: [{json.dumps(spec[0])}]")
    result = workspace.cli("run", workspace.write("bad.yaml", bad))
    assert result.code == 2 and "'module_dir' is not accepted" in result.stderr
    assert not marker.exists() and workspace.counts()["runs"] == runs


CODE_EXPERIMENT = """\
project: code
signature: {name: solve, inputs: [task], outputs: [code]}
prompts:
  - {name: p, template: "Write Python: {{ task }}"}
models: [fake]
cases:
  - {inputs: {task: add two numbers}, expected: {tests: "assert add(2, 3) == 5"}}
metrics: [{name: python_tests, tests_field: tests}]
allow_code_execution: true
"""


def test_an_experiments_code_consent_covers_its_own_runs_only(workspace):
    workspace.fake.configure(rules=[["add two", "```python\ndef add(a, b):\n    return a + b\n```"]])
    result = workspace.cli("run", workspace.write("code.yaml", CODE_EXPERIMENT), "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["scores"] == {"python_tests": 1.0}
    settings = workspace.rows("select settings from projects where name = 'code'")[0][0]
    assert "allow_code_execution" not in json.loads(settings or "{}")
    runs = workspace.counts()["runs"]
    later = workspace.cli("eval", "--prompt", "p", "--metric", 'python_tests:{"tests_field": "tests"}')
    assert later.code == 2 and "runs model-written code" in later.stderr
    assert workspace.counts()["runs"] == runs


# --------------------------------------------------------------------------- terminal escapes

ESCAPES = "\x1b[2J\x1b]0;pwned-title\x07\x1b[31m\r\x9b1m\x07\x00"


def test_terminal_escapes_from_cases_prompts_and_replies_never_reach_stdout(workspace, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    workspace.write("cases.jsonl", "".join(json.dumps(c) + "\n" for c in (
        {"text": f"great{ESCAPES} phone", "label": "positive"},
        {"text": "awful battery", "label": "negative"})))
    for args in (("project", "add", "demo", "--description", f"demo{ESCAPES}"),
                 ("signature", "add", "sentiment", "-i", "text", "-o", "label:enum:positive,negative"),
                 ("case", "import", "cases.jsonl"),
                 ("prompt", "add", "p", "--signature", "sentiment", "--template", "Review: {{ text }}"),
                 ("prompt", "add", "p", "--signature", "sentiment", "--system", f"MODE-B{ESCAPES}",
                  "--template", "Review: {{ text }}", "-m", f"hostile{ESCAPES}")):
        result = workspace.cli(*args)
        assert result.code == 0, (args, result.stderr)
    # p@2 gets a wrong reply full of escapes for the great phone: a failed, regressed case
    workspace.fake.configure(rules=[["MODE-B", "great", f"{ESCAPES}negative!"], ["great", "positive"],
                                    ["awful", "negative"]])
    for version, name in (("p@1", "a"), ("p@2", "b")):
        result = workspace.cli("eval", "--prompt", version, "--name", name)
        assert result.code == 0, result.stderr
    outputs = {}
    for args in (("runs", "show", "b"), ("runs", "compare", "a", "b"), ("case", "list"), ("prompt", "show", "p@2"),
                 ("prompt", "diff", "p@1", "p@2"), ("prompt", "log", "p@2"), ("project", "show", "demo"),
                 ("report", "b", "-f", "md")):
        result = workspace.cli(*args)
        assert result.code == 0, (args, result.stderr)
        outputs[args] = result.stdout + result.stderr
    for args, text in outputs.items():
        assert not any(c in text for c in "\x1b\x9b\r\x07\x00"), args
        # the whole sequence goes, not only its ESC (case list shows inputs as JSON: \u001b]0;...)
        assert args == ("case", "list") or "pwned-title" not in text, args
    assert "MODE-B" in outputs[("prompt", "show", "p@2")] and "great" in outputs[("case", "list")]
    assert "negative!" in outputs[("runs", "show", "b")]  # the reply, minus its escapes
    assert "regressed (1" in outputs[("runs", "compare", "a", "b")]
