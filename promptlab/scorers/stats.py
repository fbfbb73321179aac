"""Statistics for metric summaries and run comparison (numpy + math only).

- `bootstrap_ci`      percentile bootstrap interval of a mean (clustered: by case, over repeats);
- `repeat_consistency` pass@1, pass@k, pass^k, agreement and the flaky cases of k attempts per case;
- `paired_bootstrap`  delta of two paired samples, its interval and a two-sided p-value;
- `mcnemar`           McNemar's test for paired pass/fail outcomes;
- `summarize_scores`  the keys every metric summary has (n, errors, mean, ci, pass_rate).
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

_CHUNK = 2_000_000  # max resampled values held in memory at once


def _resampled_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator,
                     sizes: np.ndarray | None = None) -> np.ndarray:
    """Means of `n_resamples` bootstrap resamples of `values` (chunked to bound memory). With
    `sizes`, each value is the sum of a cluster of that many results, and a resample's mean is
    its clusters' sum over their sizes."""
    n = len(values)
    per_chunk = max(1, _CHUNK // n)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, per_chunk):
        stop = min(n_resamples, start + per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1) if sizes is None else values[idx].sum(1) / sizes[idx].sum(1)
    return out


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if arr.ndim != 1 or len(arr) == 0:
        raise ValueError(f"{what} needs a non-empty list of numbers")
    return arr


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
    clusters: Sequence[Any] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; reproducible for a given seed.

    `clusters` (one label per value, e.g. its case): resample whole clusters, so k repeats of
    one case count as one case, not k independent ones (a deterministic model repeated k times
    gets the interval it gets once). One value (or all values equal) gives a degenerate interval
    (mean, mean). The interval always contains the sample mean.
    """
    arr = _as_array(values, "bootstrap_ci")
    mean = float(arr.mean())
    if len(arr) < 2 or np.all(arr == arr[0]):
        return mean, mean
    rng = np.random.default_rng(seed)
    if clusters is None:
        means = _resampled_means(arr, n_resamples, rng)
    else:
        if len(clusters) != len(arr):
            raise ValueError(f"bootstrap_ci needs a cluster per value (got {len(clusters)} for {len(arr)})")
        groups: dict[Any, list[float]] = {}
        for label, value in zip(clusters, arr):
            groups.setdefault(label, []).append(value)
        sums = np.array([sum(g) for g in groups.values()])
        sizes = np.array([len(g) for g in groups.values()], dtype=float)
        if len(sums) < 2:
            return mean, mean
        means = _resampled_means(sums, n_resamples, rng, sizes)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return min(float(low), mean), max(float(high), mean)


def repeat_consistency(passes: Mapping[Any, Sequence[bool]],
                       answers: Mapping[Any, Sequence[Any]] | None = None) -> dict[str, Any]:
    """How consistent k attempts per case are. `passes`: case -> whether each attempt passed.

    pass_at_1: share of attempts that passed; pass_at_k: share of cases some attempt passed;
    pass_hat_k (pass^k): share of cases every attempt passed; agreement: mean share of a case's
    attempts giving its most common answer (`answers`, JSON-able); flaky: cases whose attempts
    both passed and failed.
    """
    cases = [c for c, p in passes.items() if p]
    if not cases:
        return {"k": 0, "cases": 0, "pass_at_1": None, "pass_at_k": None, "pass_hat_k": None,
                "agreement": None, "flaky": []}
    attempts = [p for c in cases for p in passes[c]]
    agreement = None
    if answers is not None:
        shares = []
        for c in cases:
            seen = [json.dumps(a, sort_keys=True, default=str) for a in answers.get(c, ())]
            if seen:
                shares.append(max(seen.count(a) for a in set(seen)) / len(seen))
        agreement = float(np.mean(shares)) if shares else None
    return {"k": max(len(passes[c]) for c in cases), "cases": len(cases),
            "pass_at_1": sum(attempts) / len(attempts),
            "pass_at_k": sum(any(passes[c]) for c in cases) / len(cases),
            "pass_hat_k": sum(all(passes[c]) for c in cases) / len(cases),
            "agreement": agreement,
            "flaky": [c for c in cases if any(passes[c]) and not all(passes[c])]}


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Compare paired samples: delta = mean(b - a), its bootstrap interval and p-value.

    The two-sided p-value is 2 x the smaller tail of the bootstrap distribution of
    the mean difference on either side of 0 (add-one smoothed, capped at 1), so
    identical samples give p = 1 and a large consistent difference a p near 0.
    """
    arr_a, arr_b = _as_array(a, "paired_bootstrap"), _as_array(b, "paired_bootstrap")
    if len(arr_a) != len(arr_b):
        raise ValueError(f"paired_bootstrap needs samples of equal length (got {len(arr_a)} and {len(arr_b)})")
    diff = arr_b - arr_a
    delta = float(diff.mean())
    if len(diff) < 2 or np.all(diff == diff[0]):
        means = np.full(n_resamples, delta)
    else:
        means = _resampled_means(diff, n_resamples, np.random.default_rng(seed))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    below = int(np.count_nonzero(means <= 0))
    above = int(np.count_nonzero(means >= 0))
    p_value = min(1.0, 2.0 * (min(below, above) + 1) / (n_resamples + 1))
    return {"delta": delta, "ci_low": min(float(low), delta), "ci_high": max(float(high), delta),
            "p_value": p_value}


def mcnemar(a_pass: Sequence[bool], b_pass: Sequence[bool]) -> dict[str, Any]:
    """McNemar's test on paired pass/fail outcomes of runs a and b.

    b01 = cases a failed and b passed (fixed); b10 = cases a passed and b failed
    (regressed). Fewer than 25 discordant pairs: exact two-sided binomial test
    (statistic = min(b01, b10)); otherwise chi-square with continuity correction.
    """
    if len(a_pass) != len(b_pass):
        raise ValueError(f"mcnemar needs outcome lists of equal length (got {len(a_pass)} and {len(b_pass)})")
    b01 = sum(1 for x, y in zip(a_pass, b_pass) if not x and y)
    b10 = sum(1 for x, y in zip(a_pass, b_pass) if x and not y)
    n = b01 + b10
    if n == 0:
        return {"b01": 0, "b10": 0, "statistic": 0.0, "p_value": 1.0, "method": "exact"}
    if n < 25:
        k = min(b01, b10)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
        return {"b01": b01, "b10": b10, "statistic": float(k), "p_value": min(1.0, 2.0 * tail),
                "method": "exact"}
    stat = (abs(b01 - b10) - 1.0) ** 2 / n
    # chi-square with 1 degree of freedom: P(X > stat) = erfc(sqrt(stat / 2))
    return {"b01": b01, "b10": b10, "statistic": stat, "p_value": math.erfc(math.sqrt(stat / 2.0)),
            "method": "chi2"}


def summarize_scores(scores: Sequence[Any]) -> dict[str, Any]:
    """The keys every metric summary has.

    n: scored results (value not None); errors: results that could not be scored;
    mean with a 95% bootstrap interval (ci_low, ci_high; 1000 resamples, seed 0);
    pass_rate: passed / n. With n = 0, mean, ci and pass_rate are None.
    """
    values = [s.value for s in scores if s.value is not None]
    errors = len(scores) - len(values)
    if not values:
        return {"n": 0, "errors": errors, "mean": None, "ci_low": None, "ci_high": None,
                "pass_rate": None}
    low, high = bootstrap_ci(values)
    passed = sum(1 for s in scores if s.value is not None and s.passed)
    return {"n": len(values), "errors": errors, "mean": float(np.mean(values)), "ci_low": low,
            "ci_high": high, "pass_rate": passed / len(values)}
