"""How runs end: each run's status, reason and summary (scores, tokens, cost, latency,
baselines, warnings) written to the store, and the `--json` shape of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from promptlab.scorers.baselines import collapse, constant_baseline
from promptlab.hints import command
from promptlab.models import Case, PromptVersion
from promptlab.store.records import Run
from promptlab.evaluation.runner import Outcome
from promptlab.evaluation.figures import (cost_figures, error_figures, field_accuracy, lenient_figures,
                                          metric_figures, repeat_figures)
from promptlab.providers.usage import ROLES, Ledger, RoleUsage, by_run, merged
from promptlab.store import Store, dumps, now

if TYPE_CHECKING:
    from promptlab.evaluation.plan import RunPlan


def finish(store: Store, plans: list[RunPlan], outcome: Outcome | None, *, status: str | None = None,
           elapsed_s: float | None = None, reason: str | None = None, usage: Ledger | None = None) -> list[dict]:
    """Write each run's status, reason and summary; returns the summaries. `usage`: what this
    session's gateway spent per run and role (the judge's and embeddings' calls are added to the
    run's role usage; the task's come from its results).

    Without an explicit status a run is `completed` only when it holds a result
    for every planned item, `failed` when it was stopped or every item failed
    (the reason says why), else `interrupted` (resumable). A run with batches still
    at the provider stays `submitted` (unless it failed), free for any process to wait for.
    """
    summaries = []
    for plan in plans:
        state = outcome.states.get(plan.run_id) if outcome else None
        before = store.run_by_id(plan.run_id)
        active_s = (before.active_s or 0.0) + (elapsed_s or 0.0)
        session = by_run(usage or {}, plan.run_id, tuple(r for r in ROLES if r != "task"))
        if session:
            stored = {role: RoleUsage.of(u) for role, u in (before.role_usage or {}).items()}
            store.update_run(plan.run_id, role_usage={role: u.as_json()
                                                      for role, u in merged(stored, session).items()})
        summary = summarize_run(store, plan, active_s or None, session_s=elapsed_s)
        run_status, error, owner = status, reason, {}
        waiting = store.db["batches"].count_where("run_id = ? and done = 0", [plan.run_id])
        if waiting and run_status in (None, "interrupted"):
            run_status, owner = "submitted", {"owner_pid": None}
            error = (f"{waiting} batch{'es' if waiting > 1 else ''} at the provider; wait for "
                     f"{'them' if waiting > 1 else 'it'} with `{command(store, plan.project_id, 'runs', 'wait', plan.name)}`")
        if run_status is None:
            if state and state.stopped:  # the line names the cause, not only the count
                run_status, error = "failed", f"{state.stopped}; the first: {first_error(store, plan.run_id)}"
            elif summary["n"] < summary["expected"]:
                run_status, error = "interrupted", f"{summary['n']} of {summary['expected']} results stored"
            elif summary["n"] and summary["errors"] == summary["n"]:
                run_status, error = "failed", f"every item failed; the first: {first_error(store, plan.run_id)}"
            else:
                run_status = "completed"
        store.update_run(plan.run_id, status=run_status, error=error, active_s=round(active_s, 3),
                         summary=summary, n_results=summary["n"], n_errors=summary["errors"],
                         prompt_tokens=summary["tokens"]["prompt"],
                         completion_tokens=summary["tokens"]["completion"], cost=summary["cost"],
                         latency_p50_ms=summary["latency_ms"]["p50"],
                         latency_p95_ms=summary["latency_ms"]["p95"], finished_at=now(), **owner)
        summaries.append(run_json(store.run_by_id(plan.run_id), plan.prompt))
    return summaries


def first_error(store: Store, run_id: int) -> str | None:
    row = store.db.execute("select error_kind, error from results where run_id = ? and error_kind is not null "
                           "order by id limit 1", [run_id]).fetchone()
    return None if row is None else f"{row[0]}: {row[1]}"


def demo_overlap(prompt: PromptVersion, cases: list[Case]) -> str | None:
    """A warning when some evaluated cases are the prompt's own demos (the model sees their answers)."""
    demos = {dumps(d.inputs) for d in prompt.content.demos}
    ids = [c.id for c in cases if dumps(c.inputs) in demos]
    if not ids:
        return None
    shown = ", ".join(map(str, ids[:5])) + (" …" if len(ids) > 5 else "")
    return (f"{len(ids)} of the {len(cases)} cases are demos of {prompt.ref} (case ids {shown}): it is shown "
            f"their answers, so its score on them means little; evaluate on another split")


def summarize_run(store: Store, plan: RunPlan, elapsed_s: float | None = None,
                  session_s: float | None = None) -> dict:
    """The run's numbers (see `evaluation.figures`). `elapsed_s`: its active time over every session;
    calls/s is measured over this process's session (`session_s`) alone, since a killed
    session's time is unknown."""
    results = store.results(plan.run_id)
    scored = [r for r in results if r.error_kind is None]
    live = [r for r in results if not r.cached and r.error_kind is None]
    latencies = np.array([r.latency_ms for r in live]) if live else np.array([0.0])
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(r.completion_tokens for r in results)
    run = store.run_by_id(plan.run_id)
    costs = cost_figures(results, {role: RoleUsage.of(u) for role, u in (run.role_usage or {}).items()})
    # what answering one label every time would score, and whether the outputs did that
    baseline = constant_baseline(plan.signature, (c.expected for c in plan.cases))
    collapsed = collapse(plan.signature, (r.parsed for r in scored))
    return {
        "n": len(results), "expected": len(plan.cases) * plan.repeat,
        **error_figures(results),
        "pass_rate": (sum(r.passed for r in scored) / len(results)) if results else None,
        "scored": {"n": len(scored),
                   "pass_rate": (sum(r.passed for r in scored) / len(scored)) if scored else None},
        "metrics": {metric.name: metric_figures(metric, results) for metric in plan.metrics},
        "fields": field_accuracy(plan.signature, plan.cases, results),
        "repeats": repeat_figures(results),
        "lenient": lenient_figures(results),
        "mode": run.mode,
        # replies that did not fit the signature (scored, not errors), and how decoding was constrained
        "parse_failures": sum(1 for r in scored if r.parse_error),
        "decoding": plan.decoding.as_json(),
        "tokens": {"prompt": prompt_tokens, "completion": completion_tokens,
                   "per_call": round((prompt_tokens + completion_tokens) / len(results), 1) if results else 0},
        **costs,
        "cached": sum(1 for r in results if r.cached),
        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 1),
                       "p95": round(float(np.percentile(latencies, 95)), 1)},
        "elapsed_s": round(elapsed_s, 3) if elapsed_s else None,
        "calls_per_s": (round((len(results) - plan.done_before) / session_s, 2)
                        if session_s and len(results) > plan.done_before else None),
        "constant_baseline": baseline and baseline.as_json(),
        "collapse": collapsed and collapsed.as_json(),
        "warnings": [w for w in (collapsed and collapsed.warning(), demo_overlap(plan.prompt, plan.cases)) if w],
    }


def run_json(run: Run, prompt: PromptVersion) -> dict:
    """The machine-readable shape of one run (as `--json` prints it). `scores`, `intervals` and
    `pass_rate` are the headline (every item, errors 0); `scored` the figures over the scored
    items only. A run summarised before the headline counted errors has no `scored` key."""
    summary = run.summary or {}
    metrics = summary.get("metrics", {})
    return {"name": run.name, "prompt": prompt.name, "version": prompt.version,
            "model": run.model, "status": run.status, "mode": run.mode or summary.get("mode"),
            "n": summary.get("n", 0), "errors": summary.get("errors", 0),
            "error_kinds": summary.get("error_kinds") or {}, "top_errors": summary.get("top_errors") or [],
            # runs summarised before decoding was reported print as they always did
            **{k: summary[k] for k in ("parse_failures", "decoding") if k in summary},
            "scores": {k: v.get("mean") for k, v in metrics.items()},
            "intervals": {k: [v.get("ci_low"), v.get("ci_high")] for k, v in metrics.items()},
            "pass_rate": summary.get("pass_rate"),
            "scored": summary.get("scored") and {
                **summary["scored"], "scores": {k: (v.get("scored") or {}).get("mean") for k, v in metrics.items()}},
            "fields": summary.get("fields"), "repeats": summary.get("repeats"),
            "lenient": summary.get("lenient"), "tokens": summary.get("tokens"),
            "cost": summary.get("cost"), "by_role": summary.get("by_role"), "cached": summary.get("cached"),
            "provider_calls": summary.get("provider_calls"),
            "calls_per_s": summary.get("calls_per_s"), "latency_ms": summary.get("latency_ms"),
            "constant_baseline": summary.get("constant_baseline"), "collapse": summary.get("collapse"),
            "warnings": summary.get("warnings") or [], "error": run.error}
