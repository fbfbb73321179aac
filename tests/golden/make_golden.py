"""Writes tests/golden/before.db and the outputs of read-only commands over it (tests/golden/out/).

Run once with the code *before* a refactor that must not change behaviour (it was, before issue 23's
re-layout): `python -m pytest tests/golden/make_golden.py -p no:cacheprovider -q`.
tests/test_golden_outputs.py then proves the current code prints the same bytes on that database.
"""

import shutil
import sqlite3
from pathlib import Path

from tests.golden.commands import COMMANDS, capture, steady_terminal
from tests.seeing import evaluate, rules, setup_project

HERE = Path(__file__).resolve().parent


def test_make_golden(workspace, monkeypatch):
    steady_terminal(monkeypatch)
    setup_project(workspace, n=12)
    workspace.fake.configure(rules=rules(broken=(1, 4), replies={3: "<b>maybe</b>"}))
    evaluate(workspace, "p@1", "r1")
    evaluate(workspace, "p@2", "r2")
    assert workspace.cli("eval", "--prompt", "p@1", "--batch", "--name", "b1", "--metric", "exact_match",
                         "--json").code == 0
    result = workspace.cli("optimize", "--prompt", "p", "--strategy", "bootstrap", "--knob", "use_proposer=false",
                           "--knob", "candidates=2", "--budget-calls", "80", "--name", "opt", "--quiet", "--json")
    assert result.code == 0, result.stderr
    (HERE / "before.db").unlink(missing_ok=True)
    with sqlite3.connect(workspace.db_path) as source, sqlite3.connect(HERE / "before.db") as copy:
        source.backup(copy)  # the WAL's pages too
    with sqlite3.connect(HERE / "before.db") as copy:
        copy.execute("pragma journal_mode = delete")
    out = HERE / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for name, args in COMMANDS.items():
        result = capture(workspace, HERE / "before.db", args)
        (out / name).write_bytes(result)
