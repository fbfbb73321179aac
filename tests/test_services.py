"""The services decide without printing: what ends a command and how to continue it."""

from types import SimpleNamespace

from promptlab.evaluation.gates import GateResult
from promptlab.services.evaluate import EvaluateRequest, resume_hint
from promptlab.services.gates import Verdict


def gate(passed: bool) -> GateResult:
    return GateResult(name="min_score", passed=passed, actual=0.5, limit=0.8, message="")


def test_a_run_that_did_not_complete_outranks_a_failed_gate():
    completed, failed = {"status": "completed"}, {"status": "interrupted"}
    assert Verdict([completed], [gate(True)]).exit_code == 0
    assert Verdict([completed], [gate(True), gate(False)]).exit_code == 1
    assert Verdict([completed, failed], [gate(False)]).exit_code == 3
    assert Verdict([completed, failed], []).failed_runs == [failed]


def test_the_resume_hint_names_the_command_for_each_run(tmp_path):
    from promptlab.store import open_store

    store = open_store(tmp_path / "db.sqlite")
    project_id = store.ensure_project("only")
    plans = [SimpleNamespace(run_id=1, name="calls", project_id=project_id),
             SimpleNamespace(run_id=2, name="batched", project_id=project_id),
             SimpleNamespace(run_id=3, name="more", project_id=project_id)]
    request = EvaluateRequest(plans, concurrency=8, use_cache=True, batch=frozenset({2}), rerun="promptlab run x.yaml")
    assert resume_hint(store, request) == ("`promptlab eval --resume calls --resume more` then "
                                           "`promptlab runs wait batched`, "
                                           "or re-run `promptlab run x.yaml`, which continues them")
    store.ensure_project("other")  # now the project must be named, or the command asks which
    plans[1].name = "batched 2"  # and a name with a space is quoted for the shell
    assert resume_hint(store, request) == (
        "`promptlab eval --resume calls --resume more --project only` then "
        "`promptlab runs wait 'batched 2' --project only`, "
        "or re-run `promptlab run x.yaml`, which continues them")


def test_concurrency_is_the_first_one_given_else_the_workspace_default():
    from promptlab.config import Defaults, Settings

    settings = Settings(defaults=Defaults(concurrency=3))
    assert settings.concurrency(None, 4) == 4
    assert settings.concurrency("auto", 4) == "auto"
    assert settings.concurrency(None, None) == 3


def test_preparing_an_experiment_plans_its_runs_with_the_requests_overrides(workspace, capsys):
    from pathlib import Path

    from promptlab.config import load_settings
    from promptlab.services.experiment import ExperimentRequest, check, prepare
    from promptlab.store import open_store
    from tests.conftest import SENTIMENT_EXPERIMENT

    workspace.write("cases.jsonl", '{"text": "great", "label": "positive"}\n{"text": "awful", "label": "negative"}\n')
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT)
    settings = load_settings()
    request = ExperimentRequest(Path("exp.yaml"), limit=1, concurrency=2, use_cache=False, gates={"min_score": 0.9})
    checked = check(settings, request)
    assert checked.gates == {"min_score": 0.9}  # the request's gate over the file's 0.5
    assert not workspace.db_path.exists()  # checking the file touches no database
    store = open_store(settings.db_path)
    prepared = prepare(store, settings, request, checked)
    assert prepared.evaluation.concurrency == 2 and prepared.evaluation.use_cache is False
    assert [len(p.cases) for p in prepared.evaluation.plans] == [1]
    assert prepared.evaluation.rerun == "promptlab run exp.yaml"
    assert store.db.execute("select status from runs").fetchall() == [("running",)]
    assert capsys.readouterr() == ("", "")  # a service never prints
