"""No secret leaves in any form: exact, in another letter case, reversed, encoded or cut short, in
the database, reports, --json, --progress json, --debug output or batch errors — redacted before
anything cuts the text."""

import base64
import json
from urllib.parse import quote

import pytest

from promptlab.redact import redact
from tests.test_batch import batch_settings
from tests.test_runs import setup_project
from tests.test_secrets_and_escapes import KEY, KEY_ENV, all_db_text, config


def forms(key: str) -> dict[str, str]:
    """The forms a key must never appear in (each long enough to identify it)."""
    return {"exact": key, "upper": key.upper(), "lower": key.lower(), "reversed": key[::-1],
            "all but the last character": key[:-1], "the first 12": key[:12], "the last 12": key[-12:],
            "base64": base64.b64encode(key.encode()).decode().rstrip("="),
            "url": quote(key, safe="")}


def leaks(text: str, key: str = KEY) -> list[str]:
    return [name for name, form in forms(key).items() if form in text]


@pytest.mark.parametrize("shape", ["{}", "Bearer {}", "{} and {}", "x{}y", "Basic {b64}", "{up}", "{rev}",
                                   "{cut}", "{tail}", "{url}", "{hex}"])
def test_every_form_of_a_key_is_masked(monkeypatch, shape):
    monkeypatch.setenv(KEY_ENV, KEY)
    from promptlab import redact as module

    module.remember([KEY_ENV])
    text = shape.format(KEY, KEY, b64=base64.b64encode(f"user:{KEY}".encode()).decode(), up=KEY.upper(),
                        rev=KEY[::-1], cut=KEY[:-1], tail=KEY[9:], url=quote(KEY, safe=""),
                        hex=KEY.encode().hex())
    masked = redact(f"before {text} after")
    assert "[redacted]" in masked and masked.startswith("before ") and masked.endswith(" after")
    assert not leaks(masked)
    assert KEY[9:21] not in masked and KEY.encode().hex()[:24] not in masked


def test_ordinary_text_is_left_alone(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    text = "The quick brown fox: sk-test, 0123, abcdef and SECRET."
    assert redact(text) == text


def test_a_key_echoed_near_the_cut_leaves_no_piece_in_batch_errors(workspace, monkeypatch):
    """A provider's batch error line that quotes the key around character 300: redacted before it
    is cut, so not even its head is stored or shown."""
    monkeypatch.setenv(KEY_ENV, KEY)
    config(workspace, api_key_env=KEY_ENV)
    setup_project(workspace, n=6)
    batch_settings(workspace)
    line = json.dumps({"custom_id": "{custom_id}", "response": {"status_code": 400, "body": {"error": {
        "message": "x" * 272 + " token: {auth} " + "{auth}"[::-1]}}}})
    workspace.fake.configure(batch_raw_line_if_contains={"thing 3": line, "thing 4": line})
    ran = workspace.cli("--debug", "eval", "--prompt", "p", "--batch", "--name", "b", "--json",
                        "--progress", "json")
    assert ran.code == 0, ran.stderr
    errors = [e for (e,) in workspace.rows("select error from results where error is not null")]
    assert len(errors) == 2 and all("[redacted]" in e for e in errors)
    shown = [workspace.cli("runs", "show", "b"), workspace.cli("runs", "show", "b", "--json"),
             workspace.cli("report", "b", "-f", "md"), workspace.cli("report", "b", "-f", "json")]
    for text in (ran.stdout, ran.stderr, all_db_text(workspace), *(r.stdout + r.stderr for r in shown)):
        assert not leaks(text)


def test_a_reply_echoing_the_key_is_stored_and_shown_masked(workspace, call_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    config(workspace, api_key_env=KEY_ENV)
    setup_project(workspace, n=4)
    workspace.fake.configure(content_if_contains={"thing 1": "{auth} / " + KEY.upper() + " / " + KEY[::-1]})
    ran = workspace.cli("--debug", "eval", "--prompt", "p", "--name", "r", "--json", "--progress", "json")
    assert ran.code in (0, 1), ran.stderr
    outputs = [o for (o,) in workspace.rows("select output from results")]
    assert any("[redacted]" in o for o in outputs)
    for text in (ran.stdout, ran.stderr, all_db_text(workspace)):
        assert not leaks(text)


def test_debug_tracebacks_are_masked(workspace, monkeypatch):
    """An unexpected error whose traceback quotes the key (here: a usage field that echoes it)."""
    monkeypatch.setenv(KEY_ENV, KEY)
    from promptlab.cli import main

    def explode(*args, **kwargs):
        raise RuntimeError(f"usage was {{'prompt_tokens': '{KEY}', 'x': '{KEY.upper()}'}}")

    monkeypatch.setattr("promptlab.cli.projects.list_projects", explode, raising=False)
    monkeypatch.setattr("promptlab.store.Store.projects", explode)
    ran = workspace.cli("--debug", "project", "list")
    assert ran.code != 0 and "Traceback" in ran.stderr and "[redacted]" in ran.stderr
    assert not leaks(ran.stderr + ran.stdout)
    assert main  # the real entry point ran (workspace.cli calls it)
