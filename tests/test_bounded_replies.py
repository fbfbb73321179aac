"""Providers can send anything: huge, endless or deeply nested replies and impossible usage are
each that item's error (or unknown usage, with a warning) through the real HTTP path against a
loopback server; the other items are stored and the run ends as it should, in seconds."""

import json

import pytest

from promptlab import safe_json
from promptlab.prompting.outputs import ParseError, extract_json
from tests.measured import run_measured
from tests.test_batch import batch_settings
from tests.test_runs import setup_project

DEEP = "[" * 200_000


def by_text(ws, run: str) -> dict[str, tuple]:
    rows = ws.rows("select c.inputs, r.error_kind, r.error, r.output, r.prompt_tokens, r.completion_tokens, "
                   "r.cost, r.attempts from results r join cases c on c.id = r.case_id "
                   "where r.run_id = (select id from runs where name = ?)", (run,))
    return {json.loads(inputs)["text"]: rest for inputs, *rest in rows}


def status(ws, run: str) -> str:
    return ws.rows("select status from runs where name = ?", (run,))[0][0]


# litellm's own response model refuses fractional counts and coerces "12" and true: through it only
# the integers out of range reach promptlab's check
USAGES = [({"prompt_tokens": 10 ** 30}, "both"), ({"prompt_tokens": -3}, "both"),
          ({"completion_tokens": 1.5}, "fast"), ({"completion_tokens": float("nan")}, "fast"),
          ({"prompt_tokens": "12"}, "fast"), ({"prompt_tokens": True}, "fast")]


@pytest.mark.parametrize("usage,path", [(u, p) for u, paths in USAGES for p in ("fast", "litellm")
                                        if paths in ("both", p)])
def test_impossible_usage_is_unknown_with_a_warning(workspace, monkeypatch, usage, path):
    monkeypatch.setenv("PROMPTLAB_FAST_PATH", "1" if path == "fast" else "0")
    setup_project(workspace, n=4)
    workspace.fake.configure(usage_override=usage)
    ran = workspace.cli("eval", "--prompt", "p", "--name", "u", "--json")
    assert ran.code == 0, ran.stderr
    assert "not a token count; usage and cost unknown" in ran.stderr
    assert status(workspace, "u") == "completed"
    for kind, _, out, prompt, completion, cost, _ in by_text(workspace, "u").values():
        assert kind is None and out and (prompt, completion, cost) == (0, 0, None)
    summary = json.loads(ran.stdout)["runs"][0]
    assert summary["cost"] is None or summary["cost"] >= 0


def test_a_reply_larger_than_the_bound_is_that_items_error(workspace, call_path):
    setup_project(workspace, n=4)
    toml = workspace.root / "promptlab.toml"
    toml.write_text(toml.read_text().replace('model = "fake"\n', 'model = "fake"\nmax_reply_bytes = 100000\n', 1))
    workspace.fake.configure(content_if_contains={"thing 1": "x" * 200_000})
    ran = workspace.cli("eval", "--prompt", "p", "--name", "big")
    rows = by_text(workspace, "big")
    assert rows["great thing 1"][0] == "reply_too_large" and rows["great thing 1"][2] in ("", None)
    assert rows["great thing 1"][-1] == 1  # asked once: it would come back as large
    assert all(kind is None for text, (kind, *_) in rows.items() if text != "great thing 1")
    assert ran.code == 0, ran.stderr  # one item's error; the run completes
    assert "x" * 1000 not in "".join(str(v) for row in workspace.rows("select * from results") for v in row)


@pytest.mark.slow  # seconds: real processes and a trickling server
def test_endless_and_huge_replies_end_in_seconds_within_500_mb(workspace, call_path):
    """A reply that never ends and one of 200 MB, through the real HTTP path in a real process, on the
    direct path and through LiteLLM (which read the whole 200 MB, 1.3 GB at peak, as a retried
    `server` error before its transport was bounded)."""
    setup_project(workspace, n=8)
    toml = workspace.root / "promptlab.toml"
    toml.write_text(toml.read_text() + "timeout = 1\n")  # under [models.fake]
    workspace.fake.configure(raw_reply_if_contains={
        "thing 3": {"chunk": " ", "repeat": -1, "trickle_s": 0.01},
        "thing 5": {"chunk": "x" * 65536, "repeat": 3200},
        "thing 6": {"chunk": DEEP, "repeat": 1}})
    ran = run_measured(workspace, "eval", "--prompt", "p", "--name", "r", "--json")
    assert "unexpected error" not in ran.stderr and "Traceback" not in ran.stderr
    rows = by_text(workspace, "r")
    assert len(rows) == 8
    assert (rows["great thing 3"][0], rows["great thing 3"][-1]) == ("reply_timeout", 1)
    assert rows["great thing 5"][0] == "reply_too_large"
    assert rows["awful thing 6"][0] == "bad_response"
    assert all(kind is None and out for text, (kind, _, out, *_) in rows.items()
               if text not in ("great thing 3", "great thing 5", "awful thing 6"))
    assert ran.peak_mb < 500, ran.peak_mb
    assert workspace.db_path.stat().st_size < 50 * 1024 ** 2


def test_batch_bombs_are_item_errors_and_the_rest_of_the_batch_is_stored(workspace):
    setup_project(workspace, n=10)
    batch_settings(workspace, max_attempts=1)
    huge_usage = json.dumps({"custom_id": "{custom_id}", "response": {"status_code": 200, "body": {
        "choices": [{"message": {"content": "positive"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10 ** 30, "completion_tokens": -1}}}})
    workspace.fake.configure(batch_raw_line_if_contains={"thing 3": DEEP, "thing 4": huge_usage})
    ran = workspace.cli("eval", "--prompt", "p", "--batch", "--name", "b", "--json")
    assert "unexpected error" not in ran.stderr and "Traceback" not in ran.stderr
    assert status(workspace, "b") in ("completed", "failed")
    rows = by_text(workspace, "b")
    assert len(rows) == 10
    assert rows["great thing 3"][0] == "bad_response"
    assert rows["awful thing 4"][0] is None and tuple(rows["awful thing 4"][3:6]) == (0, 0, None)
    assert "not a token count" in ran.stderr
    assert sum(kind is None for kind, *_ in rows.values()) == 9
    waited = workspace.cli("runs", "wait", "b")
    assert "unexpected error" not in waited.stderr


def test_json_from_models_and_providers_is_parsed_with_a_depth_bound():
    with pytest.raises(ValueError, match="more than 64 levels"):
        safe_json.loads(DEEP)
    with pytest.raises(ParseError, match="more than 64 levels"):
        extract_json("Here you go: " + DEEP)
    nested = "[" * 64 + "]" * 64
    assert safe_json.loads(nested) is not None
    assert safe_json.loads('{"a": "[[[[[[[[ brackets in a string do not nest"}')["a"].startswith("[[")


def test_every_transport_litellm_makes_is_bounded(monkeypatch):
    """LiteLLM's handler and the openai SDK clients it builds take their transports from one
    factory, and behind an HTTP(S)_PROXY from another: both come out bounded, proxies kept."""
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

    from litellm.llms.custom_httpx.aiohttp_transport import LiteLLMAiohttpTransport

    from promptlab.providers.litellm_loader import litellm

    litellm()
    made = AsyncHTTPHandler.create_async_transport()
    assert isinstance(made, LiteLLMAiohttpTransport) and made._promptlab_bounded  # still its own class
    monkeypatch.setenv("DISABLE_AIOHTTP_TRANSPORT", "True")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    transport = AsyncHTTPHandler.create_async_transport()
    assert transport._promptlab_bounded
    mounts = AsyncHTTPHandler.create_httpx_proxy_mounts(transport, verify=True, cert=None)
    assert mounts and all(m._promptlab_bounded for m in mounts.values() if m is not None)


def test_a_reply_is_cut_at_the_bound_of_the_call_reading_it():
    import asyncio

    import httpx

    from promptlab.providers.litellm_bound import bound, reply_limit

    class Endless(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            async def body():
                while True:
                    yield b"x" * 65536

            return httpx.Response(200, stream=_Stream(body()))

    async def read(limit: int | None) -> int:
        async with httpx.AsyncClient(transport=bound(Endless())) as client:
            if limit is None:
                return len((await client.get("http://x/")).content)
            with reply_limit(limit):
                return len((await client.get("http://x/")).content)

    from promptlab.providers.errors import CallError

    for limit in (100_000, None):  # None: the default bound (8 MiB)
        with pytest.raises(CallError) as err:
            asyncio.run(read(limit))
        assert err.value.kind == "reply_too_large" and f"{limit or 8 * 1024 ** 2:,}" in str(err.value)


class _Stream:
    def __init__(self, chunks):
        self.chunks = chunks

    def __aiter__(self):
        return self.chunks.__aiter__()

    async def aclose(self):
        await self.chunks.aclose()
