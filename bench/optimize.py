"""Optimizers on held-out classification tasks with the embedded local model (and DSPy on sentiment).

For each task, the same data, model, splits and call budget for every strategy
and search seed: the split is made once per task with its own seed (stored on
the cases), so different search seeds are scored on the same cases. Per
strategy and seed it prints the test score, the lift over the best baseline
(the base, the best constant answer and the naive k-shot version the
optimization scores itself) with the paired bootstrap p-value, and the calls used.

    python bench/optimize.py --task banking10 --seeds 0 1 --budget 1500
    python bench/optimize.py --task sms --strategies bootstrap,reflect --seeds 0 --budget 600
    python bench/optimize.py --task banking10 --strategies bootstrap,mipro,params --budget 600
    python bench/optimize.py --task sentiment --dspy        # also DSPy's BootstrapFewShotWithRandomSearch

Tasks (files in /work/shared/datasets, see each SOURCE.md): sentiment (300
reviews, positive/negative, 60/60/180), sms (300 SMS, spam/ham, 60/60/180),
banking10 (banking77's first 10 intents of labels.txt: 100 queries, 30/30/40); two the
optimizers were never tuned on: banking10b (the next 10 intents) and sms-skewed (one message
in five spam: 187 SMS, 40/40/107, the constant answer scores 0.80).

DSPy is not a promptlab dependency: it lives in its own environment, made once by

    python bench/optimize.py --setup-dspy          # /work/bench-venv: a venv that sees
                                                   # promptlab's venv and adds `pip install dspy`

(or set PROMPTLAB_DSPY_PYTHON to a python that can import dspy and promptlab).

"calls used" counts every model request a search needed (a reply served from
the cache counts too, so the number does not depend on what ran before); the
held-out test scoring is reported apart. The store (and its response cache)
lives in --db, so a re-run finishes instantly with the same numbers. On a busy
2-core machine pin it to one core (`taskset -c 1 python bench/optimize.py ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = Path(os.environ.get("PROMPTLAB_DATASETS", "/work/shared/datasets"))
BENCH_VENV = Path(os.environ.get("PROMPTLAB_BENCH_VENV", "/work/bench-venv"))
STRATEGIES = ("iterative", "bootstrap", "genetic", "mcts", "reflect", "mipro", "params")


@dataclass(frozen=True)
class Task:
    file: str
    instruction: str
    template: str
    splits: tuple[int, int, int]
    max_tokens: int = 3
    labels_file: str | None = None  # keep only the rows of these labels (`n_labels` from `first_label`)
    n_labels: int = 0
    first_label: int = 0
    cap: tuple[tuple[str, int], ...] = ()  # at most this many rows of a label (a skewed task)


TASKS = {
    "sentiment": Task("sentiment_binary/sentiment_binary.jsonl",
                      "Classify the sentiment of the review as positive or negative.",
                      "Review: {{ text }}\nSentiment:", (60, 60, 180)),
    "sms": Task("sms_spam/sms_spam.jsonl", "Classify the SMS message as spam or ham (a legitimate message).",
                "Message: {{ text }}\nLabel:", (60, 60, 180)),
    "banking10": Task("banking77/banking77_test.jsonl", "Classify the intent of the bank customer's query.",
                      "Query: {{ text }}\nIntent:", (30, 30, 40), max_tokens=12,
                      labels_file="banking77/labels.txt", n_labels=10),
    # banking77's next 10 intents: a task the optimizers were never tuned on
    "banking10b": Task("banking77/banking77_test.jsonl", "Classify the intent of the bank customer's query.",
                       "Query: {{ text }}\nIntent:", (30, 30, 40), max_tokens=12,
                       labels_file="banking77/labels.txt", n_labels=10, first_label=10),
    # spam as one message in five: the constant answer `ham` scores 0.80
    "sms-skewed": Task("sms_spam/sms_spam.jsonl", "Classify the SMS message as spam or ham (a legitimate message).",
                       "Message: {{ text }}\nLabel:", (40, 40, 107), cap=(("spam", 37),)),
}


def rows_of(task: Task) -> tuple[list[dict], list[str]]:
    rows = [json.loads(line) for line in (DATASETS / task.file).read_text().splitlines() if line.strip()]
    caps, seen = dict(task.cap), Counter()
    for r in rows:
        seen[r["label"]] += 1
        r["_over_cap"] = seen[r["label"]] > caps.get(r["label"], len(rows))
    rows = [r for r in rows if not r.pop("_over_cap")]
    if task.labels_file:
        keep = (DATASETS / task.labels_file).read_text().split()[task.first_label:task.first_label + task.n_labels]
        return [r for r in rows if r["label"] in keep], keep
    return rows, sorted({r["label"] for r in rows})


def setup_dspy() -> Path:
    """A venv that sees promptlab's environment (a .pth file) plus DSPy from PyPI."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        here = [p for p in sys.path if p.endswith("site-packages")][0]
        Path(site, "promptlab-venv.pth").write_text(here + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "dspy"], check=True)
    return python


def dspy_python() -> Path | None:
    explicit = os.environ.get("PROMPTLAB_DSPY_PYTHON")
    python = Path(explicit) if explicit else BENCH_VENV / "bin" / "python"
    if not python.exists():
        return None
    ok = subprocess.run([str(python), "-c", "import dspy"], capture_output=True).returncode == 0
    return python if ok else None


def prepare(db: Path, name: str, task: Task, split_seed: int):
    """Project, signature, zero-shot base prompt and cases with the task's seeded, stratified splits."""
    from promptlab.models import Case, PromptContent, Signature
    from promptlab.optimizers.splits import make_splits
    from promptlab.store import open_store

    store = open_store(db)
    project_id = store.ensure_project(f"{name}-split{split_seed}", "optimizer bench")
    rows, labels = rows_of(task)
    signature = Signature(name=name, instruction=task.instruction, inputs=["text"],
                          outputs=[{"name": "label", "type": "enum", "choices": labels}])
    sig_id = store.upsert_signature(project_id, signature)
    params = {"temperature": 0, "max_tokens": task.max_tokens, "stop": ["\n"]}
    base = store.add_prompt(project_id, name, PromptContent(template=task.template, params=params),
                            signature_id=sig_id, message="zero-shot base")
    cases = [Case(id=i + 1, inputs={"text": r["text"]}, expected={"label": r["label"]})
             for i, r in enumerate(rows)]
    splits = make_splits(cases, split_seed, task.splits)
    tagged = [Case(inputs=c.inputs, expected=c.expected, split=part)
              for part in ("train", "val", "test") for c in getattr(splits, part)]
    store.add_cases(project_id, tagged, source=str(DATASETS / task.file))
    return store, project_id, base


def run_strategy(store, project_id, base, strategy: str, budget: int, seed: int, concurrency: int,
                 quiet: bool, tag: str = "") -> dict:
    from promptlab.display.progress import make_progress
    from promptlab.config import ModelConfig, load_settings
    from promptlab.optimizers.base import Budget
    from promptlab.optimizers.optimize import OptimizeRequest, resume, start

    settings = load_settings(ROOT)
    local = ModelConfig(alias="local", model="local/gemma-3-270m", params={"temperature": 0})
    name = f"{strategy}-s{seed}-b{budget}{'-' + tag if tag else ''}"
    progress = make_progress("none" if quiet else "auto")
    if store.find_optimization(project_id, name):
        return resume(store, settings, project_id, name, progress=progress)
    request = OptimizeRequest(name=name, strategy=strategy, prompt=base.ref, model="local", proposer="local",
                              budget=Budget(calls=budget), seed=seed, concurrency=concurrency)
    return start(store, settings, project_id, request, progress=progress, models={"local": local})


def row(strategy: str, seed: int, report: dict, seconds: float) -> dict:
    best = report["lift"].get("best_baseline") or {}
    naive = report.get("naive") or {}
    constant = report.get("constant_baseline") or {}
    return {"name": f"promptlab:{strategy}", "seed": seed, "base_test": report["base"]["test"],
            "naive_test": naive.get("test"), "constant_test": constant.get("score"),
            "best_test": report["winner"]["test"], "best_val": report["winner"]["val"],
            "over": best.get("name"), "lift": best.get("lift"), "p_value": best.get("p_value"),
            "calls": report["spent"]["calls"], "provider_calls": report["spent"]["provider_calls"],
            "winner": report["winner"]["ref"], "operator": next(
                (c["operator"] for c in report["candidates"] if c["prompt_id"] == report["winner"]["prompt_id"]), ""),
            "stopped": report["stopped"], "seconds": round(seconds, 1)}


def run_dspy(python: Path, store, project_id, budget: int, seed: int, mipro: bool) -> list[dict]:
    cases = {name: [{"text": c.inputs["text"], "label": c.expected["label"]}
                    for c in store.cases(project_id, split=name)] for name in ("train", "val", "test")}
    data = Path(store.path).with_name(f"dspy-splits-s{seed}.json")
    data.write_text(json.dumps(cases))
    out = []
    for optimizer in ["bfrs"] + (["mipro"] if mipro else []):
        cmd = [str(python), str(ROOT / "bench" / "dspy_sentiment.py"), "--data", str(data),
               "--budget", str(budget), "--seed", str(seed), "--optimizer", optimizer,
               "--cache-dir", str(Path(store.path).with_name(f"dspy-cache-s{seed}"))]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            out.append({"name": f"dspy:{optimizer}", "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["seconds"] = round(time.perf_counter() - started, 1)
        out.append(result)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="sentiment")
    ap.add_argument("--budget", type=int, default=1500, help="model calls per strategy and seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="search seeds")
    ap.add_argument("--split-seed", type=int, default=0, help="the split's own seed")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--db", type=Path, default=Path("/tmp/promptlab-bench/bench.db"))
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--dspy", action="store_true", help="also DSPy's BootstrapFewShotWithRandomSearch (sentiment)")
    ap.add_argument("--mipro", action="store_true", help="also DSPy's MIPROv2 (with --dspy)")
    ap.add_argument("--setup-dspy", action="store_true", help="make the DSPy environment and exit")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--tag", default="", help="suffix for the optimization names (a fresh search in the same --db)")
    args = ap.parse_args()
    if args.setup_dspy:
        print(setup_dspy())
        return

    args.db.parent.mkdir(parents=True, exist_ok=True)
    store, project_id, base = prepare(args.db, args.task, TASKS[args.task], args.split_seed)
    rows = []
    for seed in args.seeds:
        for strategy in [s for s in args.strategies.split(",") if s]:
            started = time.perf_counter()
            report = run_strategy(store, project_id, base, strategy, args.budget, seed, args.concurrency,
                                  args.quiet, args.tag)
            rows.append(row(strategy, seed, report, time.perf_counter() - started))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.dspy:
            python = dspy_python()
            if python is None or args.task != "sentiment":
                print("DSPy skipped: it runs on --task sentiment, in an environment made with "
                      f"`python {Path(__file__).relative_to(ROOT)} --setup-dspy`", file=sys.stderr)
            else:
                rows += [{**r, "seed": seed} for r in run_dspy(python, store, project_id, args.budget, seed,
                                                                args.mipro)]

    task = TASKS[args.task]
    print(f"\n{args.task}, local/gemma-3-270m, split seed {args.split_seed} "
          f"({'/'.join(map(str, task.splits))}), budget {args.budget} calls per strategy and seed")
    print(f"{'contender':<22}{'seed':>5}{'base':>7}{'const':>7}{'naive':>7}{'test':>7}{'lift':>8}  {'over':<9}"
          f"{'p':>7}{'calls':>7}{'sent':>6}{'secs':>7}  winner / stopped")
    for r in rows:
        if r.get("error"):
            print(f"{r['name']:<22}{r['seed']:>5}  error: {' '.join(r['error'])}")
            continue
        print(f"{r['name']:<22}{r['seed']:>5}{_f(r.get('base_test'))}{_f(r.get('constant_test'))}"
              f"{_f(r.get('naive_test'))}{_f(r['best_test'])}{_f(r.get('lift'), 8, '+')}  {r.get('over') or '':<9}"
              f"{_p(r.get('p_value'))}{r['calls']:>7}{r.get('provider_calls', r['calls']):>6}"
              f"{r.get('seconds', 0):>7.0f}  {r.get('operator', '')} {r.get('stopped') or r.get('note', '')}")


def _p(value) -> str:
    return f"{'-':>7}" if value is None else f"{value:>7.2g}"


def _f(value, width: int = 7, sign: str = "") -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{sign}{width}.3f}"


if __name__ == "__main__":
    main()
