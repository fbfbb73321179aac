"""Custom `module:function` metrics found next to the experiment file, and the code-execution opt-in."""

import json
import sys

EXPERIMENT = """\
project: {project}
signature:
  name: sentiment
  inputs: [text]
  outputs:
    - {{name: label, type: enum, choices: [positive, negative]}}
prompts:
  - name: one-word
    template: "Review: {{{{ text }}}}"
models: [fake]
cases:
  - {{text: a great phone, label: positive}}
  - {{text: awful battery, label: negative}}
  - {{text: great idea, awful result, label: negative}}
metrics: {metrics}
"""

METRICS_PY = '''
from promptlab.scorers import Score

def starts_with(item, prefix="p"):
    return item.output.startswith(prefix)

def agree(item):
    ok = item.parsed is not None and item.parsed["label"] == item.expected["label"]
    return Score(1.0 if ok else 0.0, ok, {{"reason": "{who}"}})

def constant(item):
    return {value}

def not_a_score(item):
    return "sure"
'''


def experiment(ws, folder, metrics, project="demo", who="first", value=0.25):
    (ws.root / folder).mkdir(exist_ok=True)
    ws.write(f"{folder}/mymetrics.py", METRICS_PY.format(who=who, value=value))
    return ws.write(f"{folder}/exp.yaml", EXPERIMENT.format(project=project, metrics=json.dumps(metrics)))


def scores_of(ws, run_name=None):
    sql = "select r.scores from results r join runs u on u.id = r.run_id"
    rows = ws.rows(sql + (" where u.name = ?" if run_name else ""), (run_name,) if run_name else ())
    return [json.loads(s) for (s,) in rows]


def test_custom_metric_next_to_the_experiment_scores_a_run(workspace):
    path = experiment(workspace, "exp", ["mymetrics:agree", {"name": "mymetrics:starts_with", "prefix": "pos"},
                                         {"name": "mymetrics:constant", "threshold": 0.2}])
    path_before, modules_before = list(sys.path), set(sys.modules)
    result = workspace.cli("run", path, "--json")  # the cwd is the workspace root, not exp/
    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    assert (run["n"], run["errors"]) == (3, 0)
    assert run["scores"] == {"mymetrics:agree": 2 / 3, "mymetrics:starts_with": 2 / 3, "mymetrics:constant": 0.25}
    assert all(s["mymetrics:agree"]["detail"] == {"reason": "first"} for s in scores_of(workspace))
    assert all(s["mymetrics:constant"]["passed"] for s in scores_of(workspace))  # 0.25 >= threshold 0.2
    # sys.path is as it was, and no top-level "mymetrics" module shadows another experiment's
    assert sys.path == path_before and "mymetrics" not in sys.modules
    assert not {m for m in set(sys.modules) - modules_before if m == "mymetrics"}
    # the run stores what to compute, never where its code was imported from
    specs = json.loads(workspace.rows("select metrics from runs")[0][0])
    assert specs[0] == {"name": "mymetrics:agree"}


def test_two_experiments_with_the_same_module_name_get_their_own(workspace):
    first = experiment(workspace, "a", ["mymetrics:constant"], project="a", value=0.25)
    second = experiment(workspace, "b", ["mymetrics:constant"], project="b", value=0.75)
    assert workspace.cli("run", first).code == 0
    result = workspace.cli("run", second, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["scores"] == {"mymetrics:constant": 0.75}


def test_missing_module_or_function_exits_2_with_one_line_and_writes_nothing(workspace):
    path = experiment(workspace, "exp", ["nomodule:score"])
    result = workspace.cli("run", path)
    assert result.code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no module 'nomodule'" in result.stderr and "put nomodule.py next to the experiment file" in result.stderr
    assert "Traceback" not in result.stderr
    counts = workspace.counts()
    assert counts.get("runs", 0) == 0 and counts.get("projects", 0) == 0

    path = experiment(workspace, "exp", ["mymetrics:nothing_here"])
    result = workspace.cli("run", path)
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "module 'mymetrics' has no function 'nothing_here'" in result.stderr
    assert "agree" in result.stderr  # it names what there is
    assert workspace.counts().get("runs", 0) == 0


def test_a_non_score_return_is_an_item_error_and_the_run_goes_on(workspace):
    path = experiment(workspace, "exp", ["exact_match", "mymetrics:not_a_score"])
    result = workspace.cli("run", path, "--json")
    assert result.code == 3, result.stderr  # every item is an error: the run failed, loudly
    run = json.loads(result.stdout)["runs"][0]
    assert (run["n"], run["errors"], run["status"]) == (3, 3, "failed")
    assert "every item failed" in run["error"] and "not_a_score" in result.stderr
    errors = workspace.rows("select error_kind, error from results")
    assert {e for e in errors} == {("scorer", "mymetrics:not_a_score returned str 'sure', not a Score, number or bool")}
    assert all(s["exact_match"]["value"] is not None for s in scores_of(workspace))


def test_eval_finds_a_custom_module_in_the_working_directory(workspace):
    assert workspace.cli("run", experiment(workspace, "exp", ["exact_match"])).code == 0
    workspace.write("local_metrics.py", "def yes(item):\n    return True\n")
    result = workspace.cli("eval", "--prompt", "one-word", "--metric", "local_metrics:yes", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["scores"] == {"local_metrics:yes": 1.0}
    result = workspace.cli("eval", "--prompt", "one-word", "--metric", "local_metrics:no")
    assert result.code == 2 and "has no function 'no'" in result.stderr


# --------------------------------------------------------------------------- python_tests opt-in

CODE_EXPERIMENT = """\
project: code
signature:
  name: solve
  inputs: [task]
  outputs: [code]
prompts:
  - name: p
    template: "Write Python: {{ task }}"
models: [fake]
cases:
  - {inputs: {task: add two numbers}, expected: {tests: "assert add(2, 3) == 5"}}
metrics: [{name: python_tests, tests_field: tests}]
"""


def test_python_tests_needs_the_projects_consent(workspace):
    workspace.fake.configure(rules=[["add two", "```python\ndef add(a, b):\n    return a + b\n```"]])
    path = workspace.write("code.yaml", CODE_EXPERIMENT)
    result = workspace.cli("run", path)
    assert result.code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "runs model-written code" in result.stderr
    assert "promptlab project add code --allow-code-execution" in result.stderr
    assert "allow_code_execution: true" in result.stderr
    assert workspace.counts().get("runs", 0) == 0 and workspace.counts().get("projects", 0) == 0

    assert workspace.cli("project", "add", "code", "--allow-code-execution").code == 0
    result = workspace.cli("run", path, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["scores"] == {"python_tests": 1.0}

    # withdrawn again: refused; the experiment file's own key allows its runs (not saved on the project)
    assert workspace.cli("project", "add", "code", "--no-allow-code-execution").code == 0
    assert workspace.cli("run", path).code == 2
    result = workspace.cli("run", workspace.write("code.yaml", CODE_EXPERIMENT + "allow_code_execution: true\n"))
    assert result.code == 0, result.stderr
    settings = json.loads(workspace.rows("select settings from projects where name = 'code'")[0][0])
    assert settings == {"allow_code_execution": False}


def test_resume_finds_the_module_the_way_a_new_run_would(workspace, monkeypatch):
    path = experiment(workspace, "exp", ["mymetrics:agree"])
    result = workspace.cli("run", path, "--json")
    assert result.code == 0, result.stderr
    name = json.loads(result.stdout)["runs"][0]["name"]
    with __import__("sqlite3").connect(workspace.db_path) as conn:  # as if killed before the last item
        conn.execute("delete from results where id = (select max(id) from results)")
        conn.execute("update runs set status = 'interrupted'")
    elsewhere = workspace.root / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not where the module is: the database does not say where it was
    resumed = workspace.cli("eval", "--resume", name)
    assert resumed.code == 2 and "no module 'mymetrics'" in resumed.stderr
    monkeypatch.chdir(workspace.root / "exp")
    resumed = workspace.cli("eval", "--resume", name, "--json")
    assert resumed.code == 0, resumed.stderr
    run = json.loads(resumed.stdout)["runs"][0]
    assert (run["n"], run["errors"], run["status"]) == (3, 0, "completed")
    assert run["scores"] == {"mymetrics:agree": 2 / 3}
