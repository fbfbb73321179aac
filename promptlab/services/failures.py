"""What a run got wrong, counted: the analysis `promptlab suggest` starts from.

Pure functions over (case, result) pairs — no store, no model:

- for a classifier (one enum output): the confused label pairs (both directions counted),
  per-label precision / recall / F1, and whether the outputs collapsed onto one label;
- for any run: parse failures and errors by kind (with a message), per-tag pass rates;
- the categories to work on first: the labels and tags that lose the most items.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

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


def analyse(signature: Signature | None, items: Sequence[Item]) -> dict[str, Any]:
    output = enum_output(signature)
    field = output.name if output is not None else None
    failed = [i for i in items if not i.passed]
    out: dict[str, Any] = {
        "n": len(items), "failed": len(failed),
        "errors": _kinds((i.error_kind, i.error) for i in items if i.error_kind),
        "parse_failures": _kinds(("parse", i.parse_error) for i in items
                                 if i.parse_error and not i.error_kind),
        "classification": None, "categories": []}
    categories: list[dict[str, Any]] = []
    if field is not None:
        out["classification"] = _classification(field, items)
        categories += [{"kind": "label", "name": row["label"], "n": row["support"],
                        "failed": row["support"] - row["correct"], "f1": row["f1"]}
                       for row in out["classification"]["labels"]]
    categories += _tags(items)
    out["categories"] = sorted((c for c in categories if c["failed"]),
                               key=lambda c: (-c["failed"], c["kind"], str(c["name"])))
    out["patterns"] = patterns(out, items)
    return out


def _kinds(pairs: Iterable[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """Counts by kind, most first, each with its first message."""
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    for kind, message in pairs:
        counts[kind] += 1
        first.setdefault(kind, (message or "")[:200])
    return [{"kind": k, "count": n, "message": first[k]} for k, n in counts.most_common()]


def _classification(field: str, items: Sequence[Item]) -> dict[str, Any]:
    pairs: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[int]] = defaultdict(list)
    support: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for item in items:
        if item.error_kind:  # a provider error says nothing of the prompt's labels
            continue
        want = str(item.case.expected.get(field))
        got = UNPARSED if item.predicted is None else str(item.predicted)
        support[want] += 1
        predicted[got] += 1
        if got == want:
            correct[want] += 1
        else:
            pairs[(want, got)] += 1
            if len(examples[(want, got)]) < 5 and item.case.id is not None:
                examples[(want, got)].append(item.case.id)
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


def _tags(items: Sequence[Item]) -> list[dict[str, Any]]:
    n: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for item in items:
        for tag in item.case.tags:
            n[tag] += 1
            failed[tag] += not item.passed
    return [{"kind": "tag", "name": tag, "n": n[tag], "failed": failed[tag],
             "pass_rate": round(1 - failed[tag] / n[tag], 4)} for tag in n if n[tag] >= MIN_TAG_CASES]


def patterns(analysis: dict[str, Any], items: Sequence[Item]) -> list[str]:
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
    long_replies = sum(1 for i in items if not i.passed and not i.error_kind and len(i.output) > 200)
    if long_replies >= max(2, 0.2 * n):
        out.append(f"{long_replies} failed replies are long (over 200 characters): the model explains "
                   "instead of answering")
    return out
