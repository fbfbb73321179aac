"""`--json` outputs and reports are byte-identical on a database written before a refactor.

tests/golden/before.db and tests/golden/out/ were written by tests/golden/make_golden.py with the
code before issue 23's re-layout (rerun it only when an output changes on purpose, and say so).
"""

from pathlib import Path

import pytest

from tests.golden.commands import COMMANDS, capture, steady_terminal

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_output_on_a_database_written_before_is_unchanged(workspace, monkeypatch, name):
    steady_terminal(monkeypatch)
    expected = (GOLDEN / "out" / name).read_bytes()
    assert capture(workspace, GOLDEN / "before.db", COMMANDS[name]).decode() == expected.decode()
