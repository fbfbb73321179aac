"""`promptlab eval` over the loopback server: injected failures, permanent errors, auth, resume."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time


def takes_ctrl_c(then=None):
    """A preexec_fn: the child takes SIGINT as from a terminal even when the suite runs as a
    background job (whose shell ignores SIGINT, and children inherit that), then `then`."""
    def child() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if then is not None:
            then()
    return child


def setup_project(ws, n=20, texts=None):
    texts = texts or [f"great thing {i}" if i % 2 else f"awful thing {i}" for i in range(n)]
    rows = [{"text": t, "label": "positive" if "great" in t else "negative"} for t in texts]
    ws.sentiment_project(rows)


def test_injected_transient_failures_all_succeed(workspace, call_path):
    setup_project(workspace, n=60)
    workspace.fake.configure(fail_rate=0.2, fail_statuses=[429, 500, 503], retry_after="0", seed=7)
    result = workspace.cli("eval", "--prompt", "p", "--concurrency", "8", "--json")
    assert result.code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    assert (run["n"], run["errors"]) == (60, 0)
    assert run["scores"]["exact_match"] == 1.0
    stats = workspace.fake.stats()
    assert sum(v for k, v in stats["by_status"].items() if k != "200") > 0  # failures really happened
    attempts = workspace.rows("select sum(attempts), max(attempts) from results")[0]
    assert attempts[0] == stats["total"] and attempts[1] > 1


def test_always_400_is_called_once_and_counted_as_error(workspace, call_path):
    setup_project(workspace, n=10)
    workspace.fake.configure(always_status_if_contains={"BROKEN": 400})
    assert workspace.cli("prompt", "add", "bad", "--signature", "sentiment", "--template",
                         "BROKEN {{ text }}").code == 0
    result = workspace.cli("eval", "--prompt", "bad", "--json")
    run = json.loads(result.stdout)["runs"][0]
    assert (run["n"], run["errors"]) == (10, 10)
    assert workspace.fake.stats()["total"] == 10  # one call per case, no retries
    kinds = workspace.rows("select error_kind, attempts from results")
    assert set(kinds) == {("bad_request", 1)}
    assert result.code == 3  # the failure threshold stopped the run as failed


def test_auth_failure_stops_the_run_with_exit_3(workspace, call_path):
    setup_project(workspace, n=30)
    workspace.fake.configure(always_status_if_contains={"Review": 401})
    result = workspace.cli("eval", "--prompt", "p", "--concurrency", "2")
    assert result.code == 3
    assert "authentication failed" in result.stderr
    assert workspace.fake.stats()["total"] <= 2  # stopped at once, not once per case
    assert workspace.rows("select status from runs") == [("failed",)]

    # the key fixed, a resume asks again for what the provider refused: every result is a reply
    workspace.fake.configure(always_status_if_contains={})
    (name,) = workspace.rows("select name from runs")[0]
    resumed = workspace.cli("eval", "--resume", name, "--json")
    assert resumed.code == 0, resumed.stderr
    assert workspace.rows("select status from runs") == [("completed",)]
    assert workspace.rows("select count(*), count(distinct case_id), count(error_kind) from results") == [(30, 30, 0)]


def test_resume_asks_again_for_items_the_provider_failed(workspace):
    setup_project(workspace, n=6)
    toml = workspace.root / "promptlab.toml"
    toml.write_text(toml.read_text().replace('model = "fake"\n', 'model = "fake"\nretries = 0\n', 1))
    workspace.fake.configure(always_status_if_contains={"Review": 503})
    failed = workspace.cli("eval", "--prompt", "p", "--name", "r")
    assert failed.code == 3 and workspace.rows("select status from runs") == [("failed",)]
    assert workspace.rows("select count(*), count(error_kind) from results") == [(6, 6)]

    workspace.fake.configure(always_status_if_contains={})       # the provider is back
    resumed = workspace.cli("eval", "--resume", "r", "--json")
    assert resumed.code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["runs"][0]["errors"] == 0
    assert workspace.rows("select count(*), count(distinct case_id), count(error_kind) from results") == [(6, 6, 0)]
    assert workspace.rows("select status from runs") == [("completed",)]


def test_duplicate_run_name_is_bad_input(workspace):
    setup_project(workspace, n=4)
    assert workspace.cli("eval", "--prompt", "p", "--name", "r1").code == 0
    again = workspace.cli("eval", "--prompt", "p", "--name", "r1")
    assert again.code == 2 and "already exists" in again.stderr


def test_repeat_and_no_cache(workspace):
    setup_project(workspace, n=4)
    result = workspace.cli("eval", "--prompt", "p", "--repeat", "3", "--json")
    run = json.loads(result.stdout)["runs"][0]
    assert run["n"] == 12
    assert workspace.rows("select count(distinct repeat) from results") == [(3,)]
    calls = workspace.fake.requests_total()
    workspace.cli("eval", "--prompt", "p", "--no-cache")
    assert workspace.fake.requests_total() == calls + 4


def test_sigkill_then_resume_finishes_every_case_once(workspace):
    n, concurrency = 120, 4
    setup_project(workspace, n=n)
    workspace.fake.configure(latency_ms=40)
    env = {**os.environ, "PROMPTLAB_CONFIG": str(workspace.root / "promptlab.toml")}
    proc = subprocess.Popen([sys.executable, "-m", "promptlab", "eval", "--prompt", "p", "--name", "r",
                             "--concurrency", str(concurrency), "--no-cache"],
                            cwd=workspace.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = 0
    while done < n // 3 and proc.poll() is None:
        time.sleep(0.1)
        if workspace.db_path.exists():
            try:
                done = workspace.rows("select count(*) from results")[0][0]
            except sqlite3.OperationalError:  # tables not created yet
                pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < done < n, proc.stderr.read().decode()[-500:]
    assert workspace.rows("select status from runs") == [("running",)]
    listed = workspace.cli("runs", "list", "--json")           # the listing knows its owner is gone
    assert [(r["status"], r["owner_gone"]) for r in json.loads(listed.stdout)] == [("running", True)]
    assert "owner gone: --resume it" in workspace.cli("runs", "list").stdout

    result = workspace.cli("eval", "--resume", "r", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["n"] == n
    assert workspace.rows("select count(*), count(distinct case_id) from results") == [(n, n)]
    assert workspace.rows("select status from runs") == [("completed",)]
    assert workspace.fake.stats()["repeated_attempts"] <= concurrency


def test_runs_list_tells_a_live_owner_from_a_gone_one(workspace):
    from promptlab.store.lease import HOST

    setup_project(workspace, n=2)
    assert workspace.cli("eval", "--prompt", "p", "--name", "r").code == 0
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for pid, gone in ((live.pid, False), (dead.pid, True)):
            with sqlite3.connect(workspace.db_path) as conn:
                conn.execute("update runs set status = 'running', owner_host = ?, owner_pid = ?",
                             (HOST, pid))
            listed = json.loads(workspace.cli("runs", "list", "--json").stdout)
            assert [(r["status"], r["owner_gone"]) for r in listed] == [("running", gone)]
    finally:
        live.kill()
        live.wait()


def test_resume_of_completed_run_is_refused(workspace):
    setup_project(workspace, n=3)
    workspace.cli("eval", "--prompt", "p", "--name", "done")
    result = workspace.cli("eval", "--resume", "done")
    assert result.code == 2 and "already completed" in result.stderr


def test_ctrl_c_leaves_the_run_interrupted_and_resumable(workspace):
    n = 80
    setup_project(workspace, n=n)
    workspace.fake.configure(latency_ms=50)
    env = {**os.environ, "PROMPTLAB_CONFIG": str(workspace.root / "promptlab.toml")}
    proc = subprocess.Popen([sys.executable, "-m", "promptlab", "eval", "--prompt", "p", "--name", "r",
                             "--concurrency", "2"],
                            cwd=workspace.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=takes_ctrl_c())
    done = 0
    while done < 10 and proc.poll() is None:
        time.sleep(0.1)
        try:
            done = workspace.rows("select count(*) from results")[0][0]
        except sqlite3.OperationalError:
            pass
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate()[1].decode()
    assert proc.returncode == 130, stderr
    assert "--resume r" in stderr and "Traceback" not in stderr
    assert workspace.rows("select status from runs") == [("interrupted",)]
    saved = workspace.rows("select count(*) from results")[0][0]
    assert 0 < saved < n

    result = workspace.cli("eval", "--resume", "r", "--json")
    assert result.code == 0 and json.loads(result.stdout)["runs"][0]["n"] == n
    assert workspace.rows("select status from runs") == [("completed",)]
