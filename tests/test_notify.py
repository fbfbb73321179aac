"""`--notify URL` on `run` and `optimize`: one JSON summary POSTed when the command ends; a hook
that fails is a warning, never a failed run."""

import json
import socket

import pytest

from tests.conftest import SENTIMENT_EXPERIMENT
from tests.hook_server import start_hook
from tests.test_experiment import write_cases
from tests.test_optimizers import optimize, world


@pytest.fixture
def hook():
    hook, server = start_hook()
    yield hook
    server.shutdown()


def test_run_posts_one_summary_with_scores_gates_and_report_paths(workspace, hook, tmp_path):
    write_cases(workspace)
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT)
    result = workspace.cli("run", "exp.yaml", "--notify", f"{hook.url}/done", "--report-md", "ci.md")
    assert result.code == 0, result.stderr
    assert len(hook.requests) == 1
    method, path, headers, body = hook.requests[0]
    assert (method, path, headers["content-type"]) == ("POST", "/done", "application/json")
    summary = json.loads(body)
    assert summary["passed"] is True and summary["experiment"] == "exp.yaml"
    assert summary["runs"][0]["scores"]["exact_match"] is not None
    assert [g["passed"] for g in summary["gates"]] == [True]
    assert summary["reports"] == {"report_md": str((workspace.root / "ci.md").resolve())}


def test_a_failed_gate_is_posted_too(workspace, hook):
    write_cases(workspace)
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT.replace("min_score: 0.5", "min_score: 0.99"))
    result = workspace.cli("run", "exp.yaml", "--notify", hook.url)
    assert result.code == 1
    assert json.loads(hook.requests[0][3])["passed"] is False


@pytest.mark.parametrize("status", [500, None])  # the hook fails, or nothing listens
def test_a_failing_hook_is_a_warning_not_a_failed_run(workspace, status):
    write_cases(workspace)
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT)
    if status is None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/x"
        hook = server = None
    else:
        hook, server = start_hook(status)
        url = hook.url
    try:
        result = workspace.cli("run", "exp.yaml", "--json", "--notify", url)
    finally:
        if server:
            server.shutdown()
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["passed"] is True  # stdout stays the JSON
    assert "warning: --notify" in result.stderr and "not delivered" in result.stderr
    if hook:
        assert len(hook.requests) == 1


@pytest.mark.parametrize("url", ["ftp://example.com/x", "hooks.example.com", "http://user:pw@127.0.0.1/x"])
def test_a_bad_hook_url_is_refused_before_anything_runs(workspace, url):
    write_cases(workspace)
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT)
    result = workspace.cli("run", "exp.yaml", "--notify", url)
    assert result.code == 2
    assert "--notify" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not workspace.db_path.exists()  # nothing written
    assert workspace.fake.stats()["total"] == 0


def test_optimize_posts_the_winner_and_its_diff(workspace, hook):
    world(workspace)
    result, data = optimize(workspace, "--strategy", "iterative", "--budget-calls", "120", "--seed", "1",
                            "--notify", hook.url)
    assert result.code == 0, result.stderr
    summary = json.loads(hook.requests[0][3])
    assert summary["optimization"]["winner"] == data["optimization"]["winner"]
    assert summary["optimization"]["diff"] == data["optimization"]["diff"] and summary["optimization"]["diff"]
    assert summary["passed"] is True
