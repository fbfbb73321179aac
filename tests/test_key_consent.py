"""Keys go only where the user configured them: files from elsewhere (experiment files, prompt
versions in a shared database) that point a model or a key at a new host are refused with one
line naming the field, the host receives nothing, and the explicit opt-in makes them work."""

import json
import sqlite3

import pytest

from tests.conftest import SENTIMENT_EXPERIMENT
from tests.fake_openai import start_server

SECRET = "ghp_" + "Zx9" * 12  # a GITHUB_TOKEN-shaped value


@pytest.fixture(scope="module")
def elsewhere():
    """A second server: the host a hostile file would send keys to."""
    with start_server() as server:
        yield server


@pytest.fixture
def evil(elsewhere):
    elsewhere.reset()
    elsewhere.configure(rules=[["great", "positive"], ["awful", "negative"]], default_reply="neutral")
    return elsewhere


@pytest.fixture
def ws(workspace, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    workspace.write("cases.jsonl", '{"text": "great", "label": "positive"}\n{"text": "awful", "label": "negative"}\n')
    return workspace


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def experiment(models: str, params: str = "") -> str:
    text = SENTIMENT_EXPERIMENT.replace("models: [fake]", f"models: {models}")
    return text.replace('    template: "Review: {{ text }}"\n',
                        f'    template: "Review: {{{{ text }}}}"\n{params}')


INLINE = {
    "api_base": "[{{name: evil, model: openai/fake, api_base: '{url}'}}]",
    "api_key_env": "[{{name: evil, model: openai/gpt-4o-mini, api_key_env: GITHUB_TOKEN}}]",
    "both": "[{{name: evil, model: openai/fake, api_base: '{url}', api_key_env: GITHUB_TOKEN}}]",
}


@pytest.mark.parametrize("case", sorted(INLINE))
def test_an_experiments_own_model_pointing_at_a_new_host_is_refused(ws, evil, case):
    exp = ws.write("evil.yaml", experiment(INLINE[case].format(url=evil.base_url)))
    ran = ws.cli("run", exp)
    assert ran.code == 2
    field = "api_key_env" if case == "api_key_env" else "api_base"
    assert f"models[0].{field}" in one_line(ran)
    assert evil.requests_total() == 0
    assert ws.counts().get("runs", 0) == 0


def test_the_explicit_opt_in_lets_the_files_model_through(ws, evil):
    exp = ws.write("evil.yaml", experiment(INLINE["both"].format(url=evil.base_url)))
    ran = ws.cli("run", exp, "--allow-endpoints")
    assert ran.code == 0, ran.stderr
    assert evil.requests_total("/v1/chat/completions") == 2
    assert evil.stats()["auth_values"] == {f"Bearer {SECRET}": 2}


def test_a_trust_list_in_promptlab_toml_lets_the_files_model_through(ws, evil):
    toml = ws.root / "promptlab.toml"
    toml.write_text(toml.read_text() + f'\n[trust]\napi_bases = ["{evil.base_url}/"]\n'
                    f'api_key_envs = ["GITHUB_TOKEN"]\n')
    exp = ws.write("evil.yaml", experiment(INLINE["both"].format(url=evil.base_url)))
    ran = ws.cli("run", exp)
    assert ran.code == 0, ran.stderr
    assert evil.requests_total("/v1/chat/completions") == 2


def test_an_inline_model_on_a_configured_endpoint_with_its_key_needs_no_opt_in(ws):
    exp = ws.write("ok.yaml", experiment(f"[{{name: mine, model: openai/other, api_base: '{ws.fake.base_url}'}}]"))
    ran = ws.cli("run", exp)
    assert ran.code == 0, ran.stderr


@pytest.mark.parametrize("key", ["api_base", "base_url", "api_key", "extra_headers", "custom_llm_provider"])
def test_prompt_params_hold_sampling_parameters_only(ws, evil, key):
    value = json.dumps(evil.base_url if key != "extra_headers" else {"X": "y"})
    exp = ws.write("evil.yaml", experiment("[fake]", f"    params: {{temperature: 0, {key}: {value}}}\n"))
    ran = ws.cli("run", exp)
    assert ran.code == 2
    assert f"params.{key}" in one_line(ran)
    assert evil.requests_total() == 0 and ws.fake.requests_total() == 0
    assert ws.counts().get("prompts", 0) == 0


def test_prompt_add_refuses_a_non_sampling_param(ws):
    assert ws.cli("project", "add", "demo").code == 0
    added = ws.cli("prompt", "add", "p", "--template", "{{ text }}", "--param", "api_base=http://x/v1")
    assert added.code == 2 and "params.api_base" in one_line(added)
    assert ws.counts().get("prompts", 0) == 0


@pytest.mark.parametrize("bad", ["timeout: 0", "rpm: 0", "concurrency: -1", "colour: red"])
def test_an_inline_model_takes_a_models_table_bounds_as_its_own(ws, bad):
    """An inline model is a [models.x] table: a bad value is that field's one line (a timeout of 0
    got past the file's check and ended as an unexpected ValidationError)."""
    exp = ws.write("bad.yaml", experiment(f"[{{name: mine, model: openai/other, api_base: '{ws.fake.base_url}', {bad}}}]"))
    ran = ws.cli("run", exp)
    assert ran.code == 2 and f"field 'models.0.{bad.split(':')[0]}" in one_line(ran)
    assert ws.counts().get("runs", 0) == 0 and ws.fake.requests_total() == 0


def test_an_inline_models_params_are_checked_too(ws, evil):
    exp = ws.write("evil.yaml", experiment(
        f"[{{name: mine, model: openai/other, api_base: '{ws.fake.base_url}', params: {{api_base: '{evil.base_url}'}}}}]"))
    ran = ws.cli("run", exp)
    assert ran.code == 2 and "models[0]: params.api_base" in one_line(ran)
    assert evil.requests_total() == 0


def test_a_shared_database_cannot_redirect_a_call(ws, evil):
    """A prompt version or a run edited in the database never went through the checks: they are
    made again before any call."""
    ws.sentiment_project([{"text": "great", "label": "positive"}])
    with sqlite3.connect(ws.db_path) as db:
        db.execute("update prompts set params = ?", [json.dumps({"api_base": evil.base_url})])
    ran = ws.cli("eval", "--prompt", "p")
    assert ran.code == 2 and "params.api_base" in one_line(ran)

    with sqlite3.connect(ws.db_path) as db:
        db.execute("update prompts set params = '{}'")
    assert ws.cli("eval", "--prompt", "p", "--name", "r1").code == 0
    with sqlite3.connect(ws.db_path) as db:
        db.execute("update runs set status = 'interrupted', api_base = ?", [evil.base_url])
        db.execute("delete from results")
    resumed = ws.cli("eval", "--resume", "r1")
    assert resumed.code == 2 and "run 'r1'.api_base" in one_line(resumed)
    assert evil.requests_total() == 0


def test_the_gateway_refuses_non_sampling_params_before_any_call(ws, evil):
    import asyncio

    from promptlab.config import ModelConfig
    from promptlab.errors import UsageError
    from promptlab.providers.gateway import Gateway

    model = ModelConfig(alias="fake", model="openai/fake", api_base=ws.fake.base_url)
    with pytest.raises(UsageError, match="params.api_base"):
        asyncio.run(Gateway().complete(model, [{"role": "user", "content": "hi"}], {"api_base": evil.base_url}))
    assert evil.requests_total() == 0 and ws.fake.requests_total() == 0
