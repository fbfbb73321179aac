"""Throughput, prefix reuse (and sentiment accuracy) of the embedded local model.

Throughput: calls/s through promptlab's gateway (retries, rate limits, the
local path; cache off, concurrency 4) against calling
``llama_cpp.Llama.create_completion`` directly (sequentially) on the same loaded
model, same prompts, same parameters.

Interleaving: the CPU seconds of each 8-demo call (the process's, measured around
the engine call on the model thread) when an experiment's 8-demo calls take turns
with zero-shot calls, against the same 8-demo calls alone; engine calls against
results; whether LiteLLM got imported.

Accuracy (``--accuracy``): zero-shot vs 8-shot binary sentiment on the UCI
sentiment set, with the messages the product sends (system = instruction,
demo turns user "Review: <text>\\nSentiment:" / assistant "<label>").

    python bench/local_throughput.py                 # throughput, N=40, and interleaving
    python bench/local_throughput.py --accuracy      # + zero-shot / 8-shot accuracy
    python bench/local_throughput.py --code DIR      # promptlab from another checkout (before/after)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import string
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
_CODE = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv else str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _CODE)

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


class EngineMeter:
    """Counts the engine's calls, and the process CPU seconds and the prompt tokens llama.cpp
    computed for each 8-demo call (wrapping the completion the model thread runs, and the model's
    eval: the tokens are what prefix reuse saves, exactly, where CPU seconds vary with the load)."""

    def __init__(self):
        self.calls, self.cpu, self.tokens, self.into = 0, [], [], None
        real, llm = lp.complete_prompt, lp.get_llama(lp.resolve_model_path(MODEL))
        real_eval, computed = type(llm).eval, []
        llm.eval = lambda tokens: (computed.append(len(tokens)), real_eval(llm, tokens))[1]

        def measured(path, prompt, **kw):
            before = time.process_time()
            computed.clear()
            try:
                return real(path, prompt, **kw)
            finally:
                self.calls += 1
                if self.into is not None and prompt.count("Sentiment:") > 2:  # an 8-demo prompt
                    self.into[0].append(time.process_time() - before)
                    self.into[1].append(computed[0] if computed else 0)

        lp.complete_prompt = measured


def interleaving(evals: list[dict], demos: list[dict], n: int, rounds: int) -> None:
    """CPU per 8-demo call alone and taking turns with zero-shot calls, in one process, alternated
    over `rounds` (medians: a shared machine's load comes and goes)."""
    few = [build_messages(r["text"], demos) for r in evals[:n]]
    zero = [build_messages(r["text"]) for r in evals[n:2 * n]]
    turns = [m for pair in zip(zero, few) for m in pair]
    meter = EngineMeter()
    asyncio.run(through_promptlab(few[:1], 1))  # warm: the demos' prefix is not part of either measure
    meter.calls, results = 0, 0
    alone, mixed = ([], []), ([], [])
    for _ in range(rounds):
        for meter.into, batch in ((alone, few), (mixed, turns)):
            results += len(asyncio.run(through_promptlab(batch, 1)))
    (cpu_a, tokens_a), (cpu_m, tokens_m) = ([statistics.median(x) for x in m] for m in (alone, mixed))
    print(f"\nper 8-demo call ({n} a round, {rounds} rounds; medians)   CPU s   prompt tokens computed")
    print(f"  alone                                  {cpu_a:7.3f}   {tokens_a:6.0f}")
    print(f"  taking turns with zero-shot calls      {cpu_m:7.3f}   {tokens_m:6.0f}")
    print(f"ratio turns / alone: {cpu_m / cpu_a:.2f}x CPU (target <= 1.2x), {tokens_m / tokens_a:.2f}x tokens")
    print(f"engine calls {meter.calls} for {results} results")
    print(f"litellm imported: {'litellm' in sys.modules}")


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
    ap.add_argument("--interleave", type=int, default=12, help="8-demo calls in the interleaving measure (0: skip)")
    ap.add_argument("--code", help="the checkout whose promptlab runs (default: this one)")
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
    dt_d = dt_p = cpu_d = cpu_p = float("inf")
    for _ in range(args.rounds):
        cpu = time.process_time()
        replies_p, t = timed(lambda b: asyncio.run(through_promptlab(b, args.concurrency)), zero)
        dt_p, cpu_p = min(dt_p, t), min(cpu_p, time.process_time() - cpu)
        cpu = time.process_time()
        replies_d, t = timed(direct_llama, zero)
        dt_d, cpu_d = min(dt_d, t), min(cpu_d, time.process_time() - cpu)
    n = len(zero)
    print(f"cores: {lp._n_threads()}, load average: {os.getloadavg()[0]:.2f}")
    print(f"direct llama_cpp (sequential):       {n / dt_d:6.2f} calls/s  ({dt_d:.2f}s for {n}, "
          f"{cpu_d / n:.3f} s CPU a call)")
    print(f"through promptlab (concurrency {args.concurrency}): {n / dt_p:6.2f} calls/s  ({dt_p:.2f}s for {n}, "
          f"{cpu_p / n:.3f} s CPU a call)")
    print(f"ratio promptlab/direct: {dt_d / dt_p:.2f} in calls/s, {cpu_p / cpu_d:.2f}x the CPU a call "
          f"(wall time means little on a loaded machine: CPU is the measure)")
    print(f"same replies on both paths: {replies_d == replies_p}")

    if args.interleave:
        interleaving(rows[: 2 * args.interleave], pick_demos(pool), args.interleave, args.rounds)

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
