"""The embedded local model (``local/...`` LiteLLM custom provider).

The prompt-format tests are pure. The model tests make real llama.cpp calls
(few and short) and are skipped when llama-cpp-python is not installed.
"""

from __future__ import annotations

import asyncio
import os

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm  # noqa: E402

from promptlab.providers import local as lp  # noqa: E402
from promptlab.providers.llama import llama_available  # noqa: E402
from promptlab.providers import local_litellm as litellm_provider  # noqa: E402
from promptlab.providers.local import messages_to_prompt  # noqa: E402

MODEL = "local/gemma-3-270m"


# --------------------------------------------------------------------------- pure: prompt format
def test_zero_shot_prompt_ends_where_the_answer_goes():
    prompt, stops = messages_to_prompt(
        [
            {"role": "system", "content": "Classify the sentiment."},
            {"role": "user", "content": "Review: great film\nSentiment:"},
        ]
    )
    assert prompt == "Classify the sentiment.\n\nReview: great film\nSentiment:"
    assert stops == ["\nReview:"]


def test_few_shot_demos_join_with_space_after_colon():
    prompt, stops = messages_to_prompt(
        [
            {"role": "system", "content": "Classify."},
            {"role": "user", "content": "Review: good\nSentiment:"},
            {"role": "assistant", "content": "positive"},
            {"role": "user", "content": "Review: bad\nSentiment:"},
            {"role": "assistant", "content": "negative"},
            {"role": "user", "content": "Review: fine\nSentiment:"},
        ]
    )
    assert prompt == (
        "Classify.\n\n"
        "Review: good\nSentiment: positive\n\n"
        "Review: bad\nSentiment: negative\n\n"
        "Review: fine\nSentiment:"
    )
    assert stops == ["\nReview:"]


def test_newline_join_without_colon_and_no_system():
    prompt, stops = messages_to_prompt(
        [
            {"role": "user", "content": "Translate to French: cat"},
            {"role": "assistant", "content": "chat"},
            {"role": "user", "content": "Translate to French: dog"},
        ]
    )
    assert prompt == "Translate to French: cat\nchat\n\nTranslate to French: dog\n"
    assert stops == ["\nTranslate to French:"]


def test_no_label_stop_for_long_or_colonless_first_line():
    _, stops = messages_to_prompt([{"role": "user", "content": "Tell me a story about a cat"}])
    assert stops == []
    _, stops = messages_to_prompt(
        [{"role": "user", "content": "Please read the following long text and then answer: x"}]
    )
    assert stops == []


def test_assistant_prefill_is_continued_and_content_parts_are_joined():
    prompt, _ = messages_to_prompt(
        [
            {"role": "system", "content": [{"type": "text", "text": "Sys."}]},
            {"role": "user", "content": "Q: 2+2?\nA:"},
            {"role": "assistant", "content": "The answer is"},
        ]
    )
    assert prompt == "Sys.\n\nQ: 2+2?\nA: The answer is"


def test_merge_stops_and_sampling_defaults():
    assert lp.merge_stops(("\n\n",), ["\nReview:"], "\n\n") == ["\n\n", "\nReview:"]
    assert lp.merge_stops(None, ["", "x"]) == ["x"]
    s = lp._sampling({}, ["\nReview:"])
    assert s["temperature"] == 0.0 and s["max_tokens"] == lp.DEFAULT_MAX_TOKENS
    assert s["stop"] == ["\n\n", "\nReview:"]
    s = lp._sampling({"temperature": 0.7, "max_tokens": 5, "stop": "END", "seed": 3, "top_p": 0.9}, [])
    assert s == {**s, "temperature": 0.7, "max_tokens": 5, "seed": 3, "top_p": 0.9}
    assert s["stop"] == ["\n\n", "END"]


def test_model_naming(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert lp.resolve_model_path(f"local/{gguf}") == str(gguf)
    monkeypatch.chdir(tmp_path)
    assert lp.resolve_model_path("./m.gguf") == str(gguf)
    with pytest.raises(lp.LocalModelNotFoundError, match="not found"):
        lp.resolve_model_path("./missing.gguf")
    with pytest.raises(lp.LocalModelNotFoundError, match="unknown local model"):
        lp.resolve_model_path("local/llama-9000")


def test_register_is_idempotent():
    litellm_provider.register(litellm)
    litellm_provider.register(litellm)
    assert [i["provider"] for i in litellm.custom_provider_map].count("local") == 1
    assert "local" in litellm.provider_list


def test_missing_extra_error_names_the_install_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError("no llama_cpp")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(lp.LocalExtraMissingError, match=r"pip install -e '\.\[local\]'"):
        lp.import_llama()


# --------------------------------------------------------------------------- real model calls
needs_llama = pytest.mark.skipif(
    not llama_available(), reason="llama-cpp-python (the 'local' extra) is not installed"
)

SENTIMENT = [
    {"role": "system", "content": "Classify the sentiment of the review as positive or negative."},
    {"role": "user", "content": "Review: I loved it, wonderful acting.\nSentiment:"},
    {"role": "assistant", "content": "positive"},
    {"role": "user", "content": "Review: Awful, a total waste of time.\nSentiment:"},
    {"role": "assistant", "content": "negative"},
    {"role": "user", "content": "Review: The food was delicious and the staff friendly.\nSentiment:"},
]


@pytest.fixture(scope="module")
def local_litellm():
    litellm_provider.register(litellm)
    return litellm


def _run(coro):
    return asyncio.run(coro)


@needs_llama
def test_completion_text_usage_cost_and_determinism(local_litellm):
    async def go():
        a = await local_litellm.acompletion(model=MODEL, messages=SENTIMENT, temperature=0, max_tokens=8)
        b = await local_litellm.acompletion(model=MODEL, messages=SENTIMENT, temperature=0, max_tokens=8)
        return a, b

    a, b = _run(go())
    text = a.choices[0].message.content
    assert isinstance(text, str) and text.strip()
    assert text == b.choices[0].message.content  # greedy at temperature 0
    assert text.split()[0].lower().strip(".,!") == "positive"
    assert a.usage.prompt_tokens > 10 and 0 < a.usage.completion_tokens <= 8
    assert local_litellm.completion_cost(completion_response=a) == 0.0


@needs_llama
def test_stop_is_honoured_and_sync_completion_works(local_litellm):
    messages = [{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6, 7,"}]
    free = local_litellm.completion(model=MODEL, messages=messages, temperature=0, max_tokens=8)
    assert "8" in free.choices[0].message.content
    stopped = local_litellm.completion(model=MODEL, messages=messages, temperature=0, max_tokens=8, stop=["8"])
    assert "8" not in stopped.choices[0].message.content
    assert stopped.usage.completion_tokens < free.usage.completion_tokens


@needs_llama
def test_concurrent_calls_all_succeed(local_litellm):
    async def go():
        return await asyncio.gather(
            *[
                local_litellm.acompletion(model=MODEL, messages=SENTIMENT, temperature=0, max_tokens=4)
                for _ in range(4)
            ]
        )

    replies = _run(go())
    texts = {r.choices[0].message.content for r in replies}
    assert len(replies) == 4 and len(texts) == 1 and texts.pop()


@needs_llama
def test_embeddings_shape_and_similarity(local_litellm):
    texts = [
        "The movie was wonderful and I loved it.",
        "I really enjoyed this film, it was great.",
        "The invoice is due on the third of March.",
    ]
    resp = _run(local_litellm.aembedding(model=MODEL, input=texts))
    vecs = [d["embedding"] for d in resp.data]
    assert len(vecs) == 3 and len({len(v) for v in vecs}) == 1 and len(vecs[0]) > 100

    def cos(u, v):
        return sum(a * b for a, b in zip(u, v))

    for v in vecs:
        assert abs(cos(v, v) - 1.0) < 1e-4  # normalised
    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2])
    assert resp.usage.prompt_tokens > 0


@needs_llama
def test_unknown_model_is_a_clear_permanent_error(local_litellm):
    with pytest.raises(litellm.exceptions.NotFoundError, match="unknown local model"):
        local_litellm.completion(model="local/nope", messages=[{"role": "user", "content": "hi"}])


def test_litellm_roundtrip_with_a_fake_llama(monkeypatch, tmp_path):
    """The litellm plumbing (params in, ModelResponse/usage/cost out) without llama.cpp."""
    litellm_provider.register(litellm)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    seen = {}

    def fake_complete(path, prompt, **sampling):
        seen.update(sampling, path=path, prompt=prompt)
        return {
            "choices": [{"text": " positive\n", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2},
        }

    monkeypatch.setattr(lp, "complete_prompt", fake_complete)
    r = asyncio.run(
        litellm.acompletion(
            model=f"local/{gguf}",
            messages=[{"role": "user", "content": "Review: ok\nSentiment:"}],
            temperature=0.3,
            max_tokens=5,
            stop=["END"],
            seed=7,
            top_p=0.8,
        )
    )
    assert r.choices[0].message.content == "positive"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (12, 2)
    assert r._hidden_params["response_cost"] == 0.0
    assert seen["path"] == str(gguf) and seen["prompt"] == "Review: ok\nSentiment:"
    assert (seen["temperature"], seen["max_tokens"], seen["seed"], seen["top_p"]) == (0.3, 5, 7, 0.8)
    assert seen["stop"] == ["\n\n", "\nReview:", "END"]


def test_thread_count_can_be_set_for_shared_machines(monkeypatch):
    from promptlab.providers.local import _n_threads

    monkeypatch.setenv("PROMPTLAB_LOCAL_THREADS", "1")
    assert _n_threads() == 1
    monkeypatch.delenv("PROMPTLAB_LOCAL_THREADS")
    assert _n_threads() >= 1


def test_the_default_thread_count_leaves_busy_cores_alone(monkeypatch):
    import os

    from promptlab.providers import local as local_provider

    monkeypatch.delenv("PROMPTLAB_LOCAL_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    for load, threads in ((0.2, 4), (5.5, 2), (7.5, 1), (25.0, 1)):  # idle cores, capped at 4
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
        assert local_provider._n_threads() == threads, load
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert local_provider._n_threads() == 2
    monkeypatch.setenv("PROMPTLAB_LOCAL_THREADS", "3")  # the variable still decides when set
    assert local_provider._n_threads() == 3


@pytest.mark.parametrize("kind", ["generate", "embed"])
def test_prompt_processing_gets_the_same_threads_as_generation(monkeypatch, tmp_path, kind):
    """llama-cpp-python reads prompts on every core of the machine unless told otherwise, whatever
    the load (on 2 busy cores an 8-shot call took 3.4x the time and 4.5x the CPU:
    bench/local_threads.py --batch-threads same,cores --load 2)."""
    from types import SimpleNamespace

    from promptlab.providers import local as local_provider

    made: list[dict] = []

    class Llama:
        def __init__(self, **kwargs):
            made.append(kwargs)
            self._ctx = SimpleNamespace(ctx=None)

    fake = SimpleNamespace(Llama=Llama, LLAMA_POOLING_TYPE_MEAN=1, ggml_abort_callback=lambda stop: stop,
                           llama_set_abort_callback=lambda ctx, hook, data: None)
    monkeypatch.setattr(local_provider, "import_llama", lambda: fake)
    monkeypatch.setattr(local_provider, "_MODELS", {})
    monkeypatch.setattr(local_provider, "_STOPS", {})
    monkeypatch.setenv("PROMPTLAB_LOCAL_THREADS", "1")
    local_provider.get_llama(str(tmp_path / "m.gguf"), kind)
    assert made[0]["n_threads"] == made[0]["n_threads_batch"] == 1


@pytest.mark.slow
def test_llama_cpps_log_stays_out_of_the_terminal(tmp_path):
    """Loading the embedded model printed `llama_context: n_ctx_per_seq (4096) < n_ctx_train …`
    before every table; the CLI's stderr is now empty, and PROMPTLAB_DEBUG shows the log."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMPTLAB_CONFIG": str(tmp_path / "none.toml"), "PROMPTLAB_LOCAL_THREADS": "1"}
    (tmp_path / "none.toml").write_text("")
    env.pop("PROMPTLAB_DEBUG", None)
    quiet = subprocess.run([sys.executable, "-m", "promptlab", "models", "check", "local"], cwd=tmp_path,
                           env=env, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.startswith("local: ok") and quiet.stderr == ""
    loud = subprocess.run([sys.executable, "-m", "promptlab", "models", "check", "local"], cwd=tmp_path,
                          env={**env, "PROMPTLAB_DEBUG": "1"}, capture_output=True, text=True)
    assert loud.returncode == 0 and "n_ctx_per_seq" in loud.stderr
