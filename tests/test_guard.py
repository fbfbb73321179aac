"""`promptlab guard`: optimize a labelled prompt only below the threshold and after the cooldown;
pause after three triggered optimizations without a significant lift; every decision stored."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_optimizers import RULES, world


def guard(ws, *args):
    result = ws.cli("guard", "--project", "p", "--json", *args)
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


def labelled(ws, rules=RULES, default="maybe"):
    world(ws)
    ws.fake.configure(rules=rules, default_reply=default)
    assert ws.cli("prompt", "label", "clf@1", "production", "--project", "p").code == 0


RUN = ("--prompt", "clf@production", "--below", "0.8", "--strategy", "iterative", "--budget-calls", "120",
       "--seed", "1")


def test_below_the_threshold_it_optimizes_once_then_waits_for_the_cooldown(workspace):
    labelled(workspace)
    result, first = guard(workspace, *RUN, "--cooldown", "24h")
    assert result.code == 0, result.stderr
    assert first["decision"] == "ran" and first["score"] == 0.0 and first["significant"]
    assert first["optimization"] and first["optimization_report"]["improved"]
    assert "promptlab prompt label" in first["message"]  # not promoted unless asked
    optimizations = workspace.rows("select count(*) from optimizations")[0][0]

    result, again = guard(workspace, *RUN, "--cooldown", "24h")
    assert result.code == 1
    assert again["decision"] == "skipped: cooldown" and "next may start after" in again["message"]
    assert workspace.rows("select count(*) from optimizations")[0][0] == optimizations
    assert workspace.rows("select decision, exit_code from guard_decisions order by id") == \
        [("ran", 0), ("skipped: cooldown", 1)]

    result, promoted = guard(workspace, *RUN, "--cooldown", "0s", "--promote")
    assert result.code == 0 and "moved to it" in promoted["message"]
    result, above = guard(workspace, *RUN, "--cooldown", "0s")  # the label now names the winner
    assert result.code == 0 and above["decision"] == "skipped: above threshold" and above["score"] == 1.0


def test_three_triggered_runs_without_gain_pause_it(workspace):
    labelled(workspace, rules=[RULES[0]])  # the proposer answers; nothing makes the task model right
    run = (*RUN[:-4], "--budget-calls", "40", "--cooldown", "0s")
    for i in range(3):
        result, decision = guard(workspace, *run)
        assert result.code == 1, result.stderr
        assert decision["decision"] == "ran" and not decision["significant"]
    assert "now paused" in decision["message"]
    result, paused = guard(workspace, *run)
    assert result.code == 0 and paused["decision"] == "skipped: paused" and paused["run"] is None
    result, status = guard(workspace, "--prompt", "clf", "--status")
    assert result.code == 0 and status["paused"] and status["no_gain"] == 3
    assert [d["decision"] for d in status["decisions"]] == ["skipped: paused", "ran", "ran", "ran"]
    result, resumed = guard(workspace, "--prompt", "clf", "--resume")
    assert not resumed["paused"] and resumed["no_gain"] == 0
    assert workspace.cli("guard", "--project", "p", "--prompt", "clf", "--pause").code == 0
    result, status = guard(workspace, "--prompt", "clf", "--status")
    assert status["paused"] and status["paused_reason"] == "paused by hand"


def test_bad_input_is_exit_2_and_stores_nothing(workspace):
    labelled(workspace)
    for args, words in ((("--prompt", "clf@production", "--below", "0.8", "--cooldown", "soon"), "--cooldown"),
                        (("--prompt", "clf@nolabel", "--below", "0.8"), "nolabel"),
                        (("--prompt", "clf@production"), "--below"),
                        (("--prompt", "clf", "--pause", "--resume"), "one of"),
                        (("--prompt", "clf@production", "--below", "0.8", "--strategy", "magic"), "magic")):
        result = workspace.cli("guard", "--project", "p", *args)
        assert result.code == 2 and words in result.stderr, (args, result.stderr)
    assert workspace.rows("select count(*) from guard_decisions")[0][0] == 0
    assert workspace.rows("select count(*) from runs")[0][0] == 0


@pytest.mark.slow  # real processes
def test_two_guards_started_together_optimize_once(workspace):
    labelled(workspace)
    env = {**os.environ, "PROMPTLAB_CONFIG": str(workspace.root / "promptlab.toml"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-m", "promptlab", "guard", "--project", "p", *RUN, "--cooldown", "1h",
                               "--json", "--progress", "none"], cwd=workspace.root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    decisions = sorted(json.loads(p.communicate()[0])["decision"] for p in procs)
    assert decisions == ["ran", "skipped: cooldown"]
    assert workspace.rows("select count(*) from optimizations")[0][0] == 1
