"""The everyday commands: --version, runs list, delete/edit, help, clear messages (issue 13)."""

import json
import subprocess
import sys

import pytest


@pytest.fixture
def evaluated(workspace):
    """A project with two prompt versions and three runs (r1, r2 on p@1; r3 on p@2)."""
    workspace.write("c.jsonl", '{"text": "great", "label": "positive"}\n'
                               '{"text": "awful", "label": "positive"}\n')
    for args in (("project", "add", "demo"),
                 ("signature", "add", "s", "-i", "text", "-o", "label:enum:positive,negative"),
                 ("case", "import", "c.jsonl"),
                 ("prompt", "add", "p", "--signature", "s", "--template", "{{ text }}"),
                 ("eval", "--prompt", "p", "--name", "r1"),
                 ("eval", "--prompt", "p", "--name", "r2"),
                 ("prompt", "add", "p", "--signature", "s", "--template", "Review: {{ text }}"),
                 ("eval", "--prompt", "p@2", "--name", "r3")):
        result = workspace.cli(*args)
        assert result.code == 0, (args, result.stderr)
    return workspace


def test_version(workspace):
    from importlib.metadata import version

    result = workspace.cli("--version")
    assert result.code == 0 and result.stdout.strip() == f"promptlab {version('promptlab')}"


def test_runs_list_json_and_filters(evaluated):
    def names(*args):
        result = evaluated.cli("runs", "list", "--json", *args)
        assert result.code == 0, result.stderr
        return [r["name"] for r in json.loads(result.stdout)]

    listed = json.loads(evaluated.cli("runs", "list", "--json").stdout)
    assert [r["name"] for r in listed] == ["r3", "r2", "r1"]
    r1 = listed[-1]
    assert (r1["status"], r1["prompt"], r1["version"], r1["ref"], r1["model"], r1["n"], r1["errors"]) == \
        ("completed", "p", 1, "p@1", "fake", 2, 0)
    assert r1["metric"] == "exact_match" and r1["score"] == 0.5 and r1["created_at"]

    assert names("--prompt", "p@2") == ["r3"]
    assert names("--prompt", "p") == ["r3", "r2", "r1"]
    assert names("--limit", "1") == ["r3"]
    assert names("--model", "fake") == ["r3", "r2", "r1"] and names("--model", "other") == []
    evaluated.rows("update runs set status = 'failed' where name = 'r2'")
    assert names("--status", "failed") == ["r2"]
    bad = evaluated.cli("runs", "list", "--status", "done")
    assert bad.code == 2 and "completed" in bad.stderr


def test_runs_list_hides_optimizer_runs_unless_all(evaluated):
    evaluated.rows("update runs set optimization_id = 1 where name = 'r2'")
    shown = json.loads(evaluated.cli("runs", "list", "--json").stdout)
    assert [r["name"] for r in shown] == ["r3", "r1"]
    every = json.loads(evaluated.cli("runs", "list", "--json", "--all").stdout)
    assert [r["name"] for r in every] == ["r3", "r2", "r1"] and every[1]["optimizer"]


def test_runs_list_table_shows_the_columns(evaluated):
    result = evaluated.cli("runs", "list")
    assert result.code == 0, result.stderr
    for column in ("name", "status", "prompt", "model", "main score", "errors", "created"):
        assert column in result.stdout
    assert "p@2" in result.stdout and "0.500" in result.stdout and "completed" in result.stdout


@pytest.mark.parametrize("command", [["runs", "list"], ["prompt", "list"]])
def test_listing_does_not_import_litellm(evaluated, command):
    code = ("import sys; from promptlab.cli import main\n"
            f"try:\n    main({command!r})\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print('LITELLM=' + str('litellm' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=evaluated.root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "LITELLM=False"


@pytest.fixture
def empty(workspace, tmp_path, monkeypatch):
    """A folder outside any workspace: no promptlab.toml upward, no PROMPTLAB_CONFIG or PROMPTLAB_DB."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("PROMPTLAB_CONFIG")
    (tmp_path / "promptlab.toml").unlink()
    return folder


@pytest.mark.parametrize("command", [["runs", "list"], ["runs", "show", "r1"], ["prompt", "list"],
                                     ["project", "show"], ["case", "list"], ["cache", "stats"],
                                     ["signature", "list"], ["report", "r1"]])
def test_read_only_commands_outside_a_workspace_create_nothing(workspace, empty, command):
    result = workspace.cli(*command)
    assert result.code == 2
    assert "no promptlab database here; run `promptlab init` (or set PROMPTLAB_DB)" in result.stderr
    assert list(empty.iterdir()) == []


def test_init_prints_next_commands_that_work(workspace, empty):
    import shlex

    result = workspace.cli("init")
    assert result.code == 0, result.stderr
    lines = result.stdout.split("next:\n", 1)[1].splitlines()
    commands = [shlex.split(line)[1:] for line in lines[:3]]
    assert [c[:2] for c in commands] == [["project", "add"], ["signature", "add"], ["prompt", "add"]]
    for command in commands:
        ran = workspace.cli(*command)
        assert ran.code == 0, (command, ran.stderr)
    assert (empty / ".promptlab" / "promptlab.db").exists()


def test_project_show_without_a_name_when_there_is_one(workspace):
    workspace.cli("project", "add", "demo", "--description", "the demo")
    shown = workspace.cli("project", "show", "--json")
    assert shown.code == 0 and json.loads(shown.stdout)["name"] == "demo"
    workspace.cli("project", "add", "other")
    ambiguous = workspace.cli("project", "show")
    assert ambiguous.code == 2 and "demo, other" in ambiguous.stderr


def _commands():
    import typer

    from promptlab.cli import app

    def walk(command, path=()):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*path, name))
    return list(walk(typer.main.get_command(app)))


def test_help_is_plain_and_complete(workspace):
    import re

    commands = _commands()
    assert len(commands) > 30
    for path, command in commands:
        result = workspace.cli(*path, "--help")
        assert result.code == 0, (path, result.stderr)
        text = result.stdout
        assert "<str>" not in text and "<list[" not in text and not re.search(r"<\w[\w ]*>", text), path
        assert "e.g." not in text, path  # typer cuts a command's summary at its first period
        assert "--no-not-golden" not in text
        for param in command.params:
            if param.param_type_name == "argument":
                assert param.help, f"{' '.join(path)}: argument {param.name} has no description"
            if "--json" in getattr(param, "opts", ()):
                assert param.help, f"{' '.join(path)}: --json has no help"
    for path in (["eval"], ["run"], ["optimize"], ["case", "import"], ["prompt", "add"]):
        assert "Examples:\n\n    promptlab " + " ".join(path) in workspace.cli(*path, "--help").stdout, path
    assert "--not-golden " in workspace.cli("case", "import", "--help").stdout


def test_debug_anywhere_or_from_the_environment(workspace, monkeypatch):
    workspace.cli("project", "add", "demo")
    plain = workspace.cli("runs", "show", "nope")
    assert plain.code == 2 and "Traceback" not in plain.stderr
    after = workspace.cli("runs", "show", "nope", "--debug")
    assert after.code == 2 and "Traceback" in after.stderr and "no run 'nope'" in after.stderr
    monkeypatch.setenv("PROMPTLAB_DEBUG", "1")
    env = workspace.cli("runs", "show", "nope")
    assert env.code == 2 and "Traceback" in env.stderr


def _changed(before: dict, after: dict) -> dict:
    return {t: (before.get(t), after.get(t)) for t in set(before) | set(after) if before.get(t) != after.get(t)}


def test_runs_delete_removes_the_run_and_its_results_only(evaluated):
    before = evaluated.counts()
    asked = evaluated.cli("runs", "delete", "r1")
    assert asked.code == 2 and "--yes" in asked.stderr and evaluated.counts() == before
    (r1,), = evaluated.rows("select id from runs where name = 'r1'")
    result = evaluated.cli("runs", "delete", "r1", "--yes")
    assert result.code == 0, result.stderr
    assert "deleted run r1 (2 results)" in result.stdout
    assert evaluated.rows("select count(*) from results where run_id = ?", (r1,)) == [(0,)]
    assert _changed(before, evaluated.counts()) == {"runs": (3, 2), "results": (6, 4)}
    assert evaluated.cli("runs", "show", "r2").code == 0
    assert evaluated.cli("runs", "delete", "r1", "--yes").code == 2  # gone


def test_runs_delete_refuses_an_optimizer_run(evaluated):
    evaluated.rows("insert into optimizations (project_id, name, strategy, status) values (1, 'opt', 'mcts', 'completed')")
    evaluated.rows("update runs set optimization_id = 1 where name = 'r2'")
    result = evaluated.cli("runs", "delete", "r2", "--yes")
    assert result.code == 2 and "optimization 'opt'" in result.stderr


def test_case_delete_archives_a_used_case_and_deletes_an_unused_one(evaluated):
    evaluated.write("new.jsonl", '{"text": "fine", "label": "positive"}\n')
    assert evaluated.cli("case", "import", "new.jsonl").code == 0
    ids = dict(evaluated.rows("select json_extract(inputs, '$.text'), id from cases"))
    before = evaluated.counts()
    assert evaluated.cli("case", "delete", str(ids["awful"]), str(ids["fine"])).code == 2  # no --yes
    result = evaluated.cli("case", "delete", str(ids["awful"]), str(ids["fine"]), "--yes")
    assert result.code == 0, result.stderr
    assert f"deleted cases {ids['fine']}" in result.stdout and f"archived case {ids['awful']}" in result.stdout
    assert _changed(before, evaluated.counts()) == {"cases": (3, 2)}
    assert evaluated.rows("select id from cases where archived = 1") == [(ids["awful"],)]
    listed = json.loads(evaluated.cli("case", "list", "--json").stdout)
    assert [c["id"] for c in listed] == [ids["great"]]
    assert evaluated.cli("eval", "--prompt", "p", "--name", "after").code == 0  # archived: not selected
    assert evaluated.rows("select n_results from runs where name = 'after'") == [(1,)]
    assert json.loads(evaluated.cli("runs", "show", "r1", "--json").stdout)["n"] == 2  # its run keeps it
    missing = evaluated.cli("case", "delete", "999", "--yes")
    assert missing.code == 2 and "no case with id 999" in missing.stderr


def test_case_edit(evaluated):
    (awful,), = evaluated.rows("select id from cases where inputs like '%awful%'")
    result = evaluated.cli("case", "edit", str(awful), "-e", "label=negative", "--split", "test", "--tag", "fixed")
    assert result.code == 0, result.stderr
    assert "used by 3 runs" in result.stderr  # their scores were computed against the old label
    row = evaluated.rows("select expected, split, tags from cases where id = ?", (awful,))
    assert row == [('{"label": "negative"}', "test", '["fixed"]')]
    assert evaluated.cli("eval", "--prompt", "p", "--name", "fixed", "--split", "test").code == 0
    assert evaluated.rows("select score from results join runs on runs.id = run_id where name = 'fixed'") == [(1.0,)]
    bad = evaluated.cli("case", "edit", str(awful), "--split", "tst")
    assert bad.code == 2 and "train, val, test" in bad.stderr
    (great,), = evaluated.rows("select id from cases where inputs like '%great%'")
    clash = evaluated.cli("case", "edit", str(great), "-e", "label=positive", "--tag", "x")
    assert clash.code == 0  # same expected output: no clash with itself
    assert evaluated.cli("case", "edit", str(great)).code == 2
    assert evaluated.cli("case", "add", "-i", "text=great", "-e", "label=negative").code == 0
    (twin,), = evaluated.rows("select id from cases where expected like '%negative%' and inputs like '%great%'")
    clash = evaluated.cli("case", "edit", str(twin), "-e", "label=positive")
    assert clash.code == 2 and "another case already has" in clash.stderr


def test_prompt_label_remove(evaluated):
    assert evaluated.cli("prompt", "label", "p@1", "production").code == 0
    assert evaluated.cli("prompt", "label", "p", "production", "--remove").code == 2  # no --yes
    result = evaluated.cli("prompt", "label", "p", "production", "--remove", "--yes")
    assert result.code == 0 and "it pointed at p@1" in result.stdout
    assert evaluated.rows("select count(*) from prompt_labels") == [(0,)]
    gone = evaluated.cli("prompt", "show", "p@production")
    assert gone.code == 2 and "no label 'production'" in gone.stderr
    again = evaluated.cli("prompt", "label", "p", "production", "--remove", "--yes")
    assert again.code == 2 and "no label 'production'" in again.stderr


def test_unknown_split_or_tag_names_the_ones_that_exist(evaluated):
    evaluated.write("tagged.jsonl", '{"text": "fine", "label": "positive", "split": "test", "tags": ["short"]}\n')
    assert evaluated.cli("case", "import", "tagged.jsonl").code == 0
    before = evaluated.counts()
    split = evaluated.cli("eval", "--prompt", "p", "--split", "tst")
    assert split.code == 2 and "no cases in split 'tst'; splits here: none (2), test (1)" in split.stderr
    tag = evaluated.cli("eval", "--prompt", "p", "--tag", "shrot")
    assert tag.code == 2 and "no case has tag 'shrot'; tags here: short (1)" in tag.stderr
    assert evaluated.counts() == before  # no run was created


@pytest.mark.parametrize("gate", [["--min-score", "1.5"], ["--min-pass-rate", "-0.1"], ["--max-error-rate", "2"],
                                  ["--max-regression", "1.01"]])
def test_gate_values_outside_zero_one_are_refused(evaluated, gate):
    before = evaluated.counts()
    result = evaluated.cli("eval", "--prompt", "p", *gate)
    assert result.code == 2 and "outside [0, 1]" in result.stderr
    assert evaluated.counts() == before


def test_gate_values_in_an_experiment_file_and_for_optimize(workspace):
    from tests.conftest import SENTIMENT_EXPERIMENT

    workspace.write("cases.jsonl", '{"text": "great", "label": "positive"}\n')
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT.replace("min_score: 0.5", "min_score: 50"))
    result = workspace.cli("run", "exp.yaml")
    assert result.code == 2 and "min_score: 50 is outside [0, 1]" in result.stderr
    assert workspace.cli("optimize", "--prompt", "p", "--min-test-score", "1.5").code == 2


def test_warning_when_the_prompts_demos_are_evaluated(evaluated):
    evaluated.write("demos.yaml", "- {inputs: {text: great}, outputs: {label: positive}}\n")
    assert evaluated.cli("prompt", "add", "d", "--signature", "s", "--template", "{{ text }}",
                         "--demos-file", "demos.yaml").code == 0
    result = evaluated.cli("eval", "--prompt", "d", "--name", "with-demos")
    assert result.code == 0, result.stderr
    assert "1 of the 2 cases are demos of d@1" in " ".join(result.stderr.split())
    (summary,), = evaluated.rows("select summary from runs where name = 'with-demos'")
    assert any("demos of d@1" in w for w in json.loads(summary)["warnings"])
    clean = evaluated.cli("eval", "--prompt", "p", "--name", "no-demos", "--json")
    assert not any("demos" in w for w in json.loads(clean.stdout)["runs"][0]["warnings"])


def test_prompt_try_prints_messages_reply_and_parsed(evaluated):
    evaluated.fake.configure(record_bodies=True)
    before = evaluated.counts()
    result = evaluated.cli("prompt", "try", "p@2", "-i", "text=great")
    assert result.code == 0, result.stderr
    assert "--- user\nReview: great" in result.stdout
    assert "=== reply from fake" in result.stdout and '=== parsed\n{"label": "positive"}' in result.stdout
    sent = evaluated.fake.stats()["bodies"][-1]["messages"]
    assert sent[-1] == {"role": "user", "content": "Review: great"}
    assert evaluated.counts() == before  # nothing cached, nothing stored

    data = json.loads(evaluated.cli("prompt", "try", "p@2", "-i", "text=awful", "--json").stdout)
    assert data["parsed"] == {"label": "negative"} and data["messages"][-1]["content"] == "Review: awful"

    calls = evaluated.fake.requests_total()
    dry = evaluated.cli("prompt", "try", "p@2", "-i", "text=meh", "--dry-run")
    assert dry.code == 0 and "Review: meh" in dry.stdout and "reply" not in dry.stdout
    assert evaluated.fake.requests_total() == calls

    unparsed = evaluated.cli("prompt", "try", "p@2", "-i", "text=meh")  # the fake answers "neutral"
    assert unparsed.code == 0 and "neutral" in unparsed.stdout and "warning" in unparsed.stderr
    missing = evaluated.cli("prompt", "try", "p@2", "-i", "txt=great", "--dry-run")
    assert missing.code == 2 and "unknown input 'txt'" in missing.stderr


def test_load_prompt_renders_what_eval_sent(evaluated):
    import promptlab

    evaluated.write("demos.yaml", "- {inputs: {text: nice}, outputs: {label: positive}}\n")
    assert evaluated.cli("prompt", "add", "d", "--signature", "s", "--system", "Be brief.", "--template",
                         "Review: {{ text }}", "--demos-file", "demos.yaml", "--param", "temperature=0").code == 0
    evaluated.cli("prompt", "label", "d@1", "production")
    evaluated.fake.configure(record_bodies=True)
    assert evaluated.cli("eval", "--prompt", "d", "--name", "sent", "--no-cache").code == 0
    sent = {b["messages"][-1]["content"]: b["messages"] for b in evaluated.fake.stats()["bodies"]}

    loaded = promptlab.load_prompt("d@production", db=evaluated.db_path)
    assert loaded.ref == "d@1" and loaded.params == {"temperature": 0}
    assert loaded.messages(text="great") == sent["Review: great"]
    assert loaded.parse("negative") == {"label": "negative"}
    with pytest.raises(ValueError):
        loaded.parse("neutral")
    assert promptlab.load_prompt("d", project="demo").ref == "d@1"  # the database promptlab.toml names


def test_prompt_export_round_trips_through_an_experiment_file(evaluated):
    evaluated.write("demos.yaml", "- {inputs: {text: nice}, outputs: {label: positive}}\n")
    template = "Review:\n{{ text }}\n\nAnswer with one word."
    assert evaluated.cli("prompt", "add", "multi", "--signature", "s", "--system", "Be brief.", "--template",
                         template, "--demos-file", "demos.yaml", "--param", "max_tokens=5", "-m", "why").code == 0
    (digest,), = evaluated.rows("select content_hash from prompts where name = 'multi'")
    exported = evaluated.cli("prompt", "export", "multi", "-f", "yaml")
    assert exported.code == 0, exported.stderr
    signature = ("signature:\n  name: s\n  inputs: [text]\n  outputs:\n"
                 "    - {name: label, type: enum, choices: [positive, negative]}\n")
    evaluated.write("exp.yaml", "project: demo\n" + signature + "prompts:\n" + exported.stdout +
                    "models: [fake]\ncases: [{text: great, label: positive}]\n")
    ran = evaluated.cli("run", "exp.yaml")
    assert ran.code == 0, ran.stderr
    assert evaluated.rows("select version, content_hash from prompts where name = 'multi'") == [(1, digest)]

    as_json = json.loads(evaluated.cli("prompt", "export", "multi", "-f", "json").stdout)
    assert as_json["template"] == template and as_json["params"] == {"max_tokens": 5}
    assert evaluated.cli("prompt", "export", "multi", "-f", "toml").code == 2


def test_prompt_export_prints_no_terminal_escapes(evaluated):
    assert evaluated.cli("prompt", "add", "esc", "--signature", "s", "--template",
                         "\x1b]0;owned\x07{{ text }}\x9b2J").code == 0
    for fmt in ("yaml", "json"):
        out = evaluated.cli("prompt", "export", "esc", "-f", fmt).stdout
        assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out
    data = json.loads(evaluated.cli("prompt", "export", "esc", "-f", "json").stdout)
    assert data["template"] == "\x1b]0;owned\x07{{ text }}\x9b2J"  # the text itself is kept exactly


def test_prompt_list_shows_the_parent_ref(evaluated):
    listed = json.loads(evaluated.cli("prompt", "list", "--json").stdout)
    assert [(v["version"], v["parent"]) for v in listed] == [(1, None), (2, "p@1")]
    table = evaluated.cli("prompt", "list", "p").stdout
    assert "p@1" in table.split("p@2", 1)[1]  # p@2's row names its parent by ref


def test_cache_stats_table_by_model_and_kind(evaluated):
    data = json.loads(evaluated.cli("cache", "stats", "--json").stdout)
    assert data["by_model"] == [{"model": "openai/fake", "kind": "chat", "entries": 4,
                                 "bytes": data["bytes"]}]
    table = evaluated.cli("cache", "stats").stdout
    assert "openai/fake" in table and "chat" in table and "entries" in table


def test_ctrl_c_during_run_prints_commands_that_work(workspace, monkeypatch):
    import re

    import promptlab.services.evaluate
    from tests.conftest import SENTIMENT_EXPERIMENT

    workspace.write("cases.jsonl", '{"text": "great", "label": "positive"}\n{"text": "awful", "label": "negative"}\n')
    two = SENTIMENT_EXPERIMENT.replace('    template: "Review: {{ text }}"\n', '    template: "Review: {{ text }}"\n'
                                       '  - name: plain\n    template: "{{ text }}"\n')
    workspace.write("exp.yaml", two)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    real = promptlab.services.evaluate.execute
    monkeypatch.setattr(promptlab.services.evaluate, "execute", interrupted)
    result = workspace.cli("run", "exp.yaml")
    assert result.code == 130
    [command] = re.findall(r"`(promptlab eval --resume [^`]+)`", result.stderr)  # one command continues both
    names = re.findall(r"--resume (\S+)", command)
    assert len(names) == 2
    assert "or re-run `promptlab run exp.yaml`, which continues them" in result.stderr
    monkeypatch.setattr(promptlab.services.evaluate, "execute", real)
    resumed = workspace.cli("eval", "--resume", names[0])
    assert resumed.code == 0, resumed.stderr
    again = workspace.cli("run", "exp.yaml", "--json")  # continues the interrupted run; the finished one anew
    assert again.code == 0, again.stderr
    ran = [r["name"] for r in json.loads(again.stdout)["runs"]]
    assert names[1] in ran and names[0] not in ran and len(ran) == 2
    assert workspace.rows("select status, count(*) from runs group by status") == [("completed", 3)]


def test_the_local_model_takes_one_call_at_a_time(workspace, empty):
    from promptlab.config import ModelConfig, load_settings

    assert ModelConfig(model="local/gemma-3-270m").concurrency == 1
    assert ModelConfig(model="local/gemma-3-270m", concurrency=3).concurrency == 3  # said so: kept
    assert ModelConfig(model="openai/gpt-4o-mini").concurrency is None
    assert workspace.cli("init").code == 0
    settings = load_settings()
    local = settings.resolve_model("local")
    assert local.concurrency == 1 and "max_tokens" not in local.params  # one default: the model's own


def test_project_delete_removes_that_project_only(evaluated):
    from tests.conftest import SENTIMENT_EXPERIMENT

    evaluated.write("cases.jsonl", '{"text": "great", "label": "positive"}\n')
    evaluated.write("other.yaml", SENTIMENT_EXPERIMENT.replace("project: demo", "project: other"))
    assert evaluated.cli("run", "other.yaml").code == 0
    evaluated.cli("prompt", "label", "p@1", "production", "--project", "demo")
    other = {t: evaluated.rows(f"select count(*) from [{t}] where {col} in (select id from runs where "
                               f"project_id = 2)" if col == "run_id" else
                               f"select count(*) from [{t}] where project_id = 2")[0][0]
             for t, col in (("prompts", "project_id"), ("cases", "project_id"), ("runs", "project_id"),
                            ("results", "run_id"), ("signatures", "project_id"))}
    cache = evaluated.counts()["response_cache"]
    assert evaluated.cli("project", "delete", "demo").code == 2  # no --yes: nothing deleted
    result = evaluated.cli("project", "delete", "demo", "--yes")
    assert result.code == 0, result.stderr
    assert "3 runs" in result.stdout and "6 results" in result.stdout
    after = evaluated.counts()
    assert {t: after[t] for t in other} == other and after["projects"] == 1 and after["prompt_labels"] == 0
    assert after["response_cache"] == cache
    assert evaluated.cli("runs", "list", "--json").code == 0  # the one project left is the default


def test_run_takes_model_split_and_limit_like_eval(workspace):
    from tests.conftest import SENTIMENT_EXPERIMENT

    toml = workspace.root / "promptlab.toml"
    toml.write_text(toml.read_text() + f'\n[models.other]\nmodel = "openai/other"\napi_base = "{workspace.fake.base_url}"\n')
    workspace.write("cases.jsonl", "".join(f'{{"text": "great {i}", "label": "positive", "split": "{s}"}}\n'
                                           for i, s in enumerate(["train", "test", "test", "test"])))
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT)

    def ran(*flags):
        result = workspace.cli("run", "exp.yaml", "--json", *flags)
        assert result.code == 0, result.stderr
        return [(r["model"], r["n"]) for r in json.loads(result.stdout)["runs"]]

    assert ran() == [("fake", 4)]
    assert ran("--split", "test", "--limit", "2", "--model", "other") == [("other", 2)]
    assert ran("--split", "train", "--model", "fake", "--model", "other") == [("fake", 1), ("other", 1)]
    workspace.write("limited.yaml", SENTIMENT_EXPERIMENT.replace("repeat: 1}", "repeat: 1, limit: 3}"))
    assert json.loads(workspace.cli("run", "limited.yaml", "--json").stdout)["runs"][0]["n"] == 3
    bad = workspace.cli("run", "exp.yaml", "--split", "tst")
    assert bad.code == 2 and "splits here: test, train" in bad.stderr
    unknown = workspace.cli("run", "exp.yaml", "--model", "nope")
    assert unknown.code == 2 and "unknown model 'nope'" in unknown.stderr


def test_a_demo_selector_version_from_code_and_its_pool_cases(evaluated):
    import promptlab
    from promptlab.models import DemoSelector
    from promptlab.store import open_store

    evaluated.write("more.jsonl", '{"text": "great fun", "label": "positive"}\n{"text": "awful mess", "label": "negative"}\n')
    assert evaluated.cli("case", "import", "more.jsonl").code == 0
    store = open_store(evaluated.db_path)
    pool = tuple(i for (i,) in evaluated.rows("select id from cases where json_extract(inputs, '$.text') like '% %'"))
    base = store.prompt(1, "p@1")
    knn = store.add_prompt(1, "p", base.content.model_copy(update={"demo_selector": DemoSelector(k=1, pool=pool)}),
                           signature_id=base.signature_id)
    store.db.close()
    evaluated.fake.configure(record_bodies=True)
    assert evaluated.cli("eval", "--prompt", knn.ref, "--name", "knn", "--no-cache").code == 0
    sent = {b["messages"][-1]["content"]: b["messages"] for b in evaluated.fake.stats()["bodies"]}
    loaded = promptlab.load_prompt(knn.ref, db=evaluated.db_path)
    assert loaded.messages(text="great") == sent["great"]  # the nearest pool case is its demo
    assert sent["great"][-3]["content"] == "great fun"

    fun = pool[0]
    refused = evaluated.cli("case", "edit", str(fun), "-e", "label=negative")
    assert refused.code == 2 and f"demo that {knn.ref} may pick" in refused.stderr
    assert evaluated.cli("case", "edit", str(fun), "--tag", "demo").code == 0  # tags change nothing it sends
    result = evaluated.cli("case", "delete", *map(str, pool), "--yes")
    assert result.code == 0 and f"the demo pool of {knn.ref}" in result.stdout
    assert evaluated.rows("select count(*) from cases where archived = 1") == [(2,)]
    assert promptlab.load_prompt(knn.ref, db=evaluated.db_path).messages(text="great") == sent["great"]


def test_runs_show_case_prints_the_messages_sent(evaluated):
    evaluated.fake.configure(record_bodies=True)
    assert evaluated.cli("eval", "--prompt", "p@2", "--name", "sent", "--no-cache").code == 0
    sent = {b["messages"][-1]["content"]: b["messages"] for b in evaluated.fake.stats()["bodies"]}
    (great,), = evaluated.rows("select id from cases where inputs like '%great%'")
    shown = json.loads(evaluated.cli("runs", "show", "sent", "--case", str(great), "--json").stdout)
    assert shown["messages"] == sent["Review: great"] and shown["prompt"] == "p@2"
    assert [r["output"] for r in shown["results"]] == ["positive"] and shown["expected"] == {"label": "positive"}
    text = evaluated.cli("runs", "show", "sent", "--case", str(great)).stdout
    assert "--- user\nReview: great" in text and "=== reply (repeat 0): score 1.0, passed\npositive" in text
    missing = evaluated.cli("runs", "show", "sent", "--case", "999")
    assert missing.code == 2 and "has no case 999" in missing.stderr


def test_prompt_delete_deletes_an_unused_version_and_archives_one_in_use(evaluated):
    assert evaluated.cli("prompt", "add", "p", "--signature", "s", "--template", "Third: {{ text }}").code == 0
    assert evaluated.cli("prompt", "add", "q", "--signature", "s", "--template", "Q {{ text }}").code == 0
    assert evaluated.cli("prompt", "add", "q", "--signature", "s", "--template", "Q2 {{ text }}").code == 0
    before = evaluated.counts()
    assert evaluated.cli("prompt", "delete", "p@1").code == 2  # no --yes
    used = evaluated.cli("prompt", "delete", "p@1", "--yes")  # r1 and r2 ran it
    assert used.code == 0 and "archived p@1" in used.stdout
    assert evaluated.counts() == before and evaluated.rows("select archived from prompts where version = 1 "
                                                          "and name = 'p'") == [(1,)]
    assert json.loads(evaluated.cli("runs", "show", "r1", "--json").stdout)["n"] == 2  # its runs still read it
    assert evaluated.cli("prompt", "show", "p@1").code == 0
    newest = evaluated.cli("prompt", "delete", "p@3", "--yes")  # unused, but the newest: number kept
    assert "archived p@3" in newest.stdout
    assert json.loads(evaluated.cli("prompt", "show", "p", "--json").stdout)["version"] == 2  # the latest
    listed = [v["version"] for v in json.loads(evaluated.cli("prompt", "list", "p", "--json").stdout)]
    assert listed == [2] and len(json.loads(evaluated.cli("prompt", "list", "p", "--all", "--json").stdout)) == 3
    evaluated.rows("update prompts set parent_id = null where name = 'q'")
    gone = evaluated.cli("prompt", "delete", "q@1", "--yes")
    assert gone.code == 0 and "deleted q@1" in gone.stdout
    assert evaluated.rows("select version from prompts where name = 'q'") == [(2,)]
    evaluated.cli("prompt", "label", "q@2", "production")
    labelled = evaluated.cli("prompt", "delete", "q@2", "--yes")
    assert labelled.code == 2 and "--remove" in labelled.stderr
    again = evaluated.cli("prompt", "add", "p", "--signature", "s", "--template", "Third: {{ text }}")
    assert "p@4" in again.stdout  # an archived version's content makes a new version, never reuses a number


def test_runs_delete_takes_the_runs_provider_batches_too(evaluated):
    (r1,), = evaluated.rows("select id from runs where name = 'r1'")
    (r2,), = evaluated.rows("select id from runs where name = 'r2'")
    for run_id, batch in ((r1, "b1"), (r2, "b2")):
        evaluated.rows("insert into batches (run_id, batch_id, status, items) values (?, ?, 'completed', '{}')",
                       (run_id, batch))
    assert evaluated.cli("runs", "delete", "r1", "--yes").code == 0
    assert evaluated.rows("select batch_id from batches") == [("b2",)]


def test_live_view_is_titled_by_its_runs_and_each_run_has_its_own_eta(monkeypatch):
    from rich.console import Console

    from promptlab.display import progress as shown
    from promptlab.progress import EvalStarted, ItemFinished, RunTotal
    from promptlab.evaluation.runner import ItemResult

    clock = [100.0]
    monkeypatch.setattr(shown.time, "monotonic", lambda: clock[0])
    view = shown.RichProgress(console=Console(file=open("/dev/null", "w")))
    view.emit(EvalStarted((RunTotal(1, "a@1 × fake", 10), RunTotal(2, "b@1 × fake", 100))))
    for i in range(5):
        view.emit(ItemFinished(ItemResult(1, i, 0)))
    view.emit(ItemFinished(ItemResult(2, 0, 0)))
    clock[0] = 110.0  # 10 s: run 1 did 5 (0.5/s, 5 left: 10 s), run 2 did 1 (0.1/s, 99 left: 990 s)
    assert view.rates(view.tallies[1]) == (0.5, "10s") and view.rates(view.tallies[2]) == (0.1, "16m30s")
    # and all runs together: 6 of 110 in 10 s, 104 left at 0.6/s
    assert view._table().title.plain == "evaluating 2 runs · 6/110, ETA 2m53s"
    one = shown.RichProgress(console=Console(file=open("/dev/null", "w")))
    one.emit(EvalStarted((RunTotal(1, "[red]a@1 × fake", 3),)))
    assert one._table().title.plain == "evaluating [red]a@1 × fake"  # names are never markup


def test_latency_leaves_out_the_wait_behind_other_calls(fake_llm):
    """Four calls through one slot: each one's latency is its own request, so they do not overlap."""
    import asyncio
    import time

    from promptlab.config import ModelConfig
    from promptlab.providers.gateway import Gateway

    fake_llm.configure(latency_ms=150)
    model = ModelConfig(alias="one", model="openai/fake", api_base=fake_llm.base_url, concurrency=1)
    gateway = Gateway(cache=None, retries=0)

    async def four():
        started = time.perf_counter()
        replies = await asyncio.gather(*(gateway.complete(model, [{"role": "user", "content": f"hi {i}"}])
                                         for i in range(4)))
        return replies, (time.perf_counter() - started) * 1000

    replies, elapsed_ms = asyncio.run(four())
    latencies = [r.latency_ms for r in replies]
    assert min(latencies) >= 150
    assert sum(latencies) <= elapsed_ms  # queued behind each other, they would add up to far more
