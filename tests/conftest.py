import os

import pytest

# ==== BEGIN fake_llm fixtures (owner: tests/fake_openai.py) =====================
# One fake OpenAI server process per session; `fake_llm` resets counts and
# behaviour before every test, so each test starts clean.
from tests.fake_openai import FakeLLM, spawn_server

# Loopback must never be sent to an env-configured proxy (httpx honours NO_PROXY).
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var), "127.0.0.1", "localhost"]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def fake_llm_server():
    srv = spawn_server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def fake_llm(fake_llm_server) -> FakeLLM:
    fake_llm_server.reset()
    return fake_llm_server
# ==== END fake_llm fixtures =====================================================


# ==== BEGIN workspace fixtures (owner: core CLI tests) ==========================
import io
import sqlite3
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

SENTIMENT_EXPERIMENT = """\
project: demo
signature:
  name: sentiment
  instruction: Classify the sentiment of the review.
  inputs: [text]
  outputs:
    - {name: label, type: enum, choices: [positive, negative]}
prompts:
  - name: one-word
    system: Answer with one word.
    template: "Review: {{ text }}"
models: [fake]
cases: {file: cases.jsonl}
metrics: [exact_match]
eval: {concurrency: 8, repeat: 1}
gates: {min_score: 0.5}
"""


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


class Workspace:
    """A project folder with its own promptlab.toml and database, pointed at the fake server."""

    def __init__(self, root: Path, fake: FakeLLM):
        self.root, self.fake = root, fake
        self.db_path = root / ".promptlab" / "promptlab.db"

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def cli(self, *args: str) -> CliResult:
        """Run the real CLI entry point in-process (exit code, stdout, stderr)."""
        from promptlab.cli import main

        out, err = io.StringIO(), io.StringIO()
        code = 0
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        return CliResult(code, out.getvalue(), err.getvalue())

    def sentiment_project(self, rows: list[dict], *, instruction: str | None = None) -> None:
        """Project `demo`: signature `sentiment` (text → label: positive|negative), `rows` as its
        cases, prompt `p` ("Review: {{ text }}")."""
        import json

        self.write("cases.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        signature = ["signature", "add", "sentiment", "--input", "text", "--output", "label:enum:positive,negative"]
        for args in (("project", "add", "demo"),
                     (*signature, *(("--instruction", instruction) if instruction else ())),
                     ("case", "import", "cases.jsonl"),
                     ("prompt", "add", "p", "--signature", "sentiment", "--template", "Review: {{ text }}")):
            result = self.cli(*args)
            assert result.code == 0, result.stderr

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql, params).fetchall()

    def counts(self) -> dict[str, int]:
        if not self.db_path.exists():
            return {}
        tables = [r[0] for r in self.rows("select name from sqlite_master where type='table'")]
        return {t: self.rows(f"select count(*) from [{t}]")[0][0] for t in tables}


@pytest.fixture
def workspace(tmp_path, fake_llm, monkeypatch) -> Workspace:
    (tmp_path / "promptlab.toml").write_text(
        f'[defaults]\nmodel = "fake"\n\n[models.fake]\nmodel = "openai/fake"\n'
        f'api_base = "{fake_llm.base_url}"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROMPTLAB_DB", raising=False)
    monkeypatch.setenv("PROMPTLAB_CONFIG", str(tmp_path / "promptlab.toml"))
    fake_llm.configure(rules=[["great", "positive"], ["awful", "negative"]], default_reply="neutral")
    return Workspace(tmp_path, fake_llm)
# ==== END workspace fixtures ====================================================


# ==== BEGIN call path fixture (owner: the fast path, promptlab/providers/direct.py) =====
@pytest.fixture(params=["fast", "litellm"])
def call_path(request, monkeypatch) -> str:
    """Run the test over the direct OpenAI-compatible path and over litellm's."""
    monkeypatch.setenv("PROMPTLAB_FAST_PATH", "1" if request.param == "fast" else "0")
    return request.param
# ==== END call path fixture =====================================================
