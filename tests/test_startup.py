"""Commands that only read the store start light: no litellm, no runner (scorers, numpy), no optuna,
and none of the optimizers but their names (only `optimize --help` reads the strategies' knobs)."""

import subprocess
import sys

import pytest

from promptlab.optimizers import STRATEGIES, knob_help

HEAVY = ("litellm", "promptlab.evaluation.runner", "numpy", "promptlab.optimizers.base", "optuna",
         *(target.partition(":")[0] for target in STRATEGIES.values()))
PROBE = ("import sys\n"
         "from promptlab.cli import main\n"
         "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         f"print(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)")


def _imported(workspace, command: list[str]) -> tuple[str, str]:
    """(the heavy modules that `promptlab COMMAND` imported, its stdout)."""
    done = subprocess.run([sys.executable, "-c", PROBE, *command], cwd=workspace.root, capture_output=True,
                          text=True, timeout=120)
    return (done.stderr.strip().splitlines() or [""])[-1], done.stdout


@pytest.mark.parametrize("command", [["runs", "list"], ["prompt", "list"], ["--help"]])
def test_listing_commands_import_neither_litellm_nor_the_runner(workspace, command):
    assert workspace.cli("project", "add", "demo").code == 0
    heavy, _ = _imported(workspace, command)
    assert heavy == "", heavy


def test_optimize_help_reads_the_knobs_of_every_strategy(workspace):
    heavy, out = _imported(workspace, ["optimize", "--help"])
    assert set(heavy.split()) >= {target.partition(":")[0] for target in STRATEGIES.values()}
    assert "optuna" not in heavy.split()  # only running mipro or params imports it
    assert out.index("Options:") < out.index("Knobs (--knob NAME=VALUE)")  # below the options: "see below"
    assert all(line in out for line in knob_help().splitlines())
