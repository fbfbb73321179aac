"""How runs end: each run's status, reason and summary (scores, tokens, cost, latency,
baselines, warnings) written to the store, and the `--json` shape of a run."""

from __future__ import annotations


import numpy as np

from promptlab.scorers.baselines import collapse, constant_baseline
from promptlab.hints import command
from promptlab.models import Case, PromptVersion
from promptlab.store.records import Run
from promptlab.evaluation.runner import Outcome
from promptlab.store import Store, dumps, now

def finish(store: Store, plans: list[RunPlan], outcome: Outcome | None, *, status: str | None = None,
           elapsed_s: float | None = None, reason: str | None = None) -> list[dict]:
    """Write each run's status, reason and summary; returns the summaries.

    Without an explicit status a run is `completed` only when it holds a result
    for every planned item, `failed` when it was stopped or every item failed
    (the reason says why), else `interrupted` (resumable). A run with batches still
    at the provider stays `submitted` (unless it failed), free for any process to wait for.
    """
    summaries = []
    for plan in plans:
        state = outcome.states.get(plan.run_id) if outcome else None
        active_s = (store.run_by_id(plan.run_id).active_s or 0.0) + (elapsed_s or 0.0)
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
    """The run's numbers. `elapsed_s`: its active time over every session; calls/s is measured
    over this process's session (`session_s`) alone, since a killed session's time is unknown."""
    results = store.results(plan.run_id)
    scored = [r for r in results if r.error_kind is None]
    metrics = {metric.name: metric.summarize([r.scores[metric.name] for r in scored if metric.name in r.scores])
               for metric in plan.metrics}
    live = [r for r in results if not r.cached and r.error_kind is None]
    latencies = np.array([r.latency_ms for r in live]) if live else np.array([0.0])
    costs = [r.cost for r in results if not r.cached and r.attempts]
    calls = sum(1 for r in results if not r.cached)
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(r.completion_tokens for r in results)
    # what answering one label every time would score, and whether the outputs did that
    baseline = constant_baseline(plan.signature, (c.expected for c in plan.cases))
    collapsed = collapse(plan.signature, (r.parsed for r in scored))
    return {
        "n": len(results), "expected": len(plan.cases) * plan.repeat,
        "errors": len(results) - len(scored),
        "error_kinds": _count(r.error_kind for r in results if r.error_kind),
        "pass_rate": (sum(r.passed for r in scored) / len(scored)) if scored else None,
        "metrics": metrics,
        "tokens": {"prompt": prompt_tokens, "completion": completion_tokens,
                   "per_call": round((prompt_tokens + completion_tokens) / len(results), 1) if results else 0},
        "cost": None if any(c is None for c in costs) else round(sum(costs), 6),
        "cached": len(results) - calls, "provider_calls": calls,
        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 1),
                       "p95": round(float(np.percentile(latencies, 95)), 1)},
        "elapsed_s": round(elapsed_s, 3) if elapsed_s else None,
        "calls_per_s": (round((len(results) - plan.done_before) / session_s, 2)
                        if session_s and len(results) > plan.done_before else None),
        "constant_baseline": baseline and baseline.as_json(),
        "collapse": collapsed and collapsed.as_json(),
        "warnings": [w for w in (collapsed and collapsed.warning(), demo_overlap(plan.prompt, plan.cases)) if w],
    }



def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out



def run_json(run: Run, prompt: PromptVersion) -> dict:
    """The machine-readable shape of one run (as `--json` prints it)."""
    summary = run.summary or {}
    metrics = summary.get("metrics", {})
    return {"name": run.name, "prompt": prompt.name, "version": prompt.version,
            "model": run.model, "status": run.status, "n": summary.get("n", 0),
            "errors": summary.get("errors", 0),
            "scores": {k: v.get("mean") for k, v in metrics.items()},
            "intervals": {k: [v.get("ci_low"), v.get("ci_high")] for k, v in metrics.items()},
            "pass_rate": summary.get("pass_rate"), "tokens": summary.get("tokens"),
            "cost": summary.get("cost"), "cached": summary.get("cached"),
            "provider_calls": summary.get("provider_calls"),
            "calls_per_s": summary.get("calls_per_s"), "latency_ms": summary.get("latency_ms"),
            "constant_baseline": summary.get("constant_baseline"), "collapse": summary.get("collapse"),
            "warnings": summary.get("warnings") or [], "error": run.error}
