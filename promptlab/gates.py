"""Quality gates: named checks over run summaries; any failure means exit 1.

Keys (in an experiment's `gates:` or as CLI flags):
  min_score: 0.8 | {metric: 0.8}   every run's metric mean must reach it
  min_pass_rate: 0.9               share of scored items that passed
  max_error_rate: 0.05             share of items that ended in an error
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptlab.errors import UsageError

KNOWN = ("min_score", "min_pass_rate", "max_error_rate")


@dataclass(frozen=True)
class GateResult:
    name: str       # e.g. "min_score[exact_match] one-word@1 on fake"
    passed: bool
    actual: float | None
    limit: float
    message: str


def validate_gates(gates: dict[str, Any], where: str = "gates") -> None:
    for key, value in gates.items():
        if key not in KNOWN:
            raise UsageError(f"{where}: unknown gate '{key}'; known gates are {', '.join(KNOWN)}")
        values = value.values() if isinstance(value, dict) and key == "min_score" else [value]
        for v in values:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise UsageError(f"{where}.{key}: expected a number, got {v!r}")


def check_gates(gates: dict[str, Any], runs: list[dict]) -> list[GateResult]:
    """Each gate against each run (run dicts as evaluation.run_json makes them)."""
    results: list[GateResult] = []
    for run in runs:
        label = f"{run['prompt']}@{run['version']} on {run['model']}"
        if "min_score" in gates:
            wanted = gates["min_score"]
            limits = wanted if isinstance(wanted, dict) else {m: wanted for m in run["scores"]}
            for metric, limit in limits.items():
                actual = run["scores"].get(metric)
                ok = actual is not None and actual >= limit
                results.append(GateResult(f"min_score[{metric}] {label}", ok, actual, limit,
                                          f"{metric} mean {_fmt(actual)} {'>=' if ok else '<'} {limit}"))
        if "min_pass_rate" in gates:
            actual, limit = run.get("pass_rate"), gates["min_pass_rate"]
            ok = actual is not None and actual >= limit
            results.append(GateResult(f"min_pass_rate {label}", ok, actual, limit,
                                      f"pass rate {_fmt(actual)} {'>=' if ok else '<'} {limit}"))
        if "max_error_rate" in gates:
            rate = run["errors"] / run["n"] if run["n"] else 1.0
            limit = gates["max_error_rate"]
            ok = rate <= limit
            results.append(GateResult(f"max_error_rate {label}", ok, rate, limit,
                                      f"error rate {rate:.3f} {'<=' if ok else '>'} {limit}"))
    return results


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
