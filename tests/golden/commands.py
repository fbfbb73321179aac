"""The read-only commands whose output must not change across a refactor (see make_golden.py)."""

import shutil
import tempfile
from pathlib import Path

COMMANDS = {
    "runs-list.json": ("runs", "list", "--json"),
    "runs-list.txt": ("runs", "list"),
    "runs-show-r1.json": ("runs", "show", "r1", "--json"),
    "runs-show-r1.txt": ("runs", "show", "r1"),
    "runs-show-b1.json": ("runs", "show", "b1", "--json"),
    "runs-compare.json": ("runs", "compare", "r1", "r2", "--json"),
    "runs-compare.txt": ("runs", "compare", "r1", "r2"),
    "report-r1.json": ("report", "r1", "-f", "json"),
    "report-r1.md": ("report", "r1", "-f", "md"),
    "report-r1.html": ("report", "r1", "-f", "html"),
    "report-r1.junit": ("report", "r1", "-f", "junit"),
    "report-opt.json": ("report", "opt", "-f", "json"),
    "report-opt.md": ("report", "opt", "-f", "md"),
    "report-opt.html": ("report", "opt", "-f", "html"),
    "prompt-list.json": ("prompt", "list", "--json"),
    "case-list.json": ("case", "list", "--json"),
    "project-list.json": ("project", "list", "--json"),
}


def steady_terminal(monkeypatch) -> None:
    """Tables laid out for one fixed width, without colour, wherever the suite runs; a report's
    `generated_at` read from a stopped clock."""
    monkeypatch.setattr("promptlab.reports.facts.now", lambda: "2026-01-01T00:00:00.000+00:00")
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)


def capture(workspace, db: Path, args: tuple[str, ...]) -> bytes:
    """stdout, then the exit code and stderr, of one command on a scratch copy of `db`."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "golden.db"
        shutil.copyfile(db, copy)
        result = workspace.cli("--db", str(copy), *args)
    return f"{result.stdout}\n--- exit {result.code}\n{result.stderr}".encode()
