"""Trust the data: many processes on one database, a full disk, run ownership, loud provider failures.

Every fault here is real: real processes for concurrency, a real RLIMIT_FSIZE
for the full disk, SIGKILL for a dead owner.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from tests.test_runs import setup_project, takes_ctrl_c


def _env(ws, **extra) -> dict:
    return {**os.environ, "PROMPTLAB_CONFIG": str(ws.root / "promptlab.toml"), **extra}


def _spawn(ws, *args, preexec_fn=None, **popen) -> subprocess.Popen:
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "promptlab", *args], cwd=ws.root, env=_env(ws),
                            preexec_fn=takes_ctrl_c(preexec_fn), **popen)


def _count(ws, sql: str, params=()) -> int:
    try:
        return ws.rows(sql, params)[0][0]
    except sqlite3.OperationalError:  # not created yet, or busy for a moment
        return 0


def _wait_for_results(ws, proc, at_least: int) -> int:
    done = 0
    while done < at_least and proc.poll() is None:
        time.sleep(0.05)
        done = _count(ws, "select count(*) from results")
    return done


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_many_processes_share_one_database(workspace):
    """Three evals, an optimize and a case import side by side: all exit 0, nothing lost or doubled."""
    n = 150
    setup_project(workspace, n=n)
    for i in range(3):
        assert workspace.cli("prompt", "add", f"p{i}", "--signature", "sentiment", "--template",
                             f"Variant {i}. Review: {{{{ text }}}}").code == 0
    more = [{"text": f"great extra {i}", "label": "positive"} for i in range(3000)]
    workspace.write("more.jsonl", "".join(json.dumps(r) + "\n" for r in more))
    assert workspace.cli("project", "add", "other").code == 0  # the import goes there
    assert workspace.cli("signature", "add", "sentiment", "--project", "other", "--input", "text",
                         "--output", "label:enum:positive,negative").code == 0
    workspace.fake.configure(latency_ms=3, rules=[["great", "positive"], ["awful", "negative"]])

    procs = []
    for i in range(3):
        procs.append(_spawn(workspace, "eval", "--project", "demo", "--prompt", f"p{i}", "--name", f"r{i}",
                            "--concurrency", "8", "--json"))
        time.sleep(0.15)
    procs.append(_spawn(workspace, "optimize", "--project", "demo", "--prompt", "p", "--strategy", "bootstrap",
                        "--budget-calls", "400", "--name", "opt", "--json"))
    procs.append(_spawn(workspace, "case", "import", "more.jsonl", "--project", "other"))
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err.decode()[-800:]

    for i in range(3):
        run_id, status, planned = workspace.rows("select id, status, json_array_length(case_ids) from runs "
                                                 "where name = ?", (f"r{i}",))[0]
        assert status == "completed" and planned == n
        assert workspace.rows("select count(*), count(distinct case_id) from results where run_id = ?",
                              (run_id,)) == [(n, n)]
    assert workspace.rows("select status from optimizations") == [("completed",)]
    assert workspace.rows("select count(*) from runs where status != 'completed'") == [(0,)]
    # every run holds exactly what it planned, each item once
    for run_id, planned in workspace.rows("select id, json_array_length(case_ids) * repeat from runs"):
        assert workspace.rows("select count(*) from results where run_id = ?", (run_id,))[0][0] == planned
    assert _count(workspace, "select count(*) from cases") == n + len(more)


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_stops_the_run_and_resume_completes_it(workspace):
    n, concurrency = 600, 4
    setup_project(workspace, n=n)
    workspace.fake.configure(latency_ms=2)
    wal = workspace.db_path.with_name(workspace.db_path.name + "-wal")
    sizes = [workspace.db_path.stat().st_size, wal.stat().st_size if wal.exists() else 0]
    limit = max(sizes) + 300_000  # the write-ahead log reaches this mid-run
    proc = _spawn(workspace, "eval", "--prompt", "p", "--name", "full", "--concurrency", str(concurrency),
                  preexec_fn=_limit_file_size(limit))
    _, err = proc.communicate(timeout=300)
    err = err.decode()
    assert proc.returncode not in (0, None), err
    lines = [line for line in err.splitlines() if line.startswith("promptlab: error")]
    assert len(lines) == 1 and str(workspace.db_path) in lines[0] and "--resume full" in lines[0], err
    assert "Traceback" not in err

    stored = _count(workspace, "select count(*) from results")
    assert 0 < stored < n
    # no provider calls after the failure beyond those in flight (and those finished in its last tick)
    assert workspace.fake.stats()["total"] <= stored + 2 * concurrency
    status, error = workspace.rows("select status, error from runs where name = 'full'")[0]
    assert status == "interrupted" and "disk full" in error

    result = workspace.cli("eval", "--resume", "full", "--json")
    assert result.code == 0, result.stderr
    assert workspace.rows("select count(*), count(distinct case_id) from results") == [(n, n)]
    assert workspace.rows("select status from runs") == [("completed",)]


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_resume_of_a_live_run_is_refused_and_a_killed_one_resumes(workspace):
    n = 60
    setup_project(workspace, n=n)
    workspace.fake.configure(latency_ms=100)
    proc = _spawn(workspace, "eval", "--prompt", "p", "--name", "live", "--concurrency", "2",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert 0 < _wait_for_results(workspace, proc, 4) < n
    refused = workspace.cli("eval", "--resume", "live")
    assert refused.code == 2
    assert f"pid {proc.pid}" in refused.stderr and "still running" in refused.stderr
    calls_before_kill = workspace.fake.requests_total()

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = workspace.cli("eval", "--resume", "live", "--json")
    assert result.code == 0, result.stderr
    assert workspace.rows("select count(*), count(distinct case_id) from results") == [(n, n)]
    assert workspace.fake.requests_total() - calls_before_kill <= n  # the refused resume sent nothing


def test_resume_of_a_live_optimization_is_refused(workspace):
    setup_project(workspace, n=40)
    workspace.fake.configure(latency_ms=150)
    proc = _spawn(workspace, "optimize", "--prompt", "p", "--strategy", "iterative", "--budget-calls", "200",
                  "--name", "o", "--concurrency", "2", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_results(workspace, proc, 2)
        refused = workspace.cli("optimize", "--resume", "o")
        assert refused.code == 2 and f"pid {proc.pid}" in refused.stderr, refused.stderr
    finally:
        proc.kill()
        proc.wait()


def test_unset_key_variable_is_bad_input_before_any_call(workspace):
    setup_project(workspace, n=5)
    with open(workspace.root / "promptlab.toml", "a") as config:
        config.write('\n[models.keyed]\nmodel = "openai/gpt-4o-mini"\napi_key_env = "PL_TEST_UNSET_KEY"\n'
                     '\n[models.bare]\nmodel = "anthropic/claude-3-5-haiku-latest"\n')
    env = {k: v for k, v in _env(workspace).items() if k not in ("PL_TEST_UNSET_KEY", "ANTHROPIC_API_KEY")}
    probe = ("import sys\nfrom promptlab.cli import main\ntry:\n    main(sys.argv[1:])\n"
             "finally:\n    print('litellm imported:', 'litellm' in sys.modules, file=sys.stderr)\n")
    for model, variable in (("keyed", "PL_TEST_UNSET_KEY"), ("bare", "ANTHROPIC_API_KEY")):
        proc = subprocess.run([sys.executable, "-c", probe, "eval", "--prompt", "p", "--model", model],
                              cwd=workspace.root, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert variable in proc.stderr and "litellm imported: False" in proc.stderr
    assert workspace.fake.requests_total() == 0
    assert workspace.rows("select count(*) from runs") == [(0,)]


def test_missing_credentials_are_auth_errors_never_retried():
    from promptlab.providers.gateway import classify

    error = classify(Exception("OpenAIException - Missing credentials. Please pass an `api_key`"))
    assert error.kind == "auth" and not error.transient


def test_every_item_failing_exits_3_with_the_reason_kept(workspace):
    setup_project(workspace, n=6)  # below the failure threshold's minimum: only "all failed" can catch it
    workspace.fake.configure(always_status_if_contains={"Review": 400})
    result = workspace.cli("eval", "--prompt", "p", "--name", "bad")
    assert result.code == 3
    assert "every item failed" in result.stderr and "bad_request" in result.stderr
    status, error = workspace.rows("select status, error from runs")[0]
    assert status == "failed" and "bad_request" in error


def test_auth_failure_keeps_its_reason(workspace):
    setup_project(workspace, n=6)
    workspace.fake.configure(always_status_if_contains={"Review": 401})
    result = workspace.cli("--debug", "eval", "--prompt", "p")
    assert result.code == 3  # --debug shows the traceback but keeps the exit code
    status, error = workspace.rows("select status, error from runs")[0]
    assert status == "failed" and "authentication failed" in error


def test_null_content_is_a_bad_response_and_not_cached(workspace, call_path):
    setup_project(workspace, n=4)
    workspace.fake.configure(null_content=True)
    result = workspace.cli("eval", "--prompt", "p")
    assert result.code == 3
    assert set(workspace.rows("select error_kind from results")) == {("bad_response",)}
    assert workspace.rows("select count(*) from response_cache") == [(0,)]


def test_a_closed_stderr_does_not_kill_the_run(workspace):
    n = 40
    setup_project(workspace, n=n)
    workspace.fake.configure(latency_ms=20)
    read, write = os.pipe()
    os.close(read)  # every write to stderr now fails with EPIPE
    proc = _spawn(workspace, "eval", "--prompt", "p", "--name", "piped", "--concurrency", "2",
                  stdout=subprocess.DEVNULL, stderr=write)
    os.close(write)
    proc.wait(timeout=300)
    assert workspace.rows("select status from runs") == [("completed",)]
    assert workspace.rows("select count(*) from results") == [(n,)]


def test_resume_keeps_no_cache_and_measures_the_whole_run(workspace):
    n = 40
    setup_project(workspace, n=n)
    assert workspace.cli("eval", "--prompt", "p").code == 0  # every reply is now cached
    workspace.fake.configure(latency_ms=60)
    proc = _spawn(workspace, "eval", "--prompt", "p", "--name", "fresh", "--no-cache", "--concurrency", "2",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_id = None
    while proc.poll() is None and run_id is None:
        time.sleep(0.05)
        run_id = _count(workspace, "select max(id) from runs where name = 'fresh'") or None
    while proc.poll() is None and _count(workspace, "select count(*) from results where run_id = ?",
                                         (run_id,)) < n // 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = _count(workspace, "select count(*) from results where run_id = ?", (run_id,))
    calls = workspace.fake.requests_total()
    result = workspace.cli("eval", "--resume", "fresh", "--json")
    assert result.code == 0, result.stderr
    assert workspace.fake.requests_total() - calls == n - stored  # no cache on resume either
    # calls/s is this session's rate: its items over its own time, not all items over its time
    run = json.loads(result.stdout)["runs"][0]
    active_s = workspace.rows("select active_s from runs where name = 'fresh'")[0][0]
    assert run["calls_per_s"] == pytest.approx((n - stored) / active_s, rel=0.05)


def test_database_is_private(workspace):
    setup_project(workspace, n=2)
    assert stat.S_IMODE(workspace.db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(workspace.db_path.parent.stat().st_mode) == 0o700
