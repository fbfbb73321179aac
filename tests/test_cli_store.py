"""Store commands: prompts (versions, diff, log, label, revert), cases (formats), the store itself."""

import json
import subprocess
import sys

import pytest


def test_help_does_not_import_litellm_or_the_store():
    code = ("import sys; from promptlab.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('litellm', 'sqlite_utils', 'numpy', 'pydantic', 'rich.live') if m in sys.modules]\n"
            "print('HEAVY=' + ','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="
    assert "Usage: promptlab" in out.stdout


def test_every_command_has_help(workspace):
    for args in (["eval"], ["run"], ["prompt", "add"], ["case", "import"], ["runs", "show"],
                 ["cache", "stats"], ["models", "check"], ["init"]):
        result = workspace.cli(*args, "--help")
        assert result.code == 0 and "Usage:" in result.stdout


@pytest.fixture
def project(workspace):
    assert workspace.cli("project", "add", "demo", "--description", "d").code == 0
    assert workspace.cli("signature", "add", "qa", "-i", "question", "-o", "answer",
                         "--instruction", "Answer briefly.").code == 0
    return workspace


def test_prompt_versions_are_immutable_and_deduplicated(project):
    add = ["prompt", "add", "p", "--signature", "qa"]
    assert "p@1" in project.cli(*add, "--template", "Q: {{ question }}").stdout
    assert "p@1" in project.cli(*add, "--template", "Q: {{ question }}").stdout  # same content
    assert "p@2" in project.cli(*add, "--template", "Question: {{ question }}", "-m", "longer").stdout
    assert project.rows("select version, parent_id from prompts order by version") == [(1, None), (2, 1)]

    diff = project.cli("prompt", "diff", "p@1", "p@2")
    assert "-Q: {{ question }}" in diff.stdout and "+Question: {{ question }}" in diff.stdout
    log = project.cli("prompt", "log", "p")
    assert log.stdout.index("p@2") < log.stdout.index("p@1")

    assert project.cli("prompt", "label", "p@1", "production").code == 0
    shown = json.loads(project.cli("prompt", "show", "p@production", "--json").stdout)
    assert shown["version"] == 1 and shown["labels"] == ["production"]

    revert = project.cli("prompt", "revert", "p@1")
    assert "p@3" in revert.stdout
    v3 = json.loads(project.cli("prompt", "show", "p@3", "--json").stdout)
    assert v3["template"] == "Q: {{ question }}" and v3["parent_id"] == json.loads(
        project.cli("prompt", "show", "p@2", "--json").stdout)["id"]


def test_unknown_template_variable_is_refused_before_anything_is_written(project):
    result = project.cli("prompt", "add", "p", "--signature", "qa", "--template", "{{ query }}")
    assert result.code == 2 and "template variable 'query'" in result.stderr
    assert project.rows("select count(*) from prompts") == [(0,)]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "yaml"])
def test_cases_round_trip_in_every_format(project, fmt):
    project.write("in.jsonl", '{"question": "2+2?", "answer": "4", "split": "test", "tags": ["math"]}\n'
                              '{"question": "capital of France?", "answer": "Paris"}\n')
    assert "imported 2 cases" in project.cli("case", "import", "in.jsonl").stdout
    assert project.cli("case", "export", f"out.{fmt}").code == 0
    project.cli("project", "add", "other")
    project.cli("signature", "add", "qa", "--project", "other", "-i", "question", "-o", "answer")
    result = project.cli("case", "import", f"out.{fmt}", "--project", "other")
    assert "imported 2 cases" in result.stdout, result.stderr
    rows = project.rows("select inputs, expected, split, tags from cases where project_id = 2 order by id")
    assert rows[0] == ('{"question": "2+2?"}', '{"answer": "4"}', "test", '["math"]')
    again = project.cli("case", "import", f"out.{fmt}", "--project", "other")
    assert "imported 0 cases (2 already present)" in again.stdout


@pytest.mark.parametrize("name,text,message", [
    ("bad.csv", 'question,answer\n"unclosed,4\n', "bad.csv"),
    ("bad.jsonl", '{"question": "a", "answer": "b"}\n{oops\n', "line 2"),
    ("bad.json", '[{"question": 1}', "invalid JSON"),
    ("bad.yaml", "- question: [\n", "malformed YAML"),
    ("bad.txt", "x", "unknown case format"),
])
def test_malformed_case_files_exit_2(project, name, text, message):
    project.write(name, text)
    result = project.cli("case", "import", name)
    assert result.code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert project.rows("select count(*) from cases") == [(0,)]


def test_database_from_a_newer_version_is_refused(project):
    project.rows("insert into _sqlite_migrations (migration_set, name, applied_at) values ('promptlab', 'm999_future', 'x')")
    result = project.cli("project", "list")
    assert result.code == 2 and "newer promptlab" in result.stderr


def test_store_pragmas(project):
    from promptlab.store import open_store

    store = open_store(project.db_path)
    assert store.db.journal_mode == "wal"
    assert store.db.execute("pragma synchronous").fetchone()[0] == 1  # NORMAL
    assert store.db.execute("pragma busy_timeout").fetchone()[0] >= 5000


def test_runs_list_and_show(workspace):
    workspace.write("c.jsonl", '{"text": "great", "label": "positive"}\n{"text": "awful", "label": "positive"}\n')
    workspace.cli("project", "add", "demo")
    workspace.cli("signature", "add", "s", "-i", "text", "-o", "label:enum:positive,negative")
    workspace.cli("case", "import", "c.jsonl")
    workspace.cli("prompt", "add", "p", "--signature", "s", "--template", "{{ text }}")
    assert workspace.cli("eval", "--prompt", "p", "--name", "r1").code == 0
    listed = json.loads(workspace.cli("runs", "list", "--json").stdout)
    assert [r["name"] for r in listed] == ["r1"]
    shown = json.loads(workspace.cli("runs", "show", "r1", "--json").stdout)
    assert shown["scores"]["exact_match"] == 0.5 and len(shown["failed"]) == 1
    assert shown["failed"][0]["output"] == "negative"


def test_models_list_never_shows_keys(workspace, monkeypatch):
    monkeypatch.setenv("SOME_KEY", "sk-should-not-print")
    workspace.write("promptlab.toml", workspace.root.joinpath("promptlab.toml").read_text()
                    + 'api_key_env = "SOME_KEY"\n')
    result = workspace.cli("models", "list", "--json")
    assert "sk-should-not-print" not in result.stdout
    fake = next(r for r in json.loads(result.stdout) if r["alias"] == "fake")
    assert fake["key_set"] is True and fake["api_key_env"] == "SOME_KEY"


def test_models_check_against_the_server(workspace):
    workspace.fake.configure(default_reply="OK")
    result = workspace.cli("models", "check", "fake")
    assert result.code == 0 and "fake: ok" in result.stdout
    workspace.fake.configure(always_status_if_contains={"OK": 500}, fail_rate=0)
    failing = workspace.cli("models", "check", "fake")
    assert failing.code == 3


def test_cache_stats_and_clear(workspace):
    workspace.write("c.jsonl", '{"text": "great", "label": "positive"}\n')
    workspace.cli("project", "add", "demo")
    workspace.cli("signature", "add", "s", "-i", "text", "-o", "label")
    workspace.cli("case", "import", "c.jsonl")
    workspace.cli("prompt", "add", "p", "--signature", "s", "--template", "{{ text }}")
    workspace.cli("eval", "--prompt", "p")
    assert json.loads(workspace.cli("cache", "stats", "--json").stdout)["entries"] == 1
    assert "removed 1" in workspace.cli("cache", "clear").stdout
    assert json.loads(workspace.cli("cache", "stats", "--json").stdout)["entries"] == 0


def test_a_model_string_that_an_alias_names_gets_its_settings(tmp_path):
    from promptlab.config import Settings

    settings = Settings(models={"small": {"alias": "small", "model": "openai/x", "params": {"max_tokens": 8}}})
    assert settings.resolve_model("openai/x").params == {"max_tokens": 8}
    assert settings.resolve_model("openai/y").params == {}
