"""CPU and wall time of the embedded model at different thread counts, on a machine as busy as it is
(plus `--load K` busy processes): the measurement behind the local model's thread default.

Each thread count runs in a fresh process that loads the model, then answers N sentiment prompts
(the messages the product sends); the process reports the wall time of the answers and the CPU
time it spent on them (user + system). Thread counts alternate, `--rounds` times, so a change in
the machine's load hits each of them alike.

    python bench/local_threads.py                    # threads 1, 2 and every core; N=16, 2 rounds
    python bench/local_threads.py --load 4 --n 24    # with 4 extra busy processes
    python bench/local_threads.py --threads 1 --demos 8 --batch-threads same,cores
        # prompt processing on promptlab's threads vs llama-cpp-python's default (every core),
        # on 8-shot prompts, where reading the prompt is most of a call
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXTS = ["I loved every minute of it.", "The battery died after an hour.", "Fine, nothing special.",
         "Worst purchase this year.", "Arrived early and works great.", "The screen cracked on day two."]


def child(n: int, demos: int, batch_threads: str) -> None:
    """Load the model (PROMPTLAB_LOCAL_THREADS threads), answer n prompts, print wall and CPU s.
    `batch_threads` "cores": prompt processing on llama-cpp-python's default (every core)."""
    from promptlab.providers import local as lp

    if batch_threads == "cores":
        llama_cpp = lp.import_llama()
        init = llama_cpp.Llama.__init__

        def default_batch_threads(self, *args, **kwargs):
            kwargs.pop("n_threads_batch", None)
            init(self, *args, **kwargs)

        llama_cpp.Llama.__init__ = default_batch_threads
    path = lp.resolve_model_path(lp.DEFAULT_MODEL)
    shots = [turn for i in range(demos) for turn in (
        {"role": "user", "content": f"Review: {TEXTS[(i + 1) % len(TEXTS)]} (demo {i})\nSentiment:"},
        {"role": "assistant", "content": "positive" if i % 2 else "negative"})]
    messages = [{"role": "system", "content": "Classify the sentiment of the review as positive or negative."},
                *shots, {"role": "user", "content": f"Review: {TEXTS[0]}\nSentiment:"}]
    lp.complete_prompt(path, lp.messages_to_prompt(messages)[0], temperature=0, max_tokens=4)  # loads
    cpu0, wall0 = _cpu(), time.perf_counter()
    for i in range(n):
        messages[-1]["content"] = f"Review: {TEXTS[i % len(TEXTS)]} ({i})\nSentiment:"
        lp.complete_prompt(path, lp.messages_to_prompt(messages)[0], temperature=0, max_tokens=4)
    print(json.dumps({"wall_s": time.perf_counter() - wall0, "cpu_s": _cpu() - cpu0}))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load", type=int, default=0, help="extra busy processes while measuring")
    parser.add_argument("--threads", default=f"1,2,{len(os.sched_getaffinity(0))}")
    parser.add_argument("--demos", type=int, default=0, help="few-shot demos in each prompt")
    parser.add_argument("--batch-threads", default="same",
                        help="prompt processing threads: same (promptlab's), cores (llama-cpp-python's default), or both")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.n, args.demos, args.batch_threads)
    counts = [(int(t), b) for t in sorted({int(t) for t in args.threads.split(",")})
              for b in args.batch_threads.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench still stops its busy processes
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    totals = {t: {"wall_s": 0.0, "cpu_s": 0.0} for t in counts}
    try:
        for _ in range(args.rounds):
            for t in counts:
                out = subprocess.run([sys.executable, __file__, "--child", "--n", str(args.n), "--demos",
                                      str(args.demos), "--batch-threads", t[1]], check=True,
                                     capture_output=True, text=True,
                                     env={**os.environ, "PROMPTLAB_LOCAL_THREADS": str(t[0])}).stdout
                for key, value in json.loads(out.splitlines()[-1]).items():
                    totals[t][key] += value
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    calls = args.n * args.rounds
    print(f"load average {os.getloadavg()[0]:.1f} (+{args.load} busy), {calls} calls per setting, "
          f"{args.demos} demos a prompt")
    for t in counts:
        wall, cpu = totals[t]["wall_s"], totals[t]["cpu_s"]
        print(f"threads {t[0]}, prompt threads {t[1]}: wall {wall / calls:.3f} s/call, cpu {cpu / calls:.3f} s/call")


if __name__ == "__main__":
    main()
