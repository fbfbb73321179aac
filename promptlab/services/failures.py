"""What a run got wrong, counted: the analysis `promptlab suggest` starts from.

Counted over (case, result) items in one pass (`Tally`, bounded memory) — no store, no model:

- for a classifier (one enum output): the confused label pairs (both directions counted),
  per-label precision / recall / F1, and whether the outputs collapsed onto one label;
- for any run: parse failures and errors by kind (with a message), per-tag pass rates;
- the categories to work on first: the labels and tags that lose the most items.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from promptlab.models import Case, Signature
from promptlab.optimizers.operators import enum_output

UNPARSED = "(no label)"
MIN_TAG_CASES = 3      # a tag on fewer cases says nothing about a category
COLLAPSE_SHARE = 0.8   # outputs this concentrated on one label: the prompt learned a constant


@dataclass(frozen=True)
class Item:
    """One result, reduced to what the analysis reads."""

    case: Case
    passed: bool
    predicted: Any          # the parsed enum value (classifiers), else None
    parse_error: str | None
    error_kind: str | None
    error: str | None
    output: str


class Tally:
    """The analysis of a run's results counted as they stream past: one pass, memory bounded by the
    labels, tags and error kinds (not by the results). `sample` keeps the first failures that did
    not error (case, reply), for a model to read."""

    def __init__(self, signature: Signature | None, sample: int = 0):
        output = enum_output(signature)
        self.field = output.name if output is not None else None
        self.sample_size, self.sample = sample, []
        self.n = self.failed = self.failures = self.long_replies = 0
        self.errors, self.parse_failures = _Kinds(), _Kinds()
        self.labels = _Labels() if self.field is not None else None
        self.tag_n: Counter[str] = Counter()
        self.tag_failed: Counter[str] = Counter()

    def add(self, item: Item) -> None:
        self.n += 1
        self.failed += not item.passed
        if item.error_kind:
            self.errors.add(item.error_kind, item.error)
        elif item.parse_error:
            self.parse_failures.add("parse", item.parse_error)
        if not item.passed and not item.error_kind:
            self.failures += 1
            self.long_replies += len(item.output) > 200
            if len(self.sample) < self.sample_size:
                self.sample.append((item.case, item.output))
        if self.labels is not None and not item.error_kind:  # an error says nothing of the labels
            self.labels.add(str(item.case.expected.get(self.field)),
                            UNPARSED if item.predicted is None else str(item.predicted), item.case.id)
        for tag in item.case.tags:
            self.tag_n[tag] += 1
            self.tag_failed[tag] += not item.passed

    def analysis(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "failed": self.failed, "errors": self.errors.rows(),
                               "parse_failures": self.parse_failures.rows(), "classification": None,
                               "categories": []}
        categories: list[dict[str, Any]] = []
        if self.labels is not None:
            out["classification"] = self.labels.summary(self.field)
            categories += [{"kind": "label", "name": row["label"], "n": row["support"],
                            "failed": row["support"] - row["correct"], "f1": row["f1"]}
                           for row in out["classification"]["labels"]]
        categories += [{"kind": "tag", "name": tag, "n": n, "failed": self.tag_failed[tag],
                        "pass_rate": round(1 - self.tag_failed[tag] / n, 4)}
                       for tag, n in self.tag_n.items() if n >= MIN_TAG_CASES]
        out["categories"] = sorted((c for c in categories if c["failed"]),
                                   key=lambda c: (-c["failed"], c["kind"], str(c["name"])))
        out["patterns"] = patterns(out, self.long_replies)
        return out


def analyse(signature: Signature | None, items: Iterable[Item]) -> dict[str, Any]:
    tally = Tally(signature)
    for item in items:
        tally.add(item)
    return tally.analysis()


class _Kinds:
    """Counts by kind, most first, each with its first message."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def add(self, kind: str, message: str | None) -> None:
        self.counts[kind] += 1
        self.first.setdefault(kind, (message or "")[:200])

    def rows(self) -> list[dict[str, Any]]:
        return [{"kind": k, "count": n, "message": self.first[k]} for k, n in self.counts.most_common()]


class _Labels:
    """A classifier's confusions and per-label counts."""

    def __init__(self) -> None:
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.examples: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.support: Counter[str] = Counter()
        self.predicted: Counter[str] = Counter()
        self.correct: Counter[str] = Counter()

    def add(self, want: str, got: str, case_id: int | None) -> None:
        self.support[want] += 1
        self.predicted[got] += 1
        if got == want:
            self.correct[want] += 1
        else:
            self.pairs[(want, got)] += 1
            if len(self.examples[(want, got)]) < 5 and case_id is not None:
                self.examples[(want, got)].append(case_id)

    def summary(self, field: str) -> dict[str, Any]:
        pairs, examples, support, predicted, correct = (self.pairs, self.examples, self.support,
                                                         self.predicted, self.correct)
        confusions = []
        for a, b in {tuple(sorted(p)) for p in pairs}:
            ab, ba = pairs.get((a, b), 0), pairs.get((b, a), 0)
            confusions.append({"labels": [a, b], "count": ab + ba, "a_as_b": ab, "b_as_a": ba,
                               "examples": examples.get((a, b), []) + examples.get((b, a), [])})
        confusions.sort(key=lambda c: (-c["count"], c["labels"]))
        labels = []
        for label in sorted(set(support) | (set(predicted) - {UNPARSED})):
            p = correct[label] / predicted[label] if predicted[label] else 0.0
            r = correct[label] / support[label] if support[label] else 0.0
            labels.append({"label": label, "support": support[label], "predicted": predicted[label],
                           "correct": correct[label], "precision": round(p, 4), "recall": round(r, 4),
                           "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0})
        total = sum(predicted.values())
        top, top_n = predicted.most_common(1)[0] if predicted else (None, 0)
        collapsed = top if total >= 5 and top != UNPARSED and top_n / total >= COLLAPSE_SHARE \
            and len(support) > 1 else None
        return {"field": field, "confusions": confusions, "labels": labels, "collapsed_onto": collapsed,
                "unparsed": predicted[UNPARSED]}


def patterns(analysis: dict[str, Any], long_replies: int) -> list[str]:
    """What the counts say, in words (the model adds its own reading of the failures)."""
    out = []
    n = analysis["n"] or 1
    cls = analysis["classification"]
    if cls and cls["collapsed_onto"]:
        out.append(f"the outputs collapsed onto '{cls['collapsed_onto']}': the prompt answers one label "
                   "whatever the input")
    if cls and cls["confusions"]:
        top = cls["confusions"][0]
        a, b = top["labels"]
        out.append(f"'{a}' and '{b}' are confused {top['count']} times ({a} read as {b}: {top['a_as_b']}, "
                   f"{b} read as {a}: {top['b_as_a']})")
    parse = sum(k["count"] for k in analysis["parse_failures"])
    if parse:
        out.append(f"{parse} of {analysis['n']} replies did not parse ({analysis['parse_failures'][0]['message']})")
    errors = sum(k["count"] for k in analysis["errors"])
    if errors:
        out.append(f"{errors} of {analysis['n']} items ended in an error ({analysis['errors'][0]['kind']}): "
                   "fix the provider side before the prompt")
    if long_replies >= max(2, 0.2 * n):
        out.append(f"{long_replies} failed replies are long (over 200 characters): the model explains "
                   "instead of answering")
    return out
