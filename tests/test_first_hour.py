"""What a newcomer trips on in the first hour (issue 22): matrices, the current project, hints that
run as printed, validated case edits, read commands with --json, names that are easy to type."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.test_runs import setup_project, takes_ctrl_c


def two_models(ws) -> None:
    """A second alias for the fake server, so a matrix has two models."""
    toml = ws.root / "promptlab.toml"
    toml.write_text(toml.read_text() + f'\n[models.other]\nmodel = "openai/other"\napi_base = "{ws.fake.base_url}"\n')


# ---- eval: prompts × models ---------------------------------------------------
def test_repeated_prompt_and_model_make_every_pair_a_run(workspace):
    ws = workspace
    setup_project(ws, n=4)
    two_models(ws)
    assert ws.cli("prompt", "add", "q", "--signature", "sentiment", "--template", "Text: {{ text }}").code == 0
    result = ws.cli("eval", "--prompt", "p", "--prompt", "q", "--model", "fake", "--model", "other", "--json")
    assert result.code == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert sorted(r["name"] for r in runs) == ["p@1-fake", "p@1-other", "q@1-fake", "q@1-other"]
    assert all(r["n"] == 4 for r in runs)
    models = {m for (m,) in ws.rows("select model_name from runs")}
    assert models == {"openai/fake", "openai/other"}
    # the table shows the four runs at once
    table = ws.cli("eval", "--prompt", "p", "--prompt", "q", "--model", "fake", "--model", "other")
    assert table.code == 0 and all(f"{p}@1-{m}-2" in table.stdout for p in "pq" for m in ("fake", "other"))


def test_a_named_matrix_adds_what_sets_each_run_apart(workspace):
    ws = workspace
    setup_project(ws, n=2)
    two_models(ws)
    result = ws.cli("eval", "--prompt", "p", "--model", "fake", "--model", "other", "--name", "night", "--json")
    assert sorted(r["name"] for r in json.loads(result.stdout)["runs"]) == ["night-fake", "night-other"]
    one = ws.cli("eval", "--prompt", "p", "--name", "solo", "--json")
    assert [r["name"] for r in json.loads(one.stdout)["runs"]] == ["solo"]


def test_a_matrix_is_refused_whole_before_anything_is_written(workspace):
    ws = workspace
    setup_project(ws, n=2)
    before = ws.counts()["runs"]
    bad = ws.cli("eval", "--prompt", "p", "--model", "fake", "--model", "nope")
    assert bad.code == 2 and "nope" in bad.stderr
    twice = ws.cli("eval", "--prompt", "p", "--prompt", "p")
    assert twice.code == 2 and "--prompt p is given twice" in twice.stderr
    assert ws.counts()["runs"] == before


def test_a_matrix_has_one_exit_code_and_a_failed_run_names_its_first_error(workspace):
    ws = workspace
    setup_project(ws, n=10)
    ws.fake.configure(always_status_if_contains={"BROKEN": 400}, rules=[["great", "positive"], ["awful", "negative"]])
    assert ws.cli("prompt", "add", "bad", "--signature", "sentiment", "--template", "BROKEN {{ text }}").code == 0
    result = ws.cli("eval", "--prompt", "p", "--prompt", "bad")
    assert result.code == 3  # one run failed: the matrix fails
    assert "p@1-fake" in result.stdout and "bad@1-fake" in result.stdout  # one table for both
    line = next(l for l in result.stderr.splitlines() if "run 'bad@1-fake' failed" in l)
    assert "items failed" in line and "the first: bad_request:" in line  # the cause, not only a count
    assert dict(ws.rows("select name, status from runs")) == {"p@1-fake": "completed", "bad@1-fake": "failed"}


def test_auto_names_count_up_instead_of_a_timestamp(workspace):
    ws = workspace
    setup_project(ws, n=2)
    names = [json.loads(ws.cli("eval", "--prompt", "p", "--json").stdout)["runs"][0]["name"] for _ in range(3)]
    assert names == ["p@1-fake", "p@1-fake-2", "p@1-fake-3"]


def test_experiment_reruns_get_short_names(workspace):
    from tests.conftest import SENTIMENT_EXPERIMENT

    ws = workspace
    ws.write("cases.jsonl", '{"text": "great", "label": "positive"}\n{"text": "awful", "label": "negative"}\n')
    ws.write("exp.yaml", SENTIMENT_EXPERIMENT)
    names = []
    for _ in range(2):
        result = ws.cli("run", "exp.yaml", "--no-cache", "--json")
        assert result.code == 0, result.stderr
        names += [r["name"] for r in json.loads(result.stdout)["runs"]]
    assert names == ["one-word@1-fake", "one-word@1-fake-2"]


# ---- the current project, and hints that run as printed -----------------------
def test_the_current_project_comes_from_the_flag_env_project_use_then_the_toml(workspace, monkeypatch):
    ws = workspace
    setup_project(ws, n=2)  # project demo
    assert ws.cli("project", "add", "other").code == 0
    refused = ws.cli("runs", "list")
    assert refused.code == 2 and "promptlab project use NAME" in refused.stderr
    toml = ws.root / "promptlab.toml"
    toml.write_text(toml.read_text().replace("[defaults]\n", '[defaults]\nproject = "demo"\n'))
    assert ws.cli("case", "list", "--json").code == 0  # demo's cases, from the toml
    assert ws.cli("project", "use", "--json").stdout.count("promptlab.toml") == 1
    assert ws.cli("project", "use", "other").code == 0  # project use wins over the toml
    assert json.loads(ws.cli("case", "list", "--json").stdout) == []
    assert json.loads(ws.cli("project", "use", "--json").stdout) == {"project": "other",
                                                                      "from": "`promptlab project use`"}
    listed = json.loads(ws.cli("project", "list", "--json").stdout)
    assert {p["name"]: p["current"] for p in listed} == {"demo": False, "other": True}
    monkeypatch.setenv("PROMPTLAB_PROJECT", "demo")  # the environment wins over project use
    assert len(json.loads(ws.cli("case", "list", "--json").stdout)) == 2
    assert ws.cli("case", "list", "--project", "other", "--json").stdout.strip() == "[]"  # and the flag over all
    monkeypatch.setenv("PROMPTLAB_PROJECT", "nope")
    missing = ws.cli("case", "list")
    assert missing.code == 2 and "no project 'nope'" in missing.stderr and "PROMPTLAB_PROJECT" in missing.stderr
    monkeypatch.delenv("PROMPTLAB_PROJECT")
    unknown = ws.cli("project", "use", "nope")
    assert unknown.code == 2 and "no project 'nope'" in unknown.stderr
    assert ws.cli("project", "use", "--unset").code == 0
    assert "from [defaults] project" in ws.cli("project", "use").stdout


def _interrupt(ws, *args: str, after_results: int = 5) -> str:
    """Run the CLI in a process, Ctrl-C it once some results are stored; its stderr."""
    env = {**os.environ, "PROMPTLAB_CONFIG": str(ws.root / "promptlab.toml")}
    proc = subprocess.Popen([sys.executable, "-m", "promptlab", *args], cwd=ws.root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=takes_ctrl_c())
    done = 0
    while done < after_results and proc.poll() is None:
        time.sleep(0.05)
        try:
            done = ws.rows("select count(*) from results")[0][0]
        except sqlite3.OperationalError:
            pass
    assert proc.poll() is None, f"it finished before it could be interrupted: {proc.communicate()[1].decode()}"
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate()[1].decode()
    assert proc.returncode == 130, stderr
    return stderr


def _hints(stderr: str) -> list[list[str]]:
    """Every command the message asks to run, as words."""
    return [shlex.split(c)[1:] for c in re.findall(r"`(promptlab [^`]+)`", stderr)]


@pytest.mark.slow
def test_the_hint_after_ctrl_c_in_eval_runs_as_printed_with_two_projects(workspace):
    ws = workspace
    setup_project(ws, n=60)
    assert ws.cli("project", "add", "zzz").code == 0
    ws.fake.configure(latency_ms=40)
    stderr = _interrupt(ws, "eval", "--project", "demo", "--prompt", "p", "--name", "live 1", "--concurrency", "2")
    [hint] = _hints(stderr)
    assert hint == ["eval", "--resume", "live 1", "--project", "demo"]
    ws.fake.configure(latency_ms=0)
    again = ws.cli(*hint, "--json")
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["runs"][0]["n"] == 60


@pytest.mark.slow
def test_the_hints_after_ctrl_c_in_run_run_as_printed_with_two_projects(workspace):
    from tests.conftest import SENTIMENT_EXPERIMENT

    ws = workspace
    ws.write("cases.jsonl", "".join(json.dumps({"text": f"great {i}", "label": "positive"}) + "\n"
                                    for i in range(60)))
    ws.write("my exp.yaml", SENTIMENT_EXPERIMENT.replace("concurrency: 8", "concurrency: 2"))
    assert ws.cli("project", "add", "zzz").code == 0
    ws.fake.configure(latency_ms=40)
    stderr = _interrupt(ws, "run", "my exp.yaml")
    resume, rerun = _hints(stderr)
    assert resume == ["eval", "--resume", "one-word@1-fake", "--project", "demo"]
    assert rerun == ["run", "my exp.yaml"]
    ws.fake.configure(latency_ms=0)
    result = ws.cli(*resume, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["n"] == 60


@pytest.mark.slow
def test_the_hint_after_ctrl_c_in_optimize_runs_as_printed_with_two_projects(workspace):
    from tests.test_optimizers import RULES, world

    ws = workspace
    world(ws, n=16)  # project p
    assert ws.cli("project", "add", "zzz").code == 0
    ws.fake.configure(rules=RULES[1:], default_reply="maybe", latency_ms=30)
    stderr = _interrupt(ws, "optimize", "--project", "p", "--prompt", "clf@1", "--strategy", "mcts",
                        "--budget-calls", "300", "--knob", "demos_per_step=1", "--concurrency", "2",
                        after_results=20)
    [hint] = _hints(stderr)
    assert hint == ["optimize", "--resume", "clf-mcts", "--project", "p"]
    ws.fake.configure(latency_ms=0)
    again = ws.cli(*hint, "--json")
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["optimization"]["status"] == "completed"


# ---- case edit ----------------------------------------------------------------
def _person_project(ws) -> int:
    ws.write("people.jsonl", json.dumps({"text": "Ann is 30, happy", "name": "Ann", "age": 30, "mood": "positive"}) + "\n")
    for args in (("project", "add", "people"),
                 ("signature", "add", "person", "--input", "text", "--output", "name",
                  "--output", "age:int", "--output", "mood:enum:positive,negative"),
                 ("case", "import", "people.jsonl")):
        assert ws.cli(*args).code == 0, args
    return ws.rows("select id from cases")[0][0]


def _expected(ws, case_id: int) -> dict:
    return json.loads(ws.rows("select expected from cases where id = ?", (case_id,))[0][0])


def test_case_edit_validates_as_import_does_and_merges(workspace):
    ws = workspace
    case_id = _person_project(ws)
    before = _expected(ws, case_id)
    for value, named in (("mood=neutral", "mood"), ("age=notanumber", "age"), ("agee=31", "agee")):
        result = ws.cli("case", "edit", str(case_id), "-e", value)
        assert result.code == 2 and named in result.stderr, (value, result.stderr)
        assert _expected(ws, case_id) == before  # nothing written
    # the same checks as import: the same words for the same bad value
    ws.write("bad.jsonl", json.dumps({"text": "x", "name": "A", "age": 1, "mood": "neutral"}) + "\n")
    imported = ws.cli("case", "import", "bad.jsonl")
    edited = ws.cli("case", "edit", str(case_id), "-e", "mood=neutral")
    assert imported.stderr.split(": field")[-1].split("expected 'mood'")[-1] == \
        edited.stderr.split("expected 'mood'")[-1]
    assert ws.cli("case", "edit", str(case_id), "-e", "age=31").code == 0
    assert _expected(ws, case_id) == {"name": "Ann", "age": 31, "mood": "positive"}  # the others kept


def test_case_edit_replace_cannot_drop_a_declared_output(workspace):
    ws = workspace
    case_id = _person_project(ws)
    dropped = ws.cli("case", "edit", str(case_id), "-e", "age=31", "--replace")
    assert dropped.code == 2 and "drop the expected 'name'" in dropped.stderr
    nulled = ws.cli("case", "edit", str(case_id), "-e", "name=null")
    assert nulled.code == 2 and "'name'" in nulled.stderr
    whole = ws.cli("case", "edit", str(case_id), "-e", "name=Bo", "-e", "age=2", "-e", "mood=negative", "--replace")
    assert whole.code == 0, whole.stderr
    assert _expected(ws, case_id) == {"name": "Bo", "age": 2, "mood": "negative"}


def test_a_run_shows_the_expected_value_it_was_scored_against(workspace):
    ws = workspace
    setup_project(ws, n=2)
    assert ws.cli("eval", "--prompt", "p", "--name", "before").code == 0
    case_id = ws.rows("select id from cases where inputs like '%great%'")[0][0]
    edited = ws.cli("case", "edit", str(case_id), "-e", "label=negative")
    assert edited.code == 0 and "keep the expected output they were scored against" in edited.stderr
    shown = json.loads(ws.cli("runs", "show", "before", "--case", str(case_id), "--json").stdout)
    assert shown["expected"] == {"label": "positive"} and shown["results"][0]["passed"]  # history as it was
    assert "expected {\"label\": \"positive\"}" in ws.cli("runs", "show", "before", "--case", str(case_id)).stdout
    assert ws.cli("eval", "--prompt", "p", "--name", "after").code == 0
    [failed] = json.loads(ws.cli("runs", "show", "after", "--json").stdout)["failed"]
    assert failed["case_id"] == case_id and failed["expected"] == {"label": "negative"}
    compared = json.loads(ws.cli("runs", "compare", "before", "after", "--json").stdout)
    assert compared["regressed"][0]["expected"] == {"label": "negative"}  # B's, as B was scored


# ---- read commands speak JSON; bad setup is exit 2 ----------------------------
READ_COMMANDS = [("project", "list"), ("project", "show"), ("project", "use"), ("signature", "list"),
                 ("signature", "show"), ("prompt", "list"), ("prompt", "show"), ("prompt", "diff"),
                 ("prompt", "log"), ("case", "list"), ("runs", "list"), ("runs", "show"), ("runs", "compare"),
                 ("cache", "stats"), ("models", "list"), ("models", "check")]


def test_every_read_command_takes_json():
    import typer

    from promptlab.cli import app

    root = typer.main.get_command(app)
    for group, name in READ_COMMANDS:
        command = root.commands[group].commands[name]
        assert any("--json" in getattr(p, "opts", ()) for p in command.params), f"{group} {name}"


def test_signature_show_prompt_diff_and_models_check_print_json(workspace):
    ws = workspace
    setup_project(ws, n=2)
    signature = json.loads(ws.cli("signature", "show", "sentiment", "--json").stdout)
    assert signature["name"] == "sentiment" and signature["outputs"][0]["choices"] == ["positive", "negative"]
    assert ws.cli("prompt", "add", "p", "--template", "Say: {{ text }}").code == 0
    diff = json.loads(ws.cli("prompt", "diff", "p@1", "p@2", "--json").stdout)
    assert (diff["a"], diff["b"], diff["same"]) == ("p@1", "p@2", False)
    assert "+Say: {{ text }}" in diff["diff"] and "-Review: {{ text }}" in diff["diff"]
    assert json.loads(ws.cli("prompt", "diff", "p@1", "p@1", "--json").stdout)["same"] is True
    checked = ws.cli("models", "check", "fake", "--json")
    assert checked.code == 0, checked.stderr
    data = json.loads(checked.stdout)
    assert data["ok"] is True and data["model"] == "fake" and data["reply"] == "neutral"


def test_models_check_without_the_local_extra_is_bad_setup(workspace, monkeypatch):
    from promptlab.providers import gateway as lm

    monkeypatch.setattr(lm, "LOCAL_EXTRA", ("llama_cpp", "no_such_package_for_promptlab"))
    result = workspace.cli("models", "check", "local")
    assert result.code == 2
    assert "no_such_package_for_promptlab is not installed" in result.stderr and "[local]" in result.stderr
    assert workspace.fake.stats()["total"] == 0


# ---- listing optimizations, completing names, the README agreeing with the help --------
def test_optimizations_list_shows_each_search_with_its_outcome(workspace):
    from tests.test_optimizers import world

    ws = workspace
    world(ws)
    assert json.loads(ws.cli("optimizations", "list", "--project", "p", "--json").stdout) == []
    for _ in range(2):
        result = ws.cli("optimize", "--project", "p", "--prompt", "clf@1", "--strategy", "bootstrap",
                        "--budget-calls", "120", "--quiet", "--json")
        assert result.code == 0, result.stderr
    listed = json.loads(ws.cli("optimizations", "list", "--project", "p", "--json").stdout)
    assert [o["name"] for o in listed] == ["clf-bootstrap-2", "clf-bootstrap"]  # newest first, short names
    assert all(o["status"] == "completed" and o["base"] == "clf@1" and o["strategy"] == "bootstrap"
               for o in listed)
    table = ws.cli("optimizations", "list", "--project", "p")
    assert table.code == 0 and "clf-bootstrap-2" in table.stdout


def _complete(ws, line: str) -> list[str]:
    """What the shell would offer after `line` (bash completion, as `--install-completion` sets up)."""
    env = {**os.environ, "PROMPTLAB_CONFIG": str(ws.root / "promptlab.toml"), "_PROMPTLAB_COMPLETE": "complete_bash",
           "COMP_WORDS": line, "COMP_CWORD": str(len(line.split()) - (0 if line.endswith(" ") else 1))}
    out = subprocess.run([sys.executable, "-m", "promptlab"], cwd=ws.root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_the_shell_completes_project_run_prompt_and_optimization_names(workspace):
    ws = workspace
    setup_project(ws, n=2)  # project demo, prompt p
    assert ws.cli("project", "add", "other").code == 0
    assert ws.cli("eval", "--prompt", "p", "--name", "nightly", "--project", "demo").code == 0
    assert ws.cli("prompt", "label", "p@1", "production", "--project", "demo").code == 0
    assert _complete(ws, "promptlab project use ") == ["demo", "other"]
    assert _complete(ws, "promptlab runs list --project o") == ["other"]
    assert _complete(ws, "promptlab runs show n") == ["nightly"]
    assert _complete(ws, "promptlab runs show --project other ") == []  # the project's runs only
    assert _complete(ws, "promptlab eval --prompt p") == ["p", "p@1", "p@production"]
    assert _complete(ws, "promptlab eval --resume ") == ["nightly"]
    assert _complete(ws, "promptlab prompt diff p@") == ["p@1", "p@production"]
    before = sorted(p.name for p in ws.root.rglob("*"))
    assert _complete(ws, "promptlab --db nowhere.db runs show ") == []  # no database: nothing, none made
    assert sorted(p.name for p in ws.root.rglob("*")) == before


def test_the_readme_and_the_help_name_the_same_strategies():
    from pathlib import Path

    from promptlab.optimizers import STRATEGIES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Optimizers"):]
    section = section[:section.index("\n## ")]
    usage = next(line for line in readme.splitlines() if line.startswith("promptlab optimize --prompt"))
    for name in STRATEGIES:
        assert f"`{name}`" in section, name
    assert usage.split("--strategy ")[1].split()[0] == "|".join(STRATEGIES)


def test_a_backslash_n_in_a_template_gets_a_hint(workspace):
    ws = workspace
    setup_project(ws, n=2)
    typed = ws.cli("prompt", "add", "sms", "--template", "SMS: {{ text }}\\nLabel:")
    assert typed.code == 0
    assert "not a line break" in typed.stderr and "$'" in typed.stderr
    stored = json.loads(ws.cli("prompt", "show", "sms", "--json").stdout)
    assert stored["template"] == "SMS: {{ text }}\\nLabel:"  # stored as given, as documented
    real = ws.cli("prompt", "add", "sms", "--template", "SMS: {{ text }}\nLabel:")
    assert real.code == 0 and real.stderr == ""


def test_view_without_its_extra_names_the_extra(workspace, monkeypatch):
    """The README's first install once lacked the view extra: `view` died on `No module named
    'starlette'` (its guard imported Starlette before the check). Now it names the extra, exit 2."""
    from promptlab.cli import view

    setup_project(workspace, n=1)
    monkeypatch.setattr(view, "VIEW_EXTRA", ("starlette", "no_such_package_for_promptlab"))
    result = workspace.cli("view", "--port", "0")
    assert result.code == 2
    assert "view extra (no_such_package_for_promptlab is not installed)" in result.stderr
    assert "pip install" in result.stderr and "[view]" in result.stderr and "unexpected" not in result.stderr
