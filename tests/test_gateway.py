"""The gateway and runner over the real litellm HTTP path: retries, permanent errors, auth, cache."""

import asyncio
import json

import pytest

from promptlab.config import ModelConfig
from promptlab.errors import AuthError
from promptlab.lm import CallError, Gateway, cache_key, classify


def model(fake, **extra) -> ModelConfig:
    return ModelConfig(alias="fake", model="openai/fake", api_base=fake.base_url, **extra)


def ask(gateway, cfg, text, **params):
    return asyncio.run(gateway.complete(cfg, [{"role": "user", "content": text}], params))


def test_transient_errors_are_retried_until_success(fake_llm):
    fake_llm.configure(fail_first_n=3, fail_first_n_status=503, default_reply="fine")
    gateway = Gateway(retries=5, backoff_base=0.01)
    reply = ask(gateway, model(fake_llm), "hello")
    assert reply.text == "fine" and reply.attempts == 4
    assert fake_llm.stats()["total"] == 4


def test_retry_after_is_honoured_on_429(fake_llm):
    fake_llm.configure(fail_first_n=1, fail_first_n_status=429, retry_after="0.2", default_reply="ok")
    waits = []
    gateway = Gateway(retries=2, backoff_base=30)  # a 30 s backoff would show if Retry-After were ignored
    from promptlab import lm

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
def test_permanent_errors_are_called_once(fake_llm, status, kind):
    fake_llm.configure(always_status_if_contains={"BROKEN": status})
    gateway = Gateway(retries=5, backoff_base=0.01)
    with pytest.raises(CallError) as info:
        ask(gateway, model(fake_llm), "BROKEN prompt")
    assert info.value.kind == kind and not info.value.transient
    assert fake_llm.stats()["total"] == 1


def test_auth_failure_raises_auth_error(fake_llm):
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


def test_rate_limit_spaces_requests(fake_llm):
    fake_llm.configure(default_reply="ok")
    gateway = Gateway()
    cfg = model(fake_llm, rpm=600)  # 10 per second, burst 10

    async def burst():
        await asyncio.gather(*(gateway.complete(cfg, [{"role": "user", "content": str(i)}], {})
                               for i in range(15)))

    import time
    started = time.monotonic()
    asyncio.run(burst())
    # 15 requests at 10/s with a burst of 10 need at least ~0.5 s: a lower bound, never an upper one
    assert time.monotonic() - started >= 0.4
    assert fake_llm.stats()["total"] == 15


def test_cost_is_litellms_price_or_none_when_unknown(fake_llm):
    fake_llm.configure(default_reply="ok")
    gateway = Gateway()
    known = ModelConfig(model="openai/gpt-4o-mini", api_base=fake_llm.base_url)
    assert ask(gateway, known, "price me").usage.cost > 0
    assert ask(gateway, model(fake_llm), "price me").usage.cost is None  # "n/a", never a crash
