"""Throughput (and sentiment accuracy) of the embedded local model.

Throughput: calls/s through promptlab's gateway (retries, rate limits and the
``local`` LiteLLM provider; cache off, concurrency 4) against calling
``llama_cpp.Llama.create_completion`` directly (sequentially) on the same loaded
model, same prompts, same parameters.

Accuracy (``--accuracy``): zero-shot vs 8-shot binary sentiment on the UCI
sentiment set, with the messages the product sends (system = instruction,
demo turns user "Review: <text>\\nSentiment:" / assistant "<label>").

    python bench/local_throughput.py                 # throughput, N=40
    python bench/local_throughput.py --accuracy      # + zero-shot / 8-shot accuracy
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import string
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptlab.providers import local as lp  # noqa: E402
from promptlab.config import ModelConfig  # noqa: E402
from promptlab.providers.gateway import Gateway  # noqa: E402

MODEL = "local/gemma-3-270m"
DATASET = Path(os.environ.get("PROMPTLAB_SENTIMENT", "/work/shared/datasets/sentiment_binary/sentiment_binary.jsonl"))
ZERO_SHOT_SYSTEM = "Classify the sentiment of the review as positive or negative."
PARAMS = {"temperature": 0, "max_tokens": 4}


def load(path: Path = DATASET) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def user_turn(text: str) -> str:
    return f"Review: {text}\nSentiment:"


def build_messages(text: str, demos: list[dict] = (), system: str = ZERO_SHOT_SYSTEM) -> list[dict]:
    messages = [{"role": "system", "content": system}]
    for d in demos:
        messages.append({"role": "user", "content": user_turn(d["text"])})
        messages.append({"role": "assistant", "content": d["label"]})
    messages.append({"role": "user", "content": user_turn(text)})
    return messages


def pick_demos(rows: list[dict], k: int = 8) -> list[dict]:
    """k demos, alternating positive/negative, from rows not used for evaluation."""
    pos = [r for r in rows if r["label"] == "positive"][: k // 2]
    neg = [r for r in rows if r["label"] == "negative"][: k - k // 2]
    out = []
    for p, n in zip(pos, neg):
        out += [p, n]
    return out


def parse(reply: str) -> str:
    words = reply.strip().split()
    return words[0].lower().strip(string.punctuation) if words else ""


# --------------------------------------------------------------------------- the two paths
async def through_promptlab(batch: list[list[dict]], concurrency: int = 4) -> list[str]:
    """Replies via promptlab's gateway (as `promptlab eval` calls it), no cache."""
    sem = asyncio.Semaphore(concurrency)
    gateway, model = Gateway(cache=None), ModelConfig(alias="local", model=MODEL)

    async def one(messages: list[dict]) -> str:
        async with sem:
            return (await gateway.complete(model, messages, PARAMS, use_cache=False)).text

    return await asyncio.gather(*[one(m) for m in batch])


def direct_llama(batch: list[list[dict]]) -> list[str]:
    """Same prompts and parameters straight into llama_cpp.Llama, sequentially."""
    llm = lp.get_llama(lp.resolve_model_path(MODEL))  # the same loaded model file
    out = []
    for messages in batch:
        prompt, extra = lp.messages_to_prompt(messages)
        r = llm.create_completion(
            prompt,
            max_tokens=PARAMS["max_tokens"],
            temperature=0.0,
            stop=lp.merge_stops(lp.DEFAULT_STOPS, extra),
            seed=0,
            repeat_penalty=1.0,
        )
        out.append(r["choices"][0]["text"].strip())
    return out


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def accuracy(replies: list[str], rows: list[dict]) -> float:
    return sum(parse(r) == row["label"] for r, row in zip(replies, rows)) / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per path (best is kept)")
    ap.add_argument("--accuracy", action="store_true", help="also measure zero-shot vs 8-shot accuracy")
    args = ap.parse_args()

    rows = load()
    evals, pool = rows[: args.n], rows[args.n :]
    zero = [build_messages(r["text"]) for r in evals]

    # warm up (model load is not part of the measurement)
    t0 = time.perf_counter()
    asyncio.run(through_promptlab(zero[:1]))
    print(f"model load + first call: {time.perf_counter() - t0:.2f}s")
    direct_llama(zero[:1])

    # alternate the two paths and keep each one's best round: the machine may be shared
    dt_d = dt_p = float("inf")
    for _ in range(args.rounds):
        replies_p, t = timed(lambda b: asyncio.run(through_promptlab(b, args.concurrency)), zero)
        dt_p = min(dt_p, t)
        replies_d, t = timed(direct_llama, zero)
        dt_d = min(dt_d, t)
    n = len(zero)
    print(f"cores: {lp._n_threads()}, load average: {os.getloadavg()[0]:.2f}")
    print(f"direct llama_cpp (sequential):       {n / dt_d:6.2f} calls/s  ({dt_d:.2f}s for {n})")
    print(f"through promptlab (concurrency {args.concurrency}): {n / dt_p:6.2f} calls/s  ({dt_p:.2f}s for {n})")
    print(f"ratio promptlab/direct: {dt_d / dt_p:.2f}")
    print(f"same replies on both paths: {replies_d == replies_p}")

    if args.accuracy:
        demos = pick_demos(pool)
        few = [build_messages(r["text"], demos) for r in evals]
        replies_f, dt_f = timed(lambda b: asyncio.run(through_promptlab(b, args.concurrency)), few)
        print(f"\nzero-shot accuracy: {accuracy(replies_p, evals):.3f}")
        print(f"8-shot accuracy:    {accuracy(replies_f, evals):.3f}  ({n / dt_f:.2f} calls/s)")
        print("zero-shot first words:", Counter(parse(r) for r in replies_p).most_common(8))
        print("8-shot first words:   ", Counter(parse(r) for r in replies_f).most_common(8))
        print("zero-shot raw replies (first 10):")
        for r in replies_p[:10]:
            print("   ", repr(r))


if __name__ == "__main__":
    main()
