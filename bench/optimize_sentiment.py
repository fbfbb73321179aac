"""Optimizers on the UCI sentiment set with the embedded local model, against DSPy.

Same data, model, splits and budget of model calls for every contender:
300 rows → 60 train / 60 val / 180 test (seeded, stratified), a zero-shot base
prompt, each promptlab strategy with `--budget` calls, and DSPy's
BootstrapFewShotWithRandomSearch (and MIPROv2 with --mipro) on the same model
through the same litellm provider (`promptlab.local_provider.register(litellm)`).

    python bench/optimize_sentiment.py                      # all strategies + DSPy, budget 1500
    python bench/optimize_sentiment.py --strategies bootstrap --no-dspy --budget 300

DSPy is not a promptlab dependency: it lives in its own environment, made once by

    python bench/optimize_sentiment.py --setup-dspy          # /work/bench-venv: a venv that sees
                                                             # promptlab's venv and adds `pip install dspy`

(or set PROMPTLAB_DSPY_PYTHON to a python that can import dspy and promptlab).

"calls used" counts every model request a search needed (a reply served from
the cache counts too, so the number does not depend on what ran before); the
held-out test scoring is reported apart. The store (and its response cache)
lives in --db, so a re-run finishes instantly with the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASET = Path(os.environ.get("PROMPTLAB_SENTIMENT",
                              "/work/shared/datasets/sentiment_binary/sentiment_binary.jsonl"))
BENCH_VENV = Path(os.environ.get("PROMPTLAB_BENCH_VENV", "/work/bench-venv"))
INSTRUCTION = "Classify the sentiment of the review as positive or negative."
TEMPLATE = "Review: {{ text }}\nSentiment:"
PARAMS = {"temperature": 0, "max_tokens": 3, "stop": ["\n"]}
STRATEGIES = ("iterative", "bootstrap", "genetic", "mcts")


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


def prepare(db: Path, seed: int):
    """Project, signature, zero-shot base prompt and cases with seeded 60/60/180 splits."""
    from promptlab.models import Case, PromptContent, Signature
    from promptlab.optimizers.splits import make_splits
    from promptlab.store import open_store

    store = open_store(db)
    project = f"sentiment-s{seed}"
    project_id = store.ensure_project(project, "optimizer bench")
    signature = Signature(name="sentiment", instruction=INSTRUCTION, inputs=["text"],
                          outputs=[{"name": "label", "type": "enum", "choices": ["positive", "negative"]}])
    sig_id = store.upsert_signature(project_id, signature)
    base = store.add_prompt(project_id, "sentiment", PromptContent(template=TEMPLATE, params=PARAMS),
                            signature_id=sig_id, message="zero-shot base")
    rows = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
    cases = [Case(id=i + 1, inputs={"text": r["text"]}, expected={"label": r["label"]})
             for i, r in enumerate(rows)]
    splits = make_splits(cases, seed, (60, 60, 180))
    tagged = [Case(inputs=c.inputs, expected=c.expected, split=name)
              for name in ("train", "val", "test") for c in getattr(splits, name)]
    store.add_cases(project_id, tagged, source=str(DATASET))
    return store, project_id, base


def run_strategy(store, project_id, base, strategy: str, budget: int, seed: int, concurrency: int,
                 quiet: bool, tag: str = "") -> dict:
    from promptlab import display
    from promptlab.config import ModelConfig, load_settings
    from promptlab.optimizers.base import Budget
    from promptlab.optimizers.optimize import OptimizeRequest, resume, start

    settings = load_settings(ROOT)
    local = ModelConfig(alias="local", model="local/gemma-3-270m", params={"temperature": 0})
    name = f"{strategy}-s{seed}-b{budget}{'-' + tag if tag else ''}"
    progress = display.make_search_progress(quiet=quiet)
    if store.find_optimization(project_id, name):
        return resume(store, settings, project_id, name, progress=progress)
    request = OptimizeRequest(name=name, strategy=strategy, prompt=base.ref, model="local", proposer="local",
                              budget=Budget(calls=budget), seed=seed, concurrency=concurrency)
    return start(store, settings, project_id, request, progress=progress, models={"local": local})


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
    ap.add_argument("--budget", type=int, default=1500, help="model calls per contender")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--db", type=Path, default=Path("/tmp/promptlab-bench/bench.db"))
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-dspy", action="store_true")
    ap.add_argument("--mipro", action="store_true", help="also run DSPy's MIPROv2")
    ap.add_argument("--setup-dspy", action="store_true", help="make the DSPy environment and exit")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--tag", default="", help="suffix for the optimization names (a fresh search in the same --db)")
    args = ap.parse_args()
    if args.setup_dspy:
        print(setup_dspy())
        return

    store, project_id, base = prepare(args.db, args.seed)
    rows = []
    for strategy in [s for s in args.strategies.split(",") if s]:
        started = time.perf_counter()
        report = run_strategy(store, project_id, base, strategy, args.budget, args.seed, args.concurrency,
                              args.quiet, args.tag)
        rows.append({"name": f"promptlab:{strategy}", "base_test": report["base"]["test"],
                     "best_test": report["winner"]["test"], "best_val": report["winner"]["val"],
                     "calls": report["spent"]["calls"], "provider_calls": report["spent"]["provider_calls"],
                     "winner": report["winner"]["ref"], "demos": report["winner"]["demos"],
                     "stopped": report["stopped"], "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if not args.no_dspy:
        python = dspy_python()
        if python is None:
            print(f"DSPy skipped: no environment with dspy; make one with "
                  f"`python {Path(__file__).relative_to(ROOT)} --setup-dspy`", file=sys.stderr)
        else:
            rows += run_dspy(python, store, project_id, args.budget, args.seed, args.mipro)

    print(f"\nsentiment_binary, local/gemma-3-270m, seed {args.seed}, splits 60/60/180, "
          f"budget {args.budget} calls per contender")
    print(f"{'contender':<28}{'base test':>10}{'best test':>10}{'lift':>8}{'calls used':>12}{'sent':>7}"
          f"{'secs':>8}  note")
    for r in rows:
        if r.get("error"):
            print(f"{r['name']:<28}{'error: ' + ' '.join(r['error']):>10}")
            continue
        lift = r["best_test"] - r["base_test"] if r.get("base_test") is not None else float("nan")
        print(f"{r['name']:<28}{r['base_test']:>10.3f}{r['best_test']:>10.3f}{lift:>+8.3f}"
              f"{r['calls']:>12}{r.get('provider_calls', r['calls']):>7}{r.get('seconds', 0):>8.0f}  "
              f"{r.get('stopped') or r.get('note', '')}")


if __name__ == "__main__":
    main()
