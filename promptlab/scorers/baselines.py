"""What a classifier that learned nothing would score, and whether a run collapsed.

For a signature with exactly one enum output, the best constant answer is
the majority expected label on the same cases: a prompt that does no better
than answering it every time has learned nothing, whatever its raw score.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

from promptlab.models import Signature

COLLAPSE_SHARE = 0.9  # at least this share of outputs being one label is a collapse


@dataclass(frozen=True)
class ConstantBaseline:
    field: str
    label: str
    score: float  # share of cases whose expected label is `label`
    n: int

    def as_json(self) -> dict:
        return {"field": self.field, "label": self.label, "score": self.score, "n": self.n}


@dataclass(frozen=True)
class Collapse:
    field: str
    label: str
    share: float  # share of parsed outputs equal to `label`
    n: int

    def as_json(self) -> dict:
        return {"field": self.field, "label": self.label, "share": self.share, "n": self.n}

    def warning(self) -> str:
        return (f"{self.share:.0%} of outputs answer {self.field}={self.label!r}: the prompt may have "
                f"collapsed to a constant answer")


def label_field(signature: Signature | None) -> str | None:
    """The output field of a one-output enum signature, else None."""
    if signature is None or len(signature.outputs) != 1 or signature.outputs[0].type != "enum":
        return None
    return signature.outputs[0].name


def constant_baseline(signature: Signature | None, expected: Iterable[dict]) -> ConstantBaseline | None:
    """The best constant answer's score on these expected outputs (None when not a classifier)."""
    name = label_field(signature)
    if name is None:
        return None
    labels = [_norm(row.get(name)) for row in expected if row and row.get(name) is not None]
    if not labels:
        return None
    label, count = _top(labels)
    return ConstantBaseline(name, label, round(count / len(labels), 6), len(labels))


def collapse(signature: Signature | None, parsed: Iterable[dict | None],
             share: float = COLLAPSE_SHARE) -> Collapse | None:
    """A Collapse when at least `share` of the parsed outputs are one label (needs ≥ 5 outputs)."""
    name = label_field(signature)
    if name is None:
        return None
    labels = [_norm(row.get(name)) for row in parsed if row and row.get(name) is not None]
    if len(labels) < 5:
        return None
    label, count = _top(labels)
    return Collapse(name, label, round(count / len(labels), 6), len(labels)) if count / len(labels) >= share else None


def _top(labels: list[str]) -> tuple[str, int]:
    """The most common label; ties go to the label that sorts first, so the choice is stable."""
    counts = Counter(labels)
    best = max(counts.values())
    return min(label for label, c in counts.items() if c == best), best


def _norm(value: Any) -> str:
    return str(value).strip().lower()
