"""The services decide without printing: what ends a command and how to continue it."""

from types import SimpleNamespace

from promptlab.gates import GateResult
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


def test_the_resume_hint_names_the_command_for_each_run():
    plans = [SimpleNamespace(run_id=1, name="calls"), SimpleNamespace(run_id=2, name="batched")]
    request = EvaluateRequest(plans, concurrency=8, use_cache=True, batch=frozenset({2}), rerun="promptlab run x.yaml")
    assert resume_hint(request) == ("`promptlab eval --resume calls` then `promptlab runs wait batched`, "
                                    "or re-run `promptlab run x.yaml`, which continues them")


def test_concurrency_is_the_first_one_given_else_the_workspace_default():
    from promptlab.config import Defaults, Settings

    settings = Settings(defaults=Defaults(concurrency=3))
    assert settings.concurrency(None, 4) == 4
    assert settings.concurrency("auto", 4) == "auto"
    assert settings.concurrency(None, None) == 3
