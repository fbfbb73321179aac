"""A run's numbers that cannot flatter: every planned item counts, repeats count as repeats.

- The headline of each metric (mean, interval, pass rate) is over every item with a result,
  an item that ended in an error scoring 0 and failing; the scored-only figures stay, labelled.
- Intervals resample cases (a clustered bootstrap): k repeats of a case are one case.
- Errors are named: their count by kind, and the most common kinds with a message.
- A multi-field signature gets per-field accuracy; repeats get pass@k, pass^k and the flaky cases.
- Costs follow one rule: a reply without a known price makes its role's cost n/a, cached or not.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

from promptlab.models import Case, Signature
from promptlab.store.records import Result
from promptlab.scorers import Metric
from promptlab.scorers.stats import bootstrap_ci, repeat_consistency
from promptlab.providers.usage import RoleUsage, total_cost

TOP_ERRORS = 3


def metric_figures(metric: Metric, results: Sequence[Result]) -> dict[str, Any]:
    """The metric's summary over its scored results (its own extras: per label, per field…),
    with the headline n, mean, interval and pass rate over every item (an item error scores 0;
    `item_errors` says how many) on top, and the scored-only figures under "scored"."""
    scored = [r.scores[metric.name] for r in results if r.error_kind is None and metric.name in r.scores]
    summary = metric.summarize(scored)
    counted = [(r.case_id, 0.0 if r.error_kind else r.scores[metric.name].value,
                r.error_kind is None and r.scores[metric.name].passed)
               for r in results if r.error_kind or (metric.name in r.scores
                                                    and r.scores[metric.name].value is not None)]
    scored_only = {k: summary.get(k) for k in ("n", "mean", "ci_low", "ci_high", "pass_rate")}
    # "errors" stays the metric's own: the results it could not score (a case without an expected value)
    item_errors = sum(1 for r in results if r.error_kind)
    if not counted:
        return {**summary, "n": 0, "item_errors": item_errors, "scored": scored_only}
    values = [v for _, v, _ in counted]
    low, high = bootstrap_ci(values, clusters=[c for c, _, _ in counted])
    return {**summary, "n": len(counted), "item_errors": item_errors, "mean": sum(values) / len(values),
            "ci_low": low, "ci_high": high, "pass_rate": sum(p for _, _, p in counted) / len(counted),
            "scored": scored_only}


def error_figures(results: Sequence[Result]) -> dict[str, Any]:
    """How many items errored, by kind, and the top kinds with the first message of each."""
    failed = [r for r in results if r.error_kind]
    kinds = Counter(r.error_kind for r in failed)
    first: dict[str, str] = {}
    for r in failed:
        first.setdefault(r.error_kind, (r.error or "")[:200])
    return {"errors": len(failed), "error_kinds": dict(kinds),
            "top_errors": [{"kind": kind, "count": n, "message": first[kind]}
                           for kind, n in kinds.most_common(TOP_ERRORS)]}


def field_accuracy(signature: Signature | None, cases: Iterable[Case],
                   results: Sequence[Result]) -> dict[str, dict[str, Any]] | None:
    """Per output field of a multi-field signature: the share of items whose value equals the
    expected one (an error or a field that did not parse is wrong), and how many did not parse."""
    if signature is None or len(signature.outputs) < 2:
        return None
    from promptlab.scorers.structured import values_equal

    by_id = {c.id: c for c in cases}
    out: dict[str, dict[str, Any]] = {}
    for spec in signature.outputs:
        right = total = unparsed = 0
        for r in results:
            want = (r.expected_of(by_id.get(r.case_id)) or {}).get(spec.name)
            if want is None:
                continue
            total += 1
            got = (r.parsed or {}).get(spec.name) if not r.error_kind else None
            unparsed += r.error_kind is None and got is None
            right += got is not None and values_equal(got, want)
        if total:
            out[spec.name] = {"accuracy": right / total, "n": total, "unparsed": unparsed}
    return out or None


def repeat_figures(results: Sequence[Result]) -> dict[str, Any]:
    """pass@1, pass@k, pass^k, answer agreement and the flaky cases (errors fail)."""
    passes: dict[int, list[bool]] = {}
    answers: dict[int, list[Any]] = {}
    for r in sorted(results, key=lambda r: (r.case_id, r.repeat)):
        passes.setdefault(r.case_id, []).append(r.passed and not r.error_kind)
        answers.setdefault(r.case_id, []).append(
            {"error": r.error_kind} if r.error_kind else r.parsed if r.parsed is not None else r.output)
    return repeat_consistency(passes, answers)


def lenient_figures(results: Sequence[Result]) -> dict[str, Any]:
    """How many replies only a field's lenient rule accepted, by field."""
    fields = Counter(name for r in results for name in r.lenient)
    return {"replies": sum(1 for r in results if r.lenient), "fields": dict(fields)}


def task_usage(results: Sequence[Result]) -> RoleUsage:
    """The task model's requests (retries included: each result's attempts), replies, tokens, cost."""
    usage = RoleUsage(requests=sum(r.attempts or 0 for r in results if not r.cached))
    for r in results:
        if r.error_kind is None or r.output:  # a reply (maybe unscorable) rather than a failed call
            usage.reply(r.prompt_tokens, r.completion_tokens, r.cost, r.cached)
    return usage


def cost_figures(results: Sequence[Result], other_roles: dict[str, RoleUsage]) -> dict[str, Any]:
    """Requests, tokens and cost by role and in all."""
    roles = {"task": task_usage(results), **{k: v for k, v in other_roles.items() if k != "task"}}
    return {"by_role": {role: usage.as_json() for role, usage in roles.items()},
            "provider_calls": sum(u.requests for u in roles.values()),
            "cost": total_cost(roles)}


def scored_line(name: str, figures: dict[str, Any], errors: int, total: int) -> str | None:
    """'exact_match 1.000 over 159 scored of 200; 41 errors' when errors changed the headline."""
    scored = figures.get("scored") or {}
    if not errors or scored.get("mean") is None:
        return None
    return f"{name} {scored['mean']:.3f} over {scored['n']} scored of {total}; {errors} errors"

