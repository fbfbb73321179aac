"""The fake OpenAI server, exercised through the REAL litellm / openai HTTP paths."""
import asyncio
import json
import math
import os
import urllib.request

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before importing litellm: no network

import litellm  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402

from tests.fake_openai import content_key, start_server  # noqa: E402

litellm.suppress_debug_info = True
MSG = [{"role": "user", "content": "this film was great"}]


def chat(fake, content="this film was great", **kw):
    kw.setdefault("num_retries", 0)
    kw.setdefault("max_retries", 0)
    return litellm.acompletion(model="openai/fake", api_base=fake.base_url, api_key="sk-test",
                               messages=[{"role": "user", "content": content}], **kw)


def sdk(fake, **kw):
    kw.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", **kw)


def test_litellm_rules_pick_reply(fake_llm):
    fake_llm.configure(rules=[["great", "positive"], ["awful", "negative"]], default_reply="neutral")

    async def go():
        return [await chat(fake_llm, c) for c in ("so great", "so awful", "meh")]

    r = asyncio.run(go())
    assert [x.choices[0].message.content for x in r] == ["positive", "negative", "neutral"]
    assert r[0].choices[0].finish_reason == "stop"
    assert r[0].usage.prompt_tokens == 2 and r[0].usage.completion_tokens == 1
    st = fake_llm.stats()
    assert st["total"] == 3 and st["by_status"] == {"200": 3}
    assert st["models"] == {"fake": 3}  # "openai/" prefix is stripped by litellm
    assert st["auth_values"] == {"Bearer sk-test": 3} and st["auth_missing"] == 0


def test_rules_match_last_user_message_only(fake_llm):
    fake_llm.configure(rules=[["great", "positive"]], echo=True)
    msgs = [{"role": "system", "content": "great system"}, {"role": "user", "content": "hello"}]

    async def go():
        return await sdk(fake_llm).chat.completions.create(model="fake", messages=msgs)

    assert asyncio.run(go()).choices[0].message.content == "hello"  # echo, rule not hit


def test_429_is_rate_limit_error_after_exactly_one_request(fake_llm):
    fake_llm.configure(fail_rate=1.0, fail_statuses=[429])
    with pytest.raises(litellm.RateLimitError) as ei:
        asyncio.run(chat(fake_llm))
    assert ei.value.status_code == 429
    assert fake_llm.requests_total() == 1  # neither litellm nor the SDK retried


def test_400_is_bad_request_after_exactly_one_request(fake_llm):
    fake_llm.configure(always_status_if_contains={"BAD-REQUEST": 400, "NO-AUTH": 401})
    with pytest.raises(litellm.BadRequestError) as ei:
        asyncio.run(chat(fake_llm, "please BAD-REQUEST me"))
    assert ei.value.status_code == 400
    with pytest.raises(litellm.AuthenticationError):
        asyncio.run(chat(fake_llm, "NO-AUTH"))
    assert fake_llm.stats()["by_status"] == {"400": 1, "401": 1}


def test_litellm_default_retries_come_from_openai_sdk(fake_llm):
    # Documents library behaviour we depend on: without max_retries=0 the openai SDK
    # (max_retries=2 default) retries 429s itself -> 3 requests.
    fake_llm.configure(fail_first_n=10, fail_first_n_status=429, retry_after=0.01)
    with pytest.raises(litellm.RateLimitError):
        asyncio.run(litellm.acompletion(model="openai/fake", api_base=fake_llm.base_url,
                                        api_key="sk-test", messages=MSG))
    assert fake_llm.requests_total() == 3


def test_litellm_num_retries_overrides_max_retries(fake_llm):
    # num_retries=N is passed to the SDK as max_retries (max_retries=0 is IGNORED), and then
    # litellm's own wrapper retries N more times: 1 + N + N requests in total.
    fake_llm.configure(fail_first_n=10, fail_first_n_status=500)
    with pytest.raises(litellm.InternalServerError):
        asyncio.run(chat(fake_llm, num_retries=1, max_retries=0))
    assert fake_llm.requests_total() == 3


def test_fail_first_n_then_succeed_with_sdk_retries(fake_llm):
    fake_llm.configure(fail_first_n=2, fail_first_n_status=429, retry_after=0.01,
                       default_reply="done")

    async def go():
        return await sdk(fake_llm, max_retries=2).chat.completions.create(model="fake", messages=MSG)

    assert asyncio.run(go()).choices[0].message.content == "done"
    st = fake_llm.stats()
    assert st["total"] == 3 and st["by_status"] == {"429": 2, "200": 1}
    assert st["by_content"] == {content_key(MSG): 3}
    assert st["repeated_attempts"] == 2 and st["repeated"] == 0


def test_repeated_counts_duplicate_successes(fake_llm):
    async def go():
        for c in ("a", "a", "b"):
            await chat(fake_llm, c)

    asyncio.run(go())
    st = fake_llm.stats()
    assert st["repeated"] == 1 and st["repeated_attempts"] == 1 and len(st["by_content"]) == 2


def test_fail_rate_is_seeded_and_reproducible(fake_llm):
    def pattern():
        async def go():
            c, out = sdk(fake_llm), []
            for _ in range(20):
                try:
                    await c.chat.completions.create(model="fake", messages=MSG)
                    out.append(200)
                except openai.APIStatusError as e:
                    out.append(e.status_code)
            return out
        return asyncio.run(go())

    fake_llm.configure(fail_rate=0.5, fail_statuses=[500, 503], seed=7)
    first = pattern()
    assert {200, 500, 503} <= set(first)
    fake_llm.configure(seed=7)  # re-seeding replays the same sequence
    assert pattern() == first


def test_429_carries_retry_after_and_openai_error_body(fake_llm):
    fake_llm.configure(fail_rate=1.0, fail_statuses=[429], retry_after=0.05)
    req = urllib.request.Request(fake_llm.base_url + "/chat/completions", method="POST",
                                 data=json.dumps({"model": "m", "messages": MSG}).encode())
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req)
    assert ei.value.code == 429 and ei.value.headers["Retry-After"] == "0.05"
    err = json.loads(ei.value.read())["error"]
    assert err["type"] == "rate_limit_error" and err["code"] and err["message"]
    assert fake_llm.stats()["auth_missing"] == 1


def test_stream_is_rejected(fake_llm):
    async def go():
        await sdk(fake_llm).chat.completions.create(model="fake", messages=MSG, stream=True)

    with pytest.raises(openai.BadRequestError):
        asyncio.run(go())


def test_hang_triggers_client_timeout(fake_llm):
    fake_llm.configure(hang_if_contains="SLOW")

    async def go():
        await sdk(fake_llm, timeout=0.2).chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "SLOW please"}])

    with pytest.raises(openai.APITimeoutError):
        asyncio.run(go())
    assert fake_llm.requests_total() == 1


def test_litellm_embeddings(fake_llm):
    async def go():
        return await litellm.aembedding(model="openai/fake-embed", api_base=fake_llm.base_url,
                                        api_key="sk-test", input=["good movie", "bad movie", "good movie"])

    r = asyncio.run(go())
    vecs = [d["embedding"] for d in r.data]
    assert len(vecs) == 3 and all(len(v) == 16 for v in vecs)
    assert vecs[0] == vecs[2] != vecs[1]
    assert math.isclose(sum(x * x for x in vecs[0]), 1.0)
    assert fake_llm.stats()["by_path"] == {"/v1/embeddings": 1}


def test_raw_openai_sdk_chat_and_models(fake_llm):
    fake_llm.configure(echo=True)

    async def go():
        c = sdk(fake_llm)
        r = await c.chat.completions.create(model="gpt-x", messages=MSG)
        return r, [m.id async for m in c.models.list()]

    r, models = asyncio.run(go())
    assert r.choices[0].message.content == "this film was great"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert "fake" in models
    assert fake_llm.stats()["models"] == {"gpt-x": 1}


def test_control_rejects_unknown_keys_and_reset_restores(fake_llm):
    with pytest.raises(ValueError, match="unknown behaviour keys"):
        fake_llm.configure(latency=5)
    fake_llm.configure(default_reply="X", record_bodies=True)
    asyncio.run(chat(fake_llm, temperature=0.3))
    assert fake_llm.stats()["bodies"][0]["temperature"] == 0.3
    fake_llm.reset()
    st = fake_llm.stats()
    assert st["total"] == 0 and st["behaviour"]["default_reply"] == "OK"


def test_cli_flags_set_startup_behaviour():
    with start_server("--rule", "great=positive", "--default-reply", "meh",
                      "--latency-ms", "1", "--fail-statuses", "429,503") as srv:
        srv.configure(default_reply="changed")
        srv.reset()  # back to the CLI-given behaviour, not the built-in defaults
        b = srv.stats()["behaviour"]
        assert b["rules"] == [["great", "positive"]] and b["default_reply"] == "meh"
        assert b["fail_statuses"] == [429, 503] and b["latency_ms"] == 1.0
        assert asyncio.run(chat(srv)).choices[0].message.content == "positive"
    assert srv.proc.poll() is not None
