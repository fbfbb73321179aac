"""The numeric metric: a number within tolerance of the expected one.

A string value (e.g. "The answer is 1,234.5") yields the number it contains:
the last one by default (answers after reasoning come last), or the first with
``pick="first"``. Thousands separators, signs, decimals and exponents are read.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from promptlab.scorers.base import MetricError, Score, ScoreInput
from promptlab.scorers.registry import BaseMetric, Early, expected_value, need_field, predicted_value

_NUMBER = re.compile(
    r"[-+\u2212]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
)


def extract_number(value: Any, pick: str = "last") -> float | None:
    """The number a value holds or mentions; None when there is none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    found = _NUMBER.findall(value)
    if not found:
        return None
    text = (found[-1] if pick == "last" else found[0]).replace(",", "").replace("\u2212", "-")
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def numeric(field: str | None = None, abs_tol: float = 1e-9, rel_tol: float = 1e-9,
            pick: Literal["last", "first"] = "last") -> BaseMetric:
    """1 if |predicted - expected| <= max(abs_tol, rel_tol * |expected|) (math.isclose), else 0.

    No number in the output scores 0 with a reason. summarize adds mae, mse and
    rmse over the results that had a number (n_numeric of them).
    """
    for arg, tol in (("abs_tol", abs_tol), ("rel_tol", rel_tol)):
        if tol < 0:
            raise MetricError(f"metric 'numeric': argument '{arg}' must not be negative (got {tol})")

    def score(item: ScoreInput) -> Score:
        name = need_field(item, field)
        raw_expected = expected_value(item, name)
        expected = extract_number(raw_expected, pick)
        if expected is None:
            raise Early(Score(None, False, {"error": f"the expected value {raw_expected!r} is not a number"}))
        raw = predicted_value(item, name)
        predicted = extract_number(raw, pick)
        if predicted is None:
            return Score(0.0, False, {"reason": f"no number in {str(raw)[:80]!r}", "expected": expected})
        ok = math.isclose(predicted, expected, rel_tol=rel_tol, abs_tol=abs_tol)
        return Score(1.0 if ok else 0.0, ok, {"predicted": predicted, "expected": expected,
                                              "abs_error": abs(predicted - expected)})

    def extra(scores: list[Score]) -> dict[str, Any]:
        errors = [s.detail["abs_error"] for s in scores if s.value is not None and "abs_error" in s.detail]
        if not errors:
            return {"n_numeric": 0, "mae": None, "mse": None, "rmse": None}
        mse = sum(e * e for e in errors) / len(errors)
        return {"n_numeric": len(errors), "mae": sum(errors) / len(errors), "mse": mse, "rmse": math.sqrt(mse)}

    return BaseMetric("numeric", score, extra=extra)
