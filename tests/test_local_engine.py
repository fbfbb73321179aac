"""The embedded model used well: a call's timeout runs from when the model starts it and stops
the generation (never a retry beside a call still running), recent prompts' KV states survive
interleaving, and the local path does without LiteLLM."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from promptlab.providers import local_prefix
from promptlab.providers import local as lp
from promptlab.providers.llama import llama_available
from promptlab.config import ModelConfig
from promptlab.providers.errors import CallError
from promptlab.providers.gateway import Gateway

ROOT = Path(__file__).resolve().parent.parent
MODEL = "local/gemma-3-270m"
needs_llama = pytest.mark.skipif(not llama_available(), reason="llama-cpp-python (the 'local' extra) is missing")


class SlowLlama:
    """Stands in for llama_cpp.Llama: each completion computes for `seconds` (wall time), asking
    the model's abort hook as llama.cpp does, and fails as llama_decode does when it says stop."""

    def __init__(self, path: str, seconds: float):
        self.path, self.seconds, self.calls = path, seconds, 0
        self.lock = threading.Lock()

    def tokenize(self, text: bytes, special: bool = False) -> list[int]:
        return list(text)

    def create_completion(self, tokens: list[int], **sampling) -> dict:
        with self.lock:
            self.calls += 1
        ends = time.monotonic() + self.seconds
        while time.monotonic() < ends:
            if lp._STOPS[self.path](None):
                raise RuntimeError("llama_decode returned 2")
            time.sleep(0.005)
        return {"choices": [{"text": " positive", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(tokens), "completion_tokens": 1}}


@pytest.fixture
def slow_model(tmp_path, monkeypatch):
    """A local model whose calls take `seconds` each: (make(seconds, timeout) -> (config, llama))."""
    gguf = tmp_path / "slow.gguf"
    gguf.write_bytes(b"GGUF")
    path = str(gguf)
    monkeypatch.setenv("PROMPTLAB_LOCAL_PREFIX_MB", "0")  # a stand-in has no KV state to keep
    monkeypatch.setitem(lp._STOPS, path, lp._Stop())

    def make(seconds: float, timeout: float, concurrency: int):
        llama = SlowLlama(path, seconds)
        monkeypatch.setattr(lp, "get_llama", lambda p, kind="generate": llama)
        return ModelConfig(alias="slow", model=f"local/{path}", timeout=timeout, concurrency=concurrency), llama

    return make


def call_all(model: ModelConfig, n: int) -> list:
    gateway = Gateway(cache=None, retries=3, backoff_base=0.01)

    async def one(i: int):
        try:
            return await gateway.complete(model, [{"role": "user", "content": f"Review: {i}\nSentiment:"}])
        except CallError as exc:
            return exc

    async def every():
        return await asyncio.gather(*(one(i) for i in range(n)))

    return asyncio.run(every())


@pytest.mark.slow
def test_waiting_for_the_model_thread_is_no_timeout_and_nothing_runs_twice(slow_model):
    # 16 calls queue on the one model thread, 0.5 s each: the last waits 7.5 s, past the timeout
    # (and the 5 s grace the gateway adds to an HTTP call's), yet each call has the model for far
    # less than its timeout
    model, llama = slow_model(seconds=0.5, timeout=2.0, concurrency=16)
    results = call_all(model, 16)
    assert [type(r).__name__ for r in results] == ["Completion"] * 16
    assert llama.calls == 16 and all(r.attempts == 1 for r in results)


@pytest.mark.slow
def test_a_call_past_its_timeout_is_stopped_in_the_engine_and_not_retried(slow_model):
    model, llama = slow_model(seconds=3.0, timeout=0.3, concurrency=4)
    started = time.monotonic()
    results = call_all(model, 4)
    assert all(isinstance(r, CallError) and r.kind == "timeout" and r.attempts == 1 for r in results)
    assert "ran past its timeout of 0.3 s" in str(results[0])
    assert llama.calls == 4  # engine calls = results: none retried, none left running
    assert time.monotonic() - started < 4 * 3.0  # each stopped: the four did not compute 3 s each


def test_a_cancelled_caller_stops_its_generation(slow_model):
    model, llama = slow_model(seconds=30.0, timeout=60.0, concurrency=1)

    async def cancel_soon():
        call = asyncio.ensure_future(Gateway(cache=None).complete(model, [{"role": "user", "content": "hi"}]))
        while llama.calls == 0:
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(cancel_soon())
    with lp._call_lock(llama.path):  # free again: the generation stopped instead of computing on
        assert lp._STOPS[llama.path].tripped


# --------------------------------------------------------------------------- the real engine
SYSTEM = {"role": "system", "content": "Classify the sentiment of the review as positive or negative."}
DEMOS = [m for i in range(8) for m in (
    {"role": "user", "content": f"Review: demo review number {i}, which was {'lovely' if i % 2 else 'dreadful'}.\n"
                                f"Sentiment:"},
    {"role": "assistant", "content": "positive" if i % 2 else "negative"})]


def case(i: int) -> dict:
    return {"role": "user", "content": f"Review: the {i}th film I saw this year was {'great' if i % 2 else 'bad'}.\n"
                                       f"Sentiment:"}


@needs_llama
def test_the_abort_hook_stops_llama_cpp_and_the_model_answers_alike_after(monkeypatch):
    path = lp.resolve_model_path(MODEL)
    prompt, stops = lp.messages_to_prompt([SYSTEM, *DEMOS, case(3)])
    sampling = dict(max_tokens=4, temperature=0.0, stop=lp.merge_stops(lp.DEFAULT_STOPS, stops), seed=0)
    monkeypatch.setenv("PROMPTLAB_LOCAL_PREFIX_MB", "0")
    before = lp.complete_prompt(path, prompt, **sampling)["choices"][0]["text"]
    lp.get_llama(path).reset()  # nothing reused: the whole prompt is computed again
    with pytest.raises(lp.LocalTimeoutError, match="past its timeout"):
        lp.complete_prompt(path, prompt, timeout=1e-6, **sampling)
    assert lp.complete_prompt(path, prompt, **sampling)["choices"][0]["text"] == before


@needs_llama
def test_interleaved_prompts_each_resume_from_their_own_prefix(monkeypatch):
    path = lp.resolve_model_path(MODEL)
    llm = lp.get_llama(path)
    computed: list[int] = []
    real_eval = type(llm).eval
    monkeypatch.setattr(llm, "eval", lambda tokens: (computed.append(len(tokens)), real_eval(llm, tokens))[1],
                        raising=False)

    def replies(prefix_mb: str) -> tuple[list[str], list[int]]:
        monkeypatch.setenv("PROMPTLAB_LOCAL_PREFIX_MB", prefix_mb)
        local_prefix._STATES.clear()
        llm.reset()
        texts, prompt_tokens = [], []
        for i in range(3):  # zero-shot and 8-demo calls taking turns, as an experiment sends them
            for messages in ([SYSTEM, case(i)], [SYSTEM, *DEMOS, case(i)]):
                computed.clear()
                prompt, stops = lp.messages_to_prompt(messages)
                out = lp.complete_prompt(path, prompt, max_tokens=4, temperature=0.0, seed=0,
                                         stop=lp.merge_stops(lp.DEFAULT_STOPS, stops))
                texts.append(out["choices"][0]["text"])
                prompt_tokens.append(computed[0])  # the prompt tokens computed (the rest: the reply)
        return texts, prompt_tokens

    plain, plain_tokens = replies("0")
    kept, kept_tokens = replies("256")
    assert kept == plain  # a loaded state answers exactly as computing the prompt again
    few_shot_length = len(llm.tokenize(lp.messages_to_prompt([SYSTEM, *DEMOS, case(1)])[0].encode(), special=True))
    assert plain_tokens[3] > few_shot_length - 40  # without kept states: the demos again, every time
    assert kept_tokens[3] < 40 and kept_tokens[5] < 40  # with them: only the case's own tokens


@needs_llama
def test_the_local_path_does_without_litellm():
    script = ("import asyncio, sys\n"
              "from promptlab.config import ModelConfig\nfrom promptlab.providers.gateway import Gateway\n"
              "reply = asyncio.run(Gateway().complete(ModelConfig(model='local/gemma-3-270m'), "
              "[{'role': 'user', 'content': 'Review: great\\nSentiment:'}], {'max_tokens': 2}))\n"
              "vectors = asyncio.run(Gateway().embed(ModelConfig(model='local/gemma-3-270m'), ['good', 'bad']))\n"
              "print(len(vectors), reply.usage.cost, 'litellm' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2", "0.0", "False"]
