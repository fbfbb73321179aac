"""The smaller holes hostile input found: escapes in printed fields, an export that fails half way,
a CSV with a million columns or stray NUL bytes, a heartbeat from the future, racing version
numbers, a corrupt database, a viewer asked for an id past SQLite's integers."""

import json
import resource
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from tests.test_batch import batch_settings
from tests.test_runs import setup_project
from tests.test_trust import _env
from tests.test_view import get, origin, viewer

OSC = "\x1b]0;pwned\x07"
CSI = "\x1b[2J"


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_batch_ids_and_prompt_names_reach_the_terminal_without_escapes(workspace):
    setup_project(workspace, n=4)
    named = workspace.cli("prompt", "add", f"p{CSI}x", "--signature", "sentiment", "--template", "Review: {{ text }}")
    assert named.code == 0 and "\x1b" not in named.stdout
    ran = workspace.cli("eval", "--prompt", f"p{CSI}x", "--name", "r")
    assert ran.code == 0, ran.stderr
    assert "constant baseline" in ran.stdout and "\x1b" not in ran.stdout + ran.stderr
    batch_settings(workspace)
    assert workspace.cli("eval", "--prompt", "p", "--batch", "--no-cache", "--name", "b").code == 0
    with sqlite3.connect(workspace.db_path) as db:
        db.execute("update batches set batch_id = ?", [f"batch{OSC}1"])
    shown = workspace.cli("runs", "show", "b")
    assert shown.code == 0 and "batch batch1" in shown.stdout
    assert "\x1b" not in shown.stdout + shown.stderr and "\x07" not in shown.stdout


def test_a_failed_export_leaves_the_old_file_whole(workspace):
    setup_project(workspace, n=400)
    out = workspace.root / "cases.out.jsonl"
    out.write_text("the previous export\n" * 100)
    before = out.read_text()

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    failed = subprocess.run([sys.executable, "-m", "promptlab", "case", "export", str(out)], cwd=workspace.root,
                            env=_env(workspace), capture_output=True, text=True, preexec_fn=small_files)
    assert failed.returncode == 2, failed.stderr
    assert "cases.out.jsonl: cannot write the cases" in failed.stderr and "unchanged" in failed.stderr
    assert out.read_text() == before
    assert sorted(p.name for p in workspace.root.iterdir() if p.name.startswith(".cases.out")) == []
    done = workspace.cli("case", "export", str(out))
    assert done.code == 0 and len(out.read_text().splitlines()) == 400


def test_a_csv_with_a_million_columns_is_checked_in_linear_time(workspace):
    setup_project(workspace, n=1)
    header = ",".join(f"c{i}" for i in range(1_000_000)) + ",c5\n"
    workspace.write("wide.csv", header + ",".join("x" * 1_000_001) + "\n")
    refused = workspace.cli("case", "import", "wide.csv")
    assert refused.code == 2 and "column 'c5' twice" in one_line(refused)


def test_csv_refuses_what_jsonl_refuses(workspace):
    setup_project(workspace, n=1)
    for name, text, what in (("nul.csv", "text,label\ngood\x00bye,positive\n", "a NUL byte"),
                             ("bom.csv", "text,label\nfine,positive\n\ufefftext,label\n", "byte order mark"),
                             ("head.csv", "te\x00xt,label\nfine,positive\n", "a NUL byte")):
        (workspace.root / name).write_text(text, encoding="utf-8")
        refused = workspace.cli("case", "import", name)
        assert refused.code == 2 and what in one_line(refused) and f"{name}: line" in refused.stderr
    assert workspace.rows("select count(*) from cases") == [(1,)]
    (workspace.root / "ok.csv").write_text("text,label\nnew one,positive\n", encoding="utf-8-sig")
    assert workspace.cli("case", "import", "ok.csv").code == 0  # the file's own BOM is fine


def test_a_heartbeat_from_the_future_is_stale(workspace):
    setup_project(workspace, n=3)
    assert workspace.cli("eval", "--prompt", "p", "--name", "r").code == 0
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat(timespec="milliseconds")
    with sqlite3.connect(workspace.db_path) as db:
        db.execute("update runs set status = 'running', owner_host = 'elsewhere', owner_pid = 4242, heartbeat_at = ?",
                   [future])
        db.execute("delete from results where id = (select max(id) from results)")
    listed = json.loads(workspace.cli("runs", "list", "--json").stdout)
    assert [(r["status"], r["owner_gone"]) for r in listed] == [("running", True)]
    resumed = workspace.cli("eval", "--resume", "r")
    assert resumed.code == 0, resumed.stderr


ADD_VERSIONS = """
import sys
from promptlab.models import PromptContent
from promptlab.store import open_store
store = open_store(__import__("pathlib").Path(sys.argv[1]))
project = store.project_id("demo")
for i in range(40):
    store.add_prompt(project, "race", PromptContent(template=f"{sys.argv[2]} {i} {{{{ text }}}}"))
"""


def test_two_processes_adding_versions_never_collide(workspace):
    setup_project(workspace, n=1)
    writers = [subprocess.Popen([sys.executable, "-c", ADD_VERSIONS, str(workspace.db_path), tag],
                                env=_env(workspace), stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    errors = [w.communicate()[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    versions = [v for (v,) in workspace.rows("select version from prompts where name = 'race' order by version")]
    assert versions == list(range(1, 81))


def test_a_corrupt_database_is_reported_as_unreadable_with_a_recovery_hint(workspace):
    setup_project(workspace, n=1)
    for suffix in ("-wal", "-shm"):
        (workspace.db_path.parent / (workspace.db_path.name + suffix)).unlink(missing_ok=True)
    data = bytearray(workspace.db_path.read_bytes())
    data[0:16] = b"not sqlite at al"
    workspace.db_path.write_bytes(bytes(data))
    listed = workspace.cli("runs", "list")
    line = one_line(listed)
    assert listed.code != 0 and "cannot read" in line and ".recover" in line and "cannot write" not in line


def test_the_viewer_answers_404_to_ids_past_sqlites_integers(workspace):
    setup_project(workspace, n=1)
    with viewer(workspace) as url:
        base = origin(url)
        for path in ("/runs/99999999999999999999999", "/optimizations/99999999999999999999999",
                     "/projects/99999999999999999999999", "/runs/1/results/99999999999999999999999/0",
                     "/api/runs/99999999999999999999999/progress"):
            assert get(base + path)[0] == 404, path
