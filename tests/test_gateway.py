"""The gateway over real HTTP (the direct path and litellm's, via `call_path`): retries, permanent
errors, auth, cache, null content, timeouts."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promptlab.config import ModelConfig
from promptlab.errors import AuthError
from promptlab.providers.errors import CallError, classify, status_error
from promptlab.providers.gateway import Gateway, cache_key, fast_path


def model(fake, **extra) -> ModelConfig:
    return ModelConfig(alias="fake", model="openai/fake", api_base=fake.base_url, **extra)


def ask(gateway, cfg, text, **params):
    return asyncio.run(gateway.complete(cfg, [{"role": "user", "content": text}], params))


def test_transient_errors_are_retried_until_success(fake_llm, call_path):
    fake_llm.configure(fail_first_n=3, fail_first_n_status=503, default_reply="fine")
    gateway = Gateway(retries=5, backoff_base=0.01)
    reply = ask(gateway, model(fake_llm), "hello")
    assert reply.text == "fine" and reply.attempts == 4
    assert fake_llm.stats()["total"] == 4


def test_retry_after_is_honoured_on_429(fake_llm, call_path):
    fake_llm.configure(fail_first_n=1, fail_first_n_status=429, retry_after="0.2", default_reply="ok")
    waits = []
    gateway = Gateway(retries=2, backoff_base=30)  # a 30 s backoff would show if Retry-After were ignored
    from promptlab.providers import gateway as lm

    real = lm._wait

    def spy(base, cap):
        inner = real(base, cap)
        return lambda state: waits.append(inner(state)) or waits[-1]

    lm._wait = spy
    try:
        assert ask(gateway, model(fake_llm), "hi").text == "ok"
    finally:
        lm._wait = real
    assert waits == [pytest.approx(0.2)]


@pytest.mark.parametrize("status,kind", [(400, "bad_request"), (404, "not_found"), (422, "unprocessable")])
def test_permanent_errors_are_called_once(fake_llm, call_path, status, kind):
    fake_llm.configure(always_status_if_contains={"BROKEN": status})
    gateway = Gateway(retries=5, backoff_base=0.01)
    with pytest.raises(CallError) as info:
        ask(gateway, model(fake_llm), "BROKEN prompt")
    assert info.value.kind == kind and not info.value.transient
    assert fake_llm.stats()["total"] == 1


def test_auth_failure_raises_auth_error(fake_llm, call_path):
    fake_llm.configure(always_status_if_contains={"x": 401})
    with pytest.raises(AuthError, match="authentication failed"):
        ask(Gateway(retries=3), model(fake_llm), "x")
    assert fake_llm.stats()["total"] == 1


def test_cache_key_includes_api_base_and_params():
    a = ModelConfig(model="openai/m", api_base="http://127.0.0.1:1/v1")
    b = ModelConfig(model="openai/m", api_base="http://127.0.0.1:2/v1")
    payload = {"messages": [{"role": "user", "content": "x"}], "params": {"temperature": 0}}
    assert cache_key("chat", a, payload) != cache_key("chat", b, payload)
    assert cache_key("chat", a, payload) != cache_key("chat", a, {**payload, "params": {"temperature": 1}})
    assert cache_key("chat", a, payload) == cache_key("chat", a, json.loads(json.dumps(payload)))


def test_classify_unknown_exception_is_permanent():
    error = classify(RuntimeError("boom"))
    assert error.kind == "error" and not error.transient


def test_embeddings_are_cached_per_text(fake_llm):
    class DictCache(dict):
        def get(self, key):
            return super().get(key)

        def put(self, key, kind, model, value):
            self[key] = value

    gateway = Gateway(cache=DictCache())
    cfg = model(fake_llm)
    first = asyncio.run(gateway.embed(cfg, ["a b", "c d"]))
    assert len(first) == 2 and len(first[0]) == 16
    again = asyncio.run(gateway.embed(cfg, ["c d", "a b", "e f"]))
    assert again[0] == first[1] and again[1] == first[0]
    assert fake_llm.stats()["by_path"]["/v1/embeddings"] == 2  # the second call sent only "e f"


def test_a_configured_rpm_is_honoured(fake_llm):
    fake_llm.configure(default_reply="ok", record_arrivals=True)
    gateway = Gateway()
    cfg = model(fake_llm, rpm=600)  # 10 a second, in bursts of at most 10

    async def burst():
        await asyncio.gather(*(gateway.complete(cfg, [{"role": "user", "content": str(i)}], {})
                               for i in range(20)))

    asyncio.run(burst())
    arrivals = sorted(fake_llm.stats()["arrivals"])
    assert len(arrivals) == 20
    # the server's clock: any stretch of arrivals holds at most a burst plus 10 a second of it;
    # 2 more allowed for requests that the loopback or a busy machine delayed and then bunched
    for i, first in enumerate(arrivals):
        for j in range(i, len(arrivals)):
            assert j - i + 1 <= 10 + 10 * (arrivals[j] - first) + 2, (i, j, arrivals)


def test_a_gateway_rate_limits_in_each_event_loop_it_is_used_in(fake_llm):
    import warnings

    gateway, cfg = Gateway(), model(fake_llm, rpm=6000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # aiolimiter's "re-used across loops"
        assert [ask(gateway, cfg, text).text for text in ("a", "b")] == ["OK", "OK"]


def test_a_request_larger_than_the_tpm_burst_counts_in_full():
    from promptlab.providers.gateway import per_minute, take

    async def waited(amount: float) -> float:
        limiter = per_minute(6000)  # 100 tokens a second, a bucket of 100
        loop = asyncio.get_running_loop()
        started = loop.time()
        await take(limiter, amount)
        return loop.time() - started

    # the bucket takes 100 at once; the 30 past it wait for it to drain (taken only up to the
    # bucket's size, the request would have gone at once)
    assert asyncio.run(waited(130)) >= 0.29


def test_rpm_and_tpm_must_be_positive(workspace):
    config = workspace.root / "promptlab.toml"
    config.write_text(config.read_text() + '\n[models.slow]\nmodel = "openai/x"\nrpm = 0\n')
    result = workspace.cli("models", "list")
    assert result.code == 2 and "[models.slow.rpm]" in result.stderr and "greater than 0" in result.stderr


def test_cost_is_litellms_price_or_none_when_unknown(fake_llm, call_path):
    fake_llm.configure(default_reply="ok")
    gateway = Gateway()
    known = ModelConfig(model="openai/gpt-4o-mini", api_base=fake_llm.base_url)
    assert ask(gateway, known, "price me").usage.cost > 0
    assert ask(gateway, model(fake_llm), "price me").usage.cost is None  # "n/a", never a crash
    # priced by litellm under provider openai only: served by vLLM it is not priced
    other = ModelConfig(model="hosted_vllm/gpt-4o-mini", api_base=fake_llm.base_url)
    assert ask(gateway, other, "price me").usage.cost is None


def test_null_content_is_a_bad_response(fake_llm, call_path):
    fake_llm.configure(null_content=True)
    with pytest.raises(CallError) as info:
        ask(Gateway(retries=3), model(fake_llm), "hi")
    assert info.value.kind == "bad_response" and "no content" in str(info.value)
    assert fake_llm.stats()["total"] == 1


def test_a_hanging_call_times_out_and_is_retried(fake_llm, call_path):
    fake_llm.configure(hang_if_contains="SLOW", default_reply="ok")
    gateway = Gateway(retries=1, backoff_base=0.01)
    with pytest.raises(CallError) as info:
        ask(gateway, model(fake_llm, timeout=0.3), "SLOW please")
    assert info.value.kind == "timeout" and info.value.transient and info.value.attempts == 2
    assert ask(gateway, model(fake_llm, timeout=0.3), "quick").text == "ok"  # the client survives


def test_both_paths_share_cache_keys_and_usage(fake_llm, monkeypatch):
    class DictCache(dict):
        def put(self, key, kind, model_name, value):
            self[key] = value

    fake_llm.configure(default_reply="same")
    priced = ModelConfig(model="openai/gpt-4o-mini", api_base=fake_llm.base_url)
    replies = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("PROMPTLAB_FAST_PATH", flag)
        cache = DictCache()
        replies[flag] = [(reply.text, reply.usage, list(cache))
                         for cfg in (model(fake_llm), priced)
                         for reply in [ask(Gateway(cache=cache), cfg, "one question", temperature=0)]]
    assert replies["1"] == replies["0"] and replies["1"][1][1].cost > 0
    assert fake_llm.stats()["total"] == 4


def test_context_overflow_messages_are_context_window_errors():
    error = status_error(400, "400 This model's maximum context length is 512 tokens. However, you "
                              "requested 900 tokens")
    assert error.kind == "context_window" and not error.transient
    assert status_error(500, "500 input exceeds the available context size").kind == "context_window"
    assert status_error(400, "400 bad field").kind == "bad_request"
    assert status_error(429, "slow down", "2").retry_after == 2.0


def test_the_fast_path_is_chosen_for_openai_compatible_bases_only(monkeypatch):
    base = "http://127.0.0.1:1/v1"
    assert fast_path(ModelConfig(model="openai/m", api_base=base))
    assert fast_path(ModelConfig(model="hosted_vllm/m", api_base=base))
    assert not fast_path(ModelConfig(model="openai/gpt-4o-mini"))  # OpenAI itself: litellm
    assert not fast_path(ModelConfig(model="anthropic/claude", api_base=base))
    assert not fast_path(ModelConfig(model="openai/m", api_base=base, fast_path=False))
    monkeypatch.setenv("PROMPTLAB_FAST_PATH", "0")
    assert not fast_path(ModelConfig(model="openai/m", api_base=base))


EVAL_THEN_SAY_IF_LITELLM = """
import sys
from promptlab.cli import main
try:
    main(["eval", "--prompt", "p", "--no-cache"])
except SystemExit as exc:
    assert not exc.code, exc.code
print("litellm" in sys.modules)
"""


@pytest.mark.parametrize("setting,imported", [("", False), ("fast_path = false", True),
                                              ("env", True)])
def test_an_eval_on_the_fast_path_never_imports_litellm(workspace, setting, imported):
    from tests.test_runs import setup_project

    setup_project(workspace, n=5)
    if setting and setting != "env":
        workspace.write("promptlab.toml", (workspace.root / "promptlab.toml").read_text() + setting + "\n")
    env = {**os.environ, "PROMPTLAB_CONFIG": str(workspace.root / "promptlab.toml"),
           "PROMPTLAB_FAST_PATH": "0" if setting == "env" else "1",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", EVAL_THEN_SAY_IF_LITELLM], cwd=workspace.root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(imported)
    assert workspace.fake.stats()["total"] == 5


def test_both_paths_send_the_same_body(fake_llm, monkeypatch):
    fake_llm.configure(record_bodies=True, default_reply="ok")
    for flag in ("1", "0"):
        monkeypatch.setenv("PROMPTLAB_FAST_PATH", flag)
        # extra_body is the model's (promptlab.toml), not a call's: a call carries sampling parameters only
        ask(Gateway(), model(fake_llm, params={"extra_body": {"top_k": 3}}), "same body", temperature=0, max_tokens=5)
    fast, via_litellm = fake_llm.stats()["bodies"]
    assert fast == via_litellm and fast["top_k"] == 3 and fast["model"] == "fake"


def test_a_rate_limit_in_words_is_a_rate_limit_on_both_paths(fake_llm, call_path):
    # litellm reads "rate limit" in an error message as a 429, whatever the status; so does the direct path
    fake_llm.configure(always_status_if_contains={"rate limit": 400})
    with pytest.raises(CallError) as info:
        ask(Gateway(retries=2, backoff_base=0.01), model(fake_llm), "over the rate limit")
    assert (info.value.kind, info.value.transient, info.value.attempts) == ("rate_limit", True, 3)
