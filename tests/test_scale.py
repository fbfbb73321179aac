"""Constant memory: case import streams in batches, eval selects in SQL, lists read what they show."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from promptlab import store as store_module
from promptlab.store import cases as store_cases

ROOT = Path(__file__).resolve().parent.parent
MAX_RSS_MB = 200


def write_cases(path: Path, n: int, start: int = 0) -> Path:
    with open(path, "w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"text": f"review number {i}: great", "label": "positive",
                                "split": "test" if i % 2 else "train", "tags": ["even"] if i % 2 == 0 else []})
                    + "\n")
    return path


# Runs the command and writes its peak RSS (kB) to a file. This small process starts the CLI: a
# child's peak counts the memory it had before exec, that is, the process that forked it (pytest,
# hundreds of MB once litellm is loaded).
PEAK_OF_CHILD = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def peak_rss_mb(workspace, *args: str) -> tuple[float, str]:
    """Run the CLI in its own process; its peak resident memory (MB) and its output."""
    env = {**os.environ, "PROMPTLAB_CONFIG": str(workspace.root / "promptlab.toml"), "PYTHONPATH": str(ROOT)}
    peak = workspace.root / "peak.txt"
    out = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, str(peak), sys.executable, "-m", "promptlab",
                          *args], cwd=workspace.root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(peak.read_text()) / 1024, out.stdout  # Linux reports kilobytes


def project(workspace) -> None:
    assert workspace.cli("project", "add", "demo").code == 0
    assert workspace.cli("signature", "add", "sentiment", "--input", "text", "--output",
                         "label:enum:positive,negative").code == 0


def check_import_memory(workspace, n: int) -> None:
    project(workspace)
    write_cases(workspace.root / "cases.jsonl", n)
    peak, out = peak_rss_mb(workspace, "case", "import", "cases.jsonl")
    assert f"imported {n} cases (0 already present)" in out
    assert peak < MAX_RSS_MB, f"{peak:.0f} MB"
    again, out = peak_rss_mb(workspace, "case", "import", "cases.jsonl")
    assert f"imported 0 cases ({n} already present)" in out and again < MAX_RSS_MB
    assert workspace.rows("select count(*), count(distinct content_hash) from cases") == [(n, n)]


def test_importing_100k_jsonl_cases_stays_in_bounded_memory(workspace):
    check_import_memory(workspace, 100_000)


@pytest.mark.slow
def test_importing_a_million_jsonl_cases_stays_in_bounded_memory(workspace):
    check_import_memory(workspace, 1_000_000)


def test_a_bad_row_late_in_a_streamed_import_leaves_nothing_written(workspace):
    project(workspace)
    path = write_cases(workspace.root / "cases.jsonl", 2500)  # past the first insert batches
    with open(path, "a") as f:
        f.write('{"text": "fine", "label": "positive"}\n{"label": "positive"}\n')
    result = workspace.cli("case", "import", "cases.jsonl")
    assert result.code == 2 and "case 2502: lacks input field 'text'" in result.stderr
    assert workspace.rows("select count(*) from cases") == [(0,)]


def test_repeats_within_a_file_count_as_already_present(workspace):
    project(workspace)
    write_cases(workspace.root / "a.jsonl", 3)
    text = (workspace.root / "a.jsonl").read_text()
    workspace.write("b.csv", "text,label\nx,positive\nx,positive\ny,negative\n")
    workspace.write("b.jsonl", text + text)
    assert "imported 3 cases (3 already present)" in workspace.cli("case", "import", "b.jsonl").stdout
    assert "imported 2 cases (1 already present)" in workspace.cli("case", "import", "b.csv").stdout


def count_case_reads(monkeypatch) -> list[int]:
    """Count the case rows decoded into Case records (store.cases._case)."""
    calls = [0]
    real = store_cases._case

    def counting(row):
        calls[0] += 1
        return real(row)

    monkeypatch.setattr(store_cases, "_case", counting)
    return calls


def test_eval_limit_reads_as_many_cases_in_100k_as_in_1k(workspace, monkeypatch):
    project(workspace)
    assert workspace.cli("prompt", "add", "p", "--signature", "sentiment", "--template",
                         "Review: {{ text }}").code == 0
    workspace.fake.configure(default_reply="positive")
    reads = count_case_reads(monkeypatch)
    read_per_size = {}
    for size, start in ((1_000, 0), (100_000, 1_000)):
        write_cases(workspace.root / "more.jsonl", size - start, start)
        assert workspace.cli("case", "import", "more.jsonl").code == 0
        reads[0] = 0
        result = workspace.cli("eval", "--prompt", "p", "--limit", "10", "--split", "test", "--json")
        assert result.code == 0, result.stderr
        read_per_size[size] = reads[0]
    assert read_per_size[1_000] == read_per_size[100_000] <= 10
    ids = workspace.rows("select group_concat(case_id) from results group by run_id")
    assert ids == [("2,4,6,8,10,12,14,16,18,20",)] * 2  # the first cases of split test, both times


def test_tags_select_cases_having_every_tag(workspace):
    project(workspace)
    rows = [{"text": "a", "tags": ["x"]}, {"text": "b", "tags": ["x", "y"]}, {"text": "c", "tags": ["y"]},
            {"text": "d", "tags": ["x", "y", "z"]}]
    workspace.write("t.jsonl", "".join(json.dumps({**r, "label": "positive"}) + "\n" for r in rows))
    assert workspace.cli("case", "import", "t.jsonl").code == 0
    listed = json.loads(workspace.cli("case", "list", "--tag", "x", "--tag", "y", "--json").stdout)
    assert [c["inputs"]["text"] for c in listed] == ["b", "d"]
    one = workspace.cli("case", "list", "--tag", "y", "--limit", "1")
    assert one.code == 0 and "cases (3)" in one.stdout and one.stdout.count("positive") == 1


def test_case_list_reads_only_the_rows_it_shows(workspace, monkeypatch):
    project(workspace)
    write_cases(workspace.root / "cases.jsonl", 300)
    assert workspace.cli("case", "import", "cases.jsonl").code == 0
    reads = count_case_reads(monkeypatch)
    statements = []
    real = store_module.Database.execute
    monkeypatch.setattr(store_module.Database, "execute",
                        lambda db, sql, *args: statements.append(sql) or real(db, sql, *args))
    listed = workspace.cli("case", "list", "--limit", "5")
    assert listed.code == 0 and "cases (300)" in listed.stdout
    assert reads[0] == 5
    case_reads = [s for s in statements if " from \"cases\"" in s and "count(" not in s]
    assert case_reads and all(s.startswith("select id, inputs, expected, golden, tags, split from") and
                              "limit 5" in s for s in case_reads), case_reads


def test_an_import_leaves_the_database_writable_while_it_reads(workspace):
    from promptlab.models import Case
    from promptlab.store import open_store

    project(workspace)
    store = open_store(workspace.db_path)

    def cases():
        for i in range(2500):
            if i == 2000:  # well into the file, past the first batches: another process writes
                with sqlite3.connect(workspace.db_path, timeout=0) as other:
                    other.execute("update projects set description = 'written meanwhile'")
            yield Case(inputs={"text": f"review {i}"}, expected={"label": "positive"})

    assert store.add_cases(1, cases()) == (2500, 0)
    assert workspace.rows("select description from projects") == [("written meanwhile",)]
    assert store.add_cases(1, cases()) == (0, 2500)


def test_a_limited_selection_is_read_in_id_order_from_an_index(workspace, monkeypatch):
    from promptlab.store import open_store

    project(workspace)
    write_cases(workspace.root / "cases.jsonl", 50)
    assert workspace.cli("case", "import", "cases.jsonl").code == 0
    store = open_store(workspace.db_path)
    statements = []
    real = store_module.Database.execute
    monkeypatch.setattr(store_module.Database, "execute",
                        lambda db, sql, *args: statements.append((sql, *args)) or real(db, sql, *args))
    for split, golden in ((None, None), ("test", True)):
        statements.clear()
        assert len(store.cases(1, split=split, golden=golden, limit=10)) == 10
        (sql, args), = [s for s in statements if ' from "cases"' in s[0]]
        plan = " ".join(row[3] for row in real(store.db, "explain query plan " + sql, args).fetchall())
        assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, plan  # LIMIT stops after ten rows


def test_exporting_100k_cases_stays_in_bounded_memory(workspace):
    project(workspace)
    write_cases(workspace.root / "cases.jsonl", 100_000)
    assert workspace.cli("case", "import", "cases.jsonl").code == 0
    for name in ("out.jsonl", "out.csv"):
        peak, out = peak_rss_mb(workspace, "case", "export", name, "--split", "test")
        assert "exported 50000 cases" in out and peak < MAX_RSS_MB, (name, peak)
    lines = (workspace.root / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == list(range(2, 100_001, 2))  # every page, in order
    rows = (workspace.root / "out.csv").read_text().splitlines()
    assert rows[0] == "text,label,split,tags,golden" and len(rows) == 50_001
