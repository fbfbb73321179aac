"""The DSPy side of bench/optimize.py --dspy (runs in the DSPy environment, not promptlab's).

BootstrapFewShotWithRandomSearch (or MIPROv2) on the same local model, the same
train/val/test rows and a call budget. DSPy has no call budget of its own, so
the number of candidate programs is the largest whose compile needs no more
calls than the budget: we compile, count, and take one candidate fewer while
the count is over (DSPy's disk cache makes each retry cheap; the count is of
every LM call, a cached one included, as promptlab counts its own).

Prints one JSON line: name, base_test, best_test, calls, candidates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Literal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INSTRUCTION = "Classify the sentiment of the review as positive or negative."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--budget", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optimizer", choices=["bfrs", "mipro"], default="bfrs")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--cache-dir", type=Path, default=None)
    args = ap.parse_args()
    if args.cache_dir:
        os.environ["DSPY_CACHEDIR"] = str(args.cache_dir)

    import litellm

    from promptlab.providers import local as local_provider

    local_provider.register(litellm)
    import dspy

    class CountingLM(dspy.LM):
        """Counts every call (a cached one too)."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.count = 0
            self.lock = threading.Lock()

        def __call__(self, *a, **kw):
            with self.lock:
                self.count += 1
            return super().__call__(*a, **kw)

        async def acall(self, *a, **kw):
            with self.lock:
                self.count += 1
            return await super().acall(*a, **kw)

    lm = CountingLM("local/gemma-3-270m", temperature=0.0, max_tokens=16, cache=True, num_retries=0)
    dspy.configure(lm=lm)

    class Sentiment(dspy.Signature):
        __doc__ = INSTRUCTION
        text: str = dspy.InputField()
        label: Literal["positive", "negative"] = dspy.OutputField()

    rows = json.loads(args.data.read_text())
    sets = {name: [dspy.Example(text=r["text"], label=r["label"]).with_inputs("text") for r in rows[name]]
            for name in ("train", "val", "test")}

    def metric(example, prediction, trace=None) -> bool:
        return str(getattr(prediction, "label", "")).strip().lower() == example.label

    def test_accuracy(program) -> float:
        evaluate = dspy.Evaluate(devset=sets["test"], metric=metric, num_threads=args.threads,
                                 display_progress=False, max_errors=10_000, provide_traceback=False)
        result = evaluate(program)
        score = getattr(result, "score", result)
        return float(score) / 100.0

    base = dspy.Predict(Sentiment)
    before = lm.count

    def compile_with(n: int):
        lm.count = 0
        if args.optimizer == "bfrs":
            from dspy.teleprompt import BootstrapFewShotWithRandomSearch

            tp = BootstrapFewShotWithRandomSearch(metric=metric, num_candidate_programs=n,
                                                  num_threads=args.threads, max_errors=10_000)
            program = tp.compile(dspy.Predict(Sentiment), trainset=sets["train"], valset=sets["val"])
        else:
            from dspy.teleprompt import MIPROv2

            tp = MIPROv2(metric=metric, auto=None, num_candidates=n, num_threads=args.threads,
                         max_errors=10_000, seed=args.seed, verbose=False)
            program = tp.compile(dspy.Predict(Sentiment), trainset=sets["train"], valset=sets["val"],
                                 num_trials=max(2, n), requires_permission_to_run=False,
                                 minibatch=False)
        return program, lm.count

    n = max(1, args.budget // max(1, len(sets["val"])) - 3)
    program, calls = compile_with(n)
    while calls > args.budget and n > 1:
        n -= 1
        program, calls = compile_with(n)
    del before
    base_test = test_accuracy(base)
    best_test = test_accuracy(program)
    demos = len(getattr(program, "demos", []) or [])
    name = "dspy:BootstrapFewShotWithRandomSearch" if args.optimizer == "bfrs" else "dspy:MIPROv2"
    print(json.dumps({"name": name, "base_test": base_test, "best_test": best_test, "calls": calls,
                      "candidates": n, "demos": demos,
                      "note": f"{n} candidate programs, {demos} demos, budget {args.budget}"}))


if __name__ == "__main__":
    main()
