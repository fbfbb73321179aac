"""The classification metric (alias: accuracy).

Per result: 1 if the predicted label equals the expected one, else 0. Labels
compare trimmed, case-insensitively and without surrounding punctuation
("Positive." == "positive") unless case_sensitive; a prediction is mapped to
its canonical spelling among the known labels.

Known labels: the ``labels`` argument, else the signature field's enum
choices, plus every expected label seen. summarize adds accuracy, per_label
{label: {precision, recall, f1, support}}, macro_f1 (over labels that occur
as expected or predicted), labels (ordered) and confusion (rows = expected,
columns = predicted, both in `labels` order). Predictions outside the known
labels, and parse failures, go to an extra "(other)" label, added last only
when needed.
"""

from __future__ import annotations

import re
from typing import Any

from promptlab.scorers.base import Score, ScoreInput
from promptlab.scorers.registry import BaseMetric, Early, as_text, expected_value, field_spec, need_field, predicted_value

OTHER = "(other)"
_EDGE = re.compile(r"^[^\w]+|[^\w]+$")


def classification(field: str | None = None, labels: list[str] | None = None,
                   case_sensitive: bool = False) -> BaseMetric:
    def norm(label: Any) -> str:
        text = " ".join(_EDGE.sub("", as_text(label).strip()).split())
        return text if case_sensitive else text.casefold()

    def score(item: ScoreInput) -> Score:
        name = need_field(item, field)
        spec = field_spec(item, name)
        known = list(labels or (spec.choices if spec and spec.choices else []))
        canon = {norm(k): k for k in known}
        expected = as_text(expected_value(item, name))
        expected = canon.get(norm(expected), expected)
        base = {"expected": expected, **({"choices": known} if known else {})}
        try:
            raw = predicted_value(item, name)
        except Early as early:
            if early.score.value is None:
                raise
            return Score(0.0, False, {**early.score.detail, **base, "predicted": None})
        predicted = canon.get(norm(raw), as_text(raw))
        ok = norm(predicted) == norm(expected)
        return Score(1.0 if ok else 0.0, ok, {**base, "predicted": expected if ok else predicted})

    def extra(scores: list[Score]) -> dict[str, Any]:
        return confusion_summary([s for s in scores if s.value is not None], norm)

    return BaseMetric("classification", score, extra=extra)


def confusion_summary(scores: list[Score], norm: Any = str) -> dict[str, Any]:
    """Accuracy, per-label P/R/F1, macro F1 and the confusion matrix from score details."""
    order: list[str] = []
    for s in scores:
        for label in s.detail.get("choices") or []:
            if label not in order:
                order.append(label)
    for s in scores:
        if s.detail.get("expected") is not None and s.detail["expected"] not in order:
            order.append(s.detail["expected"])
    by_norm = {norm(label): label for label in order}
    pairs = []
    for s in scores:
        predicted = s.detail.get("predicted")
        predicted = OTHER if predicted is None else by_norm.get(norm(predicted), OTHER)
        pairs.append((s.detail.get("expected"), predicted))
    labels = order + ([OTHER] if any(p == OTHER for _, p in pairs) else [])
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for expected, predicted in pairs:
        if expected in index:
            matrix[index[expected]][index[predicted]] += 1
    per_label: dict[str, dict[str, float | int]] = {}
    for label in order:
        i = index[label]
        tp = matrix[i][i]
        support = sum(matrix[i])
        predicted_n = sum(row[i] for row in matrix)
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support,
                            "predicted": predicted_n}
    active = [v["f1"] for v in per_label.values() if v["support"] or v["predicted"]]
    correct = sum(1 for e, p in pairs if e == p)
    return {"accuracy": correct / len(pairs) if pairs else None, "per_label": per_label,
            "macro_f1": sum(active) / len(active) if active else None, "labels": labels,
            "confusion": matrix}
