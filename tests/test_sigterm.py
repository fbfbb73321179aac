"""SIGTERM (CI runners, `timeout`, docker stop) is Ctrl-C: the command stops, its finished results
saved, the run interrupted and resumable. A few rounds at random points in eval, optimize and
`runs wait`, each resumed, lose and duplicate nothing (bench/sigterm_resume.py runs 200)."""

import random
import signal
import time

import pytest

from tests.sigterm_rounds import Tally, batch_wait_rounds, eval_rounds, optimize_rounds
from tests.test_runs import setup_project
from tests.test_trust import _count, _spawn


@pytest.mark.slow  # seconds: real processes and signals
def test_sigterm_mid_eval_leaves_the_run_interrupted_and_resumable(workspace):
    setup_project(workspace, n=40)
    workspace.fake.configure(latency_ms=50)
    proc = _spawn(workspace, "eval", "--prompt", "p", "--name", "t", "--concurrency", "2")
    while _count(workspace, "select count(*) from results") < 4 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate()[1].decode()
    assert proc.returncode == 130, err
    assert "--resume t" in err and "Traceback" not in err
    assert workspace.rows("select status from runs") == [("interrupted",)]
    kept = workspace.rows("select case_id, output from results")
    resumed = workspace.cli("eval", "--resume", "t")
    assert resumed.code == 0, resumed.stderr
    after = dict(workspace.rows("select case_id, output from results"))
    assert len(after) == 40 and all(after[case] == out for case, out in kept)


@pytest.mark.slow
@pytest.mark.parametrize("rounds", [pytest.param((eval_rounds, 4), id="eval"),
                                    pytest.param((optimize_rounds, 3), id="optimize"),
                                    pytest.param((batch_wait_rounds, 4), id="runs wait")])
def test_sigterm_at_random_points_then_resume_loses_and_duplicates_nothing(workspace, rounds):
    play, count = rounds
    tally = Tally()
    play(workspace, count, random.Random(20), tally)
    assert not tally.problems, tally.problems
    assert tally.rounds >= count - 1
    assert tally.interrupted + tally.finished == tally.rounds
