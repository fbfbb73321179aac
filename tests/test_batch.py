"""Batch mode against the loopback Files/Batches server: kills, expiry, failure, limits, cache."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.test_runs import setup_project
from tests.test_trust import _count, _spawn


def batch_settings(ws, **values) -> None:
    """A [batch] section in the workspace's promptlab.toml (polls fast by default)."""
    values = {"poll_s": 0.05, **values}
    with open(ws.root / "promptlab.toml", "a") as toml:
        toml.write("\n[batch]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))


def results(ws) -> tuple[int, int]:
    """(results, distinct (case, repeat) among them) over every run."""
    return ws.rows("select count(*), count(distinct run_id || '-' || case_id || '-' || repeat) from results")[0]


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_killed_while_waiting_then_runs_wait_finishes_without_resubmitting(workspace):
    n = 500
    setup_project(workspace, n=n)
    batch_settings(workspace, max_requests=200)
    workspace.fake.configure(batch_hold=True)  # batches stay in progress until released
    proc = _spawn(workspace, "eval", "--prompt", "p", "--batch", "--name", "big",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while _count(workspace, "select count(*) from batches") < 3 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None  # still waiting for its batches
    assert workspace.rows("select status from runs") == [("submitted",)]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert workspace.fake.stats()["batches"]["items"] == [200, 200, 100]

    workspace.fake.configure(batch_hold=False)
    waited = workspace.cli("runs", "wait", "big", "--json")
    assert waited.code == 0, waited.stderr
    run = json.loads(waited.stdout)["runs"][0]
    assert (run["status"], run["n"], run["errors"], run["scores"]["exact_match"]) == ("completed", n, 0, 1.0)
    assert results(workspace) == (n, n)  # every case done once
    stats = workspace.fake.stats()
    assert stats["batches"]["items"] == [200, 200, 100]  # nothing submitted again
    assert stats["batches"]["answered"] == n
    assert stats["by_path"].get("/v1/chat/completions", 0) == 0

    again = workspace.cli("eval", "--prompt", "p", "--batch", "--name", "again", "--json")
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["runs"][0]["cached"] == n
    assert workspace.fake.stats()["batches"]["created"] == 3  # the re-run submitted nothing

    per_call = workspace.cli("eval", "--prompt", "p", "--name", "per-call", "--json")
    assert json.loads(per_call.stdout)["runs"][0]["cached"] == n  # same cache keys as the per-call path
    assert workspace.fake.stats()["by_path"].get("/v1/chat/completions", 0) == 0


def test_an_expired_batch_resubmits_only_what_it_left_unanswered(workspace):
    setup_project(workspace, n=50)
    batch_settings(workspace)
    workspace.fake.configure(batch_expire_next=1, batch_expire_done=30)
    result = workspace.cli("eval", "--prompt", "p", "--batch", "--name", "exp", "--json")
    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    assert (run["n"], run["errors"], run["scores"]["exact_match"]) == (50, 0, 1.0)
    batches = workspace.fake.stats()["batches"]
    assert batches["items"] == [50, 20] and batches["answered"] == 50
    assert batches["statuses"] == ["expired", "completed"]
    assert workspace.rows("select status, n_items, done from batches order by id") == [
        ("expired", 50, 1), ("completed", 20, 1)]
    assert "20 of 50 items unanswered" in result.stderr


def test_a_failed_batch_is_resubmitted_and_an_item_gives_up_after_max_attempts(workspace):
    setup_project(workspace, n=10)
    batch_settings(workspace, max_attempts=2)
    workspace.fake.configure(batch_fail_next=1)
    result = workspace.cli("eval", "--prompt", "p", "--batch", "--name", "retry", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["n"] == 10
    assert workspace.fake.stats()["batches"]["items"] == [10, 10]
    assert "injected batch failure" in workspace.rows("select error from batches order by id")[0][0]

    workspace.fake.configure(batch_fail_next=2)
    result = workspace.cli("eval", "--prompt", "p", "--batch", "--no-cache", "--name", "gives-up", "--json")
    assert workspace.fake.stats()["batches"]["items"] == [10, 10, 10, 10]  # two tries, then no more
    run = json.loads(result.stdout)["runs"][0]
    assert (run["n"], run["errors"]) == (10, 10)
    assert workspace.rows("select distinct error_kind from results r join runs u on u.id = r.run_id "
                          "where u.name = 'gives-up'") == [("batch_failed",)]
    assert result.code == 3  # every item failed


def test_no_wait_returns_at_once_and_runs_wait_collects(workspace):
    setup_project(workspace, n=30)
    batch_settings(workspace)
    workspace.fake.configure(batch_hold=True, batch_list_status=404)  # a provider that cannot list batches
    submitted = workspace.cli("eval", "--prompt", "p", "--batch", "--no-wait", "--name", "later")
    assert submitted.code == 0, submitted.stderr
    assert "later" in submitted.stdout and "promptlab runs wait later" in submitted.stdout
    assert workspace.rows("select status, owner_pid from runs") == [("submitted", None)]
    assert workspace.rows("select count(*) from results") == [(0,)]
    listed = workspace.cli("runs", "list", "--status", "submitted", "--json")
    assert [r["name"] for r in json.loads(listed.stdout)] == ["later"]
    assert "30 requests (at the provider)" in workspace.cli("runs", "show", "later").stdout
    asked = workspace.cli("runs", "delete", "later")  # no terminal to ask on: refused, saying why
    assert asked.code == 2 and "1 batch(es) at the provider run on" in asked.stderr

    workspace.fake.configure(batch_hold=False)
    waited = workspace.cli("runs", "wait", "later", "--json")
    assert waited.code == 0, waited.stderr
    assert json.loads(waited.stdout)["runs"][0]["n"] == 30
    assert "cannot list the provider's batches" in waited.stderr  # said, not a failure
    assert workspace.rows("select status from runs") == [("completed",)]
    assert workspace.fake.stats()["batches"]["created"] == 1
    shown = json.loads(workspace.cli("runs", "show", "later", "--json").stdout)["batches"]
    assert [(b["status"], b["n_items"], b["done"]) for b in shown] == [("completed", 30, 1)]
    assert "(at the provider)" not in workspace.cli("runs", "show", "later").stdout


def test_batches_split_by_the_request_limit(workspace):
    setup_project(workspace, n=500)
    batch_settings(workspace, max_requests=200)
    result = workspace.cli("eval", "--prompt", "p", "--batch", "--name", "split", "--json")
    assert result.code == 0, result.stderr
    assert workspace.fake.stats()["batches"]["items"] == [200, 200, 100]
    assert json.loads(result.stdout)["runs"][0]["n"] == 500


def test_batches_split_by_the_byte_limit(workspace):
    setup_project(workspace, n=60)
    batch_settings(workspace, max_bytes=3000)
    result = workspace.cli("eval", "--prompt", "p", "--batch", "--name", "split", "--json")
    assert result.code == 0, result.stderr
    batches = workspace.fake.stats()["batches"]
    assert len(batches["items"]) > 1 and sum(batches["items"]) == 60
    assert max(batches["bytes"]) <= 3000 < batches["bytes"][0] + 200  # full batches, none over


def test_experiment_mode_batch(workspace):
    from tests.conftest import SENTIMENT_EXPERIMENT

    rows = [{"text": f"great thing {i}" if i % 2 else f"awful thing {i}",
             "label": "positive" if i % 2 else "negative"} for i in range(40)]
    workspace.write("cases.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    batch_settings(workspace)
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT.replace("repeat: 1}", "repeat: 1, mode: batch}"))
    result = workspace.cli("run", "exp.yaml", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["runs"][0]["n"] == 40
    assert workspace.fake.stats()["batches"]["items"] == [40]
    assert workspace.fake.stats()["by_path"].get("/v1/chat/completions", 0) == 0
    assert workspace.rows("select mode, status from runs") == [("batch", "completed")]

    local = SENTIMENT_EXPERIMENT.replace("repeat: 1}", "repeat: 1, mode: batch}").replace(
        "models: [fake]", "models: [local]").replace("project: demo", "project: elsewhere")
    workspace.write("local.yaml", local)
    refused = workspace.cli("run", "local.yaml")
    assert refused.code == 2 and "has no batch API" in refused.stderr
    assert workspace.rows("select name from projects") == [("demo",)]  # nothing written


def test_auto_mode_batches_only_from_the_threshold(workspace):
    setup_project(workspace, n=30)
    batch_settings(workspace, auto_threshold=20)
    small = workspace.cli("eval", "--prompt", "p", "--mode", "auto", "--limit", "10", "--name", "small")
    assert small.code == 0, small.stderr
    assert workspace.fake.stats()["by_path"]["/v1/chat/completions"] == 10
    assert workspace.fake.stats()["batches"]["created"] == 0
    large = workspace.cli("eval", "--prompt", "p", "--mode", "auto", "--name", "large", "--json")
    assert large.code == 0, large.stderr
    assert json.loads(large.stdout)["runs"][0]["cached"] == 10
    assert workspace.fake.stats()["batches"]["items"] == [20]  # the 10 cached ones never submitted
    assert workspace.rows("select name, mode from runs order by id") == [("small", "call"), ("large", "batch")]


def test_batch_mode_refuses_a_provider_without_batches_before_writing(workspace):
    setup_project(workspace, n=5)
    refused = workspace.cli("eval", "--prompt", "p", "--model", "local", "--batch")
    assert refused.code == 2 and "has no batch API" in refused.stderr
    assert workspace.rows("select count(*) from runs") == [(0,)]
    assert workspace.cli("eval", "--prompt", "p", "--no-wait").code == 2  # --no-wait needs batches
    assert workspace.rows("select count(*) from runs") == [(0,)]
    assert workspace.cli("eval", "--prompt", "p", "--name", "calls").code == 0
    refused = workspace.cli("eval", "--resume", "calls", "--no-wait")  # a per-call run
    assert refused.code == 2 and "--no-wait is for batch mode" in refused.stderr
    assert workspace.cli("eval", "--prompt", "p", "--batch", "--mode", "call").code == 2


def test_batch_results_cost_the_batch_price(workspace):
    setup_project(workspace, n=20)
    batch_settings(workspace)
    with open(workspace.root / "promptlab.toml", "a") as toml:  # a model litellm has prices for
        toml.write(f'\n[models.mini]\nmodel = "openai/gpt-4o-mini"\napi_base = "{workspace.fake.base_url}"\n')
    batched = workspace.cli("eval", "--prompt", "p", "--model", "mini", "--batch", "--name", "b", "--json")
    assert batched.code == 0, batched.stderr
    per_call = workspace.cli("eval", "--prompt", "p", "--model", "mini", "--no-cache", "--name", "c", "--json")
    assert per_call.code == 0, per_call.stderr
    batch_cost, call_cost = (json.loads(r.stdout)["runs"][0]["cost"] for r in (batched, per_call))
    assert batch_cost > 0 and batch_cost == pytest.approx(call_cost / 2)  # OpenAI's batch price: half
    tokens = workspace.rows("select sum(r.prompt_tokens), sum(r.completion_tokens) from results r "
                            "join runs u on u.id = r.run_id where u.name = 'b'")[0]
    assert batch_cost == pytest.approx(tokens[0] * 0.075e-6 + tokens[1] * 0.3e-6)  # gpt-4o-mini's batch rates

    unpriced = workspace.cli("eval", "--prompt", "p", "--batch", "--no-cache", "--name", "u", "--json")
    assert json.loads(unpriced.stdout)["runs"][0]["cost"] is None  # unknown price: n/a, never 0


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_batch_status_changes_are_shown_and_a_second_wait_is_refused(workspace):
    setup_project(workspace, n=10)
    batch_settings(workspace)
    workspace.fake.configure(batch_hold=True)
    assert workspace.cli("eval", "--prompt", "p", "--batch", "--no-wait", "--name", "w").code == 0
    proc = _spawn(workspace, "runs", "wait", "w", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while _count(workspace, "select count(*) from batches where status = 'in_progress'") == 0 and proc.poll() is None:
        time.sleep(0.05)  # the waiter has seen the batch at work
    second = workspace.cli("runs", "wait", "w")
    assert second.code == 2 and f"pid {proc.pid}" in second.stderr
    workspace.fake.configure(batch_hold=False)
    assert proc.wait() == 0
    progress = proc.stderr.read()
    assert "in_progress (0/10)" in progress and "completed (10/10)" in progress, progress
    assert "batches: 1 submitted, 1 completed" in progress
    assert workspace.fake.stats()["batches"]["answered"] == 10


def test_requests_a_batch_answered_with_an_error_are_scored_as_errors_not_resubmitted(workspace):
    setup_project(workspace, n=10)
    batch_settings(workspace)
    workspace.fake.configure(always_status_if_contains={"thing 3": 400, "thing 4": 503})
    result = workspace.cli("eval", "--prompt", "p", "--batch", "--name", "errs", "--json")
    kinds = dict(workspace.rows("select c.inputs, r.error_kind from results r join cases c on c.id = r.case_id"))
    assert kinds['{"text": "great thing 3"}'] == "bad_request"  # permanent: stored once
    assert kinds['{"text": "awful thing 4"}'] == "server"  # transient: asked again, then gave up
    assert sum(kind is None for kind in kinds.values()) == 8
    assert workspace.fake.stats()["batches"]["items"] == [10, 1, 1]  # only the 503 was resubmitted
    assert json.loads(result.stdout)["runs"][0]["errors"] == 2


def test_eval_resume_of_a_batch_run_waits_for_its_batches(workspace):
    setup_project(workspace, n=10)
    batch_settings(workspace)
    workspace.fake.configure(batch_hold=True)
    assert workspace.cli("eval", "--prompt", "p", "--batch", "--no-wait", "--name", "r").code == 0
    workspace.fake.configure(batch_hold=False)
    resumed = workspace.cli("eval", "--resume", "r", "--json")
    assert resumed.code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["runs"][0]["n"] == 10
    assert workspace.fake.stats()["batches"]["created"] == 1


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_killed_while_submitting_then_runs_wait_submits_only_the_rest(workspace):
    setup_project(workspace, n=500)
    batch_settings(workspace, max_requests=200)
    workspace.fake.configure(batch_hold=True, batch_create_hang_after=1)  # the second create never returns
    proc = _spawn(workspace, "eval", "--prompt", "p", "--batch", "--name", "big",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while _count(workspace, "select count(*) from batches") < 1 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert workspace.fake.stats()["batches"]["items"] == [200]

    workspace.fake.configure(batch_hold=False, batch_create_hang_after=None)
    waited = workspace.cli("runs", "wait", "big", "--json")
    assert waited.code == 0, waited.stderr
    assert json.loads(waited.stdout)["runs"][0]["n"] == 500
    assert results(workspace) == (500, 500)
    batches = workspace.fake.stats()["batches"]
    assert batches["items"] == [200, 200, 100] and batches["answered"] == 500  # no item sent twice


def test_a_batch_the_provider_no_longer_knows_is_submitted_again(workspace):
    setup_project(workspace, n=10)
    batch_settings(workspace)
    workspace.fake.configure(batch_hold=True)
    assert workspace.cli("eval", "--prompt", "p", "--batch", "--no-wait", "--name", "lost").code == 0
    workspace.fake.reset()  # the server forgets every file and batch
    workspace.fake.configure(rules=[["great", "positive"], ["awful", "negative"]])
    waited = workspace.cli("runs", "wait", "lost", "--json")
    assert waited.code == 0, waited.stderr
    assert json.loads(waited.stdout)["runs"][0]["n"] == 10
    assert workspace.rows("select status, done from batches order by id") == [("lost", 1), ("completed", 1)]
    assert workspace.fake.stats()["batches"]["items"] == [10]


def test_metrics_that_call_a_model_score_batch_replies(workspace):
    setup_project(workspace, n=6)
    batch_settings(workspace)
    result = workspace.cli("eval", "--prompt", "p", "--batch", "--json",
                           "--metric", 'embedding_similarity:{"model": "fake", "field": "label"}')
    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    assert (run["n"], run["errors"]) == (6, 0)
    assert run["scores"]["embedding_similarity"] == pytest.approx(1.0)  # same words, same vectors
    assert workspace.fake.stats()["by_path"]["/v1/embeddings"] >= 1  # scored per call, through the gateway


def test_a_completed_batch_without_its_output_file_yet_is_read_again_not_resubmitted(workspace):
    setup_project(workspace, n=10)
    batch_settings(workspace)
    workspace.fake.configure(batch_output_lag=2)
    result = workspace.cli("eval", "--prompt", "p", "--batch", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["n"] == 10
    assert workspace.fake.stats()["batches"]["items"] == [10]


def test_unreadable_batch_output_is_data_not_a_crash(workspace):
    setup_project(workspace, n=10)
    batch_settings(workspace, max_attempts=2)
    workspace.fake.configure(batch_garble_if_contains=["thing 3", "thing 6"])
    result = workspace.cli("eval", "--prompt", "p", "--batch", "--json")
    assert workspace.fake.stats()["batches"]["items"] == [10, 2]  # the two asked again, once
    kinds = dict(workspace.rows("select c.inputs, r.error_kind from results r join cases c on c.id = r.case_id"))
    assert kinds['{"text": "great thing 3"}'] == kinds['{"text": "awful thing 6"}'] == "bad_response"
    assert sum(kind is None for kind in kinds.values()) == 8
    assert "1 unreadable or unknown output lines" in result.stderr and json.loads(result.stdout)["runs"][0]["errors"] == 2


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_ctrl_c_while_waiting_leaves_the_run_submitted(workspace):
    setup_project(workspace, n=10)
    batch_settings(workspace)
    workspace.fake.configure(batch_hold=True)
    proc = _spawn(workspace, "eval", "--prompt", "p", "--batch", "--name", "big", "--repeat", "2",
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while _count(workspace, "select count(*) from batches where status = 'in_progress'") == 0 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait() == 130
    assert "promptlab runs wait big" in proc.stderr.read()
    assert workspace.rows("select status, owner_pid from runs") == [("submitted", None)]

    workspace.fake.configure(batch_hold=False)
    waited = workspace.cli("runs", "wait", "big", "--json")
    assert json.loads(waited.stdout)["runs"][0]["n"] == 20  # both repeats of every case
    assert results(workspace) == (20, 20)
    assert workspace.fake.stats()["batches"]["items"] == [20]


def test_a_request_larger_than_any_batch_is_an_error_the_rest_go_out(workspace):
    setup_project(workspace, texts=["great one", "awful two", "great " + "long " * 200, "awful four"])
    batch_settings(workspace, max_bytes=600)
    result = workspace.cli("eval", "--prompt", "p", "--batch", "--json")
    assert workspace.fake.stats()["batches"]["items"] == [3]
    assert workspace.rows("select error_kind, count(*) from results group by 1 order by 1") == [
        (None, 3), ("too_large", 1)]
    assert json.loads(result.stdout)["runs"][0]["errors"] == 1


def test_an_openai_compatible_server_takes_batches_whatever_its_route(workspace):
    setup_project(workspace, n=5)
    batch_settings(workspace)
    with open(workspace.root / "promptlab.toml", "a") as toml:
        toml.write(f'\n[models.vllm]\nmodel = "hosted_vllm/fake"\napi_base = "{workspace.fake.base_url}"\n')
    result = workspace.cli("eval", "--prompt", "p", "--model", "vllm", "--batch", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["n"] == 5
    assert workspace.fake.stats()["batches"]["items"] == [5]


def test_polling_backs_off_while_nothing_moves(monkeypatch):
    import asyncio

    from promptlab.evaluation import batch
    from promptlab.config import BatchConfig
    from promptlab.progress import SilentProgress

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    class Store:
        def heartbeat(self, table, ids) -> None:
            pass

    monkeypatch.setattr(batch.asyncio, "sleep", sleep)
    batches = batch._Batches(Store(), BatchConfig(poll_s=8), 0, 1.0, SilentProgress())
    waits = []
    for changed in (True, False, False, False, False, True, False):
        batches.changed = batches.changed or changed
        slept.clear()
        asyncio.run(batches.pause([1]))
        waits.append(sum(slept))
    assert waits == [1, 2, 4, 8, 8, 1, 2]


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_rerunning_an_experiment_waits_for_its_killed_batch_run(workspace):
    from tests.conftest import SENTIMENT_EXPERIMENT

    rows = [{"text": f"great thing {i}" if i % 2 else f"awful thing {i}",
             "label": "positive" if i % 2 else "negative"} for i in range(30)]
    workspace.write("cases.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    batch_settings(workspace, auto_threshold=20)
    workspace.write("exp.yaml", SENTIMENT_EXPERIMENT.replace("repeat: 1}", "repeat: 1, mode: auto}"))
    workspace.fake.configure(batch_hold=True)
    proc = _spawn(workspace, "run", "exp.yaml", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while _count(workspace, "select count(*) from batches") < 1 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    workspace.fake.configure(batch_hold=False)
    again = workspace.cli("run", "exp.yaml", "--json")
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["runs"][0]["n"] == 30
    assert workspace.rows("select mode, status from runs") == [("batch", "completed")]  # the same run
    assert workspace.fake.stats()["batches"]["items"] == [30]  # waited for, not sent again
    assert workspace.fake.stats()["by_path"].get("/v1/chat/completions", 0) == 0


def test_runs_list_counts_a_submitted_runs_results_as_they_arrive(workspace):
    setup_project(workspace, n=10)
    batch_settings(workspace)
    assert workspace.cli("eval", "--prompt", "p", "--limit", "4", "--name", "first").code == 0
    workspace.fake.configure(batch_hold=True)
    assert workspace.cli("eval", "--prompt", "p", "--batch", "--no-wait", "--name", "later").code == 0
    with sqlite3.connect(workspace.db_path) as db:  # as while a waiter ingests: its summary not yet rewritten
        db.execute("update runs set n_results = 0 where name = 'later'")
    listed = {r["name"]: r for r in json.loads(workspace.cli("runs", "list", "--json").stdout)}
    assert (listed["later"]["status"], listed["later"]["n"]) == ("submitted", 4)  # the 4 cached ones


def test_a_batch_created_but_never_stored_is_adopted_not_sent_again(workspace, monkeypatch):
    from promptlab.evaluation import batch

    setup_project(workspace, n=500)
    batch_settings(workspace, max_requests=200)
    workspace.fake.configure(batch_hold=True)
    keep = batch._Batches.keep

    def killed_after_the_second_create(self, plan, created, items):
        if workspace.fake.stats()["batches"]["created"] == 2:
            raise SystemExit(137)  # the process dies after the provider took the batch, before the commit
        keep(self, plan, created, items)

    monkeypatch.setattr(batch._Batches, "keep", killed_after_the_second_create)
    assert workspace.cli("eval", "--prompt", "p", "--batch", "--name", "big").code == 137
    assert workspace.rows("select count(*) from batches") == [(1,)]  # the second one is unknown here
    monkeypatch.setattr(batch._Batches, "keep", keep)

    workspace.fake.configure(batch_hold=False)
    waited = workspace.cli("runs", "wait", "big", "--json")
    assert waited.code == 0, waited.stderr
    assert "found batch" in waited.stderr
    assert results(workspace) == (500, 500)
    assert workspace.fake.stats()["batches"]["items"] == [200, 200, 100]  # the orphan waited for, not resent


def test_gates_apply_when_the_results_are_in(workspace):
    setup_project(workspace, texts=["great a", "awful b", "great c", "meh d"])  # the fake answers d wrongly
    batch_settings(workspace)
    refused = workspace.cli("eval", "--prompt", "p", "--batch", "--no-wait", "--min-score", "0.9")
    assert refused.code == 2 and "runs wait" in refused.stderr  # never silently dropped
    assert workspace.rows("select count(*) from runs") == [(0,)]

    workspace.fake.configure(batch_hold=True)
    assert workspace.cli("eval", "--prompt", "p", "--batch", "--no-wait", "--name", "g").code == 0
    workspace.fake.configure(batch_hold=False)
    waited = workspace.cli("runs", "wait", "g", "--min-score", "0.9", "--junit", "ci.xml", "--json")
    assert waited.code == 1 and "min_score" in waited.stderr
    report = json.loads(waited.stdout)
    assert report["passed"] is False and report["runs"][0]["scores"]["exact_match"] == 0.75
    assert "<testsuite" in (workspace.root / "ci.xml").read_text()
    again = workspace.cli("runs", "wait", "g", "--min-score", "0.5")  # completed: gated the same way
    assert again.code == 0 and "0.750" in again.stdout
    assert workspace.cli("runs", "wait", "g", "--min-score", "0.9").code == 1


def test_a_batch_request_is_the_per_call_request(workspace):
    setup_project(workspace, n=1)
    batch_settings(workspace)
    workspace.fake.configure(record_bodies=True)
    params = ("--param", "temperature=0", "--param", "max_tokens=5")
    assert workspace.cli("eval", "--prompt", "p", "--no-cache", *params).code == 0
    assert workspace.cli("eval", "--prompt", "p", "--no-cache", "--batch", *params).code == 0
    per_call, batched = workspace.fake.stats()["bodies"]
    assert batched == {k: per_call[k] for k in ("model", "messages", "temperature", "max_tokens")}
