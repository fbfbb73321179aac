"""Gather everything a report shows from the store, once, as plain JSON-able data.

Every format (HTML, Markdown, JUnit, JSON) and `runs show` render these facts;
none of them reads the store itself.

- `run_facts`          one run: scores with intervals, per-label metrics, every
                       result with its case, the failed, slowest and most
                       expensive ones, score distributions, gates if given;
- `optimization_facts` one optimization: its candidates' train/val scores (from
                       its history and its report's candidate records), the base
                       and the winner with their diff, the runs it made;
- `build_facts`        resolve a name (a run first, then an optimization).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from promptlab.prompting.diffing import diff_text, prompt_text
from promptlab.errors import NotFoundError
from promptlab.evaluation.evaluate import run_json
from promptlab.models import PromptVersion
from promptlab.prompting import images
from promptlab.store.records import CandidateStep, EvalStep, Note, Optimization, Run, step_json
from promptlab.store import Store, now

TOP = 10
BINS = 10


def build_facts(store: Store, project_id: int, name: str, *, gates: list | None = None) -> dict[str, Any]:
    """Facts for a run named `name`, else for an optimization named `name`."""
    run = store.find_run(project_id, name)
    if run is not None:
        return run_facts(store, project_id, run, gates=gates)
    opt = store.find_optimization(project_id, name)
    if opt is not None:
        return optimization_facts(store, project_id, opt)
    raise NotFoundError(f"no run or optimization named '{name}' in this project; see "
                        f"`promptlab runs list`")


def prompt_facts(prompt: PromptVersion | None) -> dict[str, Any] | None:
    if prompt is None:
        return None
    return {"id": prompt.id, "ref": prompt.ref, "name": prompt.name, "version": prompt.version,
            "labels": list(prompt.labels), "made_by": prompt.made_by, "message": prompt.message,
            "parent_id": prompt.parent_id, "text": prompt_text(prompt)}


def gate_facts(gates: Iterable[Any] | None) -> list[dict] | None:
    if gates is None:
        return None
    return [{"name": g.name, "passed": g.passed, "actual": g.actual, "limit": g.limit,
             "message": g.message} for g in gates]


def run_facts(store: Store, project_id: int, run: Run, *, gates: list | None = None,
              top: int = TOP) -> dict[str, Any]:
    prompt = store.prompt_by_id(run.prompt_id)
    summary = run.summary or {}
    raw = store.results(run.id)
    cases = store.cases_by_id(project_id, (r.case_id for r in raw))
    results = []
    for r in raw:
        case = cases.get(r.case_id)
        results.append({
            "case_id": r.case_id, "repeat": r.repeat,
            "inputs": images.shorten(case.inputs) if case else None,  # an image as a label, not base64
            "expected": r.expected_of(case),
            "tags": list(case.tags) if case else [], "split": case.split if case else None,
            "output": r.output, "parsed": r.parsed, "passed": r.passed, "score": r.score,
            "scores": {k: v.value for k, v in r.scores.items()},
            "error_kind": r.error_kind, "error": r.error, "parse_error": r.parse_error,
            "latency_ms": r.latency_ms, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "cost": r.cost, "cached": r.cached,
            "attempts": r.attempts})
    metrics = summary.get("metrics") or {}
    live = [r for r in results if not r["cached"] and r["error_kind"] is None] or results
    slowest = sorted(live, key=lambda r: -(r["latency_ms"] or 0))[:top]
    if results and all(r["cost"] is not None for r in results):
        costliest = sorted(results, key=lambda r: -(r["cost"] or 0))[:top]
        cost_by = "cost"
    else:
        costliest = sorted(results, key=lambda r: -(r["prompt_tokens"] + r["completion_tokens"]))[:top]
        cost_by = "tokens"
    failed = [r for r in results if not r["passed"]]
    return {
        "kind": "run", "generated_at": now(),
        "project": store.db["projects"].get(project_id)["name"],
        "run": run_json(run, prompt) | {
            "id": run.id, "created_at": run.created_at, "finished_at": run.finished_at,
            "model_name": run.model_name, "repeat": run.repeat,
            "params": run.params, "cases": len(run.case_ids),
            "expected_results": summary.get("expected"), "error_kinds": summary.get("error_kinds") or {},
            "elapsed_s": summary.get("elapsed_s")},
        "prompt": prompt_facts(prompt),
        "metrics": metrics,
        "distributions": {name: histogram([r["scores"].get(name) for r in results]) for name in metrics},
        "counts": {"results": len(results), "passed": sum(r["passed"] for r in results),
                   "failed": sum(1 for r in failed if r["error_kind"] is None),
                   "errors": sum(1 for r in results if r["error_kind"] is not None)},
        "results": results,
        "failed": failed,
        "slowest": slowest,
        "costliest": costliest, "costliest_by": cost_by,
        "gates": gate_facts(gates),
    }


def histogram(values: Iterable[float | None], bins: int = BINS) -> dict[str, Any]:
    """Counts of the non-missing values in equal bins over [0, 1] (or their range, if wider)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"edges": [], "counts": [], "n": 0}
    low, high = min(0.0, min(xs)), max(1.0, max(xs))
    width = (high - low) / bins
    counts = [0] * bins
    for x in xs:
        counts[min(bins - 1, int((x - low) / width))] += 1
    return {"edges": [round(low + i * width, 6) for i in range(bins + 1)], "counts": counts, "n": len(xs)}


# ---- optimizations ---------------------------------------------------------

_SPLITS = ("train", "val", "test")


def _candidates(opt: Optimization) -> list[dict]:
    """Every candidate, in the order it joined, its scores as last recorded: its evaluations in
    the history, then the final report's records (the settled scores, so they come last)."""
    by_ref: dict[str, dict] = {}

    def candidate(prompt_id: int, ref: str, iteration: int, operator: str, parent_id: int | None) -> dict:
        if ref not in by_ref:
            by_ref[ref] = {"index": len(by_ref), "prompt_id": prompt_id, "ref": ref, "step": iteration,
                           "note": operator, "parent_id": parent_id, "train": None, "val": None,
                           "test": None, "tokens": None, "evals": []}
        return by_ref[ref]

    def scored(cand: dict, train: float | None, val: float | None) -> None:
        for split, value in (("train", train), ("val", val)):
            if value is not None:
                cand[split] = value
        if train is not None or val is not None:
            cand["evals"].append({"train": train, "val": val, "test": None})

    for step in opt.history:
        if isinstance(step, CandidateStep):
            candidate(step.prompt_id, step.ref, step.iteration, step.operator, step.parent_id)
        elif isinstance(step, EvalStep):
            scored(by_ref[step.ref], step.train, step.val)
    for record in opt.candidates:
        cand = candidate(record.prompt_id, record.ref, record.iteration, record.operator, record.parent_id)
        if record.parent_id is not None:  # the version's own parent (a deduplicated version keeps its first)
            cand["parent_id"] = record.parent_id
        cand["tokens"] = float(record.tokens)  # reports have always shown it as a number like the scores
        scored(cand, record.train, record.val)
    return list(by_ref.values())


def optimization_facts(store: Store, project_id: int, opt: Optimization) -> dict[str, Any]:
    def prompt_or_none(prompt_id: int | None) -> PromptVersion | None:
        if prompt_id is None:
            return None
        try:
            return store.prompt_by_id(prompt_id)
        except NotFoundError:
            return None

    base, winner = prompt_or_none(opt.base_prompt_id), prompt_or_none(opt.winner_prompt_id)
    report = opt.report or {}
    candidates = _candidates(opt)
    side = {k: report.get(k) or {} for k in ("base", "winner")}  # a report's `_side` of each (none before it)
    # the winner may have been promoted to a new version: its candidate is the one that won
    winner_refs = {r for r in (side["winner"].get("ref"), winner.ref if winner else None) if r is not None}
    winner_ids = {i for i in (side["winner"].get("prompt_id"), winner.id if winner else None) if i is not None}
    for cand in candidates:
        prompt = prompt_or_none(cand["prompt_id"])
        if prompt is not None:
            cand["ref"] = prompt.ref
        cand["is_base"] = bool(base and (cand["prompt_id"] == base.id or cand["ref"] == base.ref))
        cand["is_winner"] = cand["prompt_id"] in winner_ids or cand["ref"] in winner_refs
        for flag, key in (("is_base", "base"), ("is_winner", "winner")):
            if cand[flag] and cand["test"] is None:
                cand["test"] = side[key].get("test")
    runs = [run_json(run, store.prompt_by_id(run.prompt_id)) | {"created_at": run.created_at}
            for run in store.optimization_runs(opt.id)]
    base_c = next((c for c in candidates if c["is_base"]), None)
    winner_c = next((c for c in reversed(candidates) if c["is_winner"]), None)
    return {
        "kind": "optimization", "generated_at": now(),
        "project": store.db["projects"].get(project_id)["name"],
        "optimization": {"id": opt.id, "name": opt.name, "strategy": opt.strategy, "status": opt.status,
                         "config": opt.config, "splits": opt.splits, "budget": opt.budget, "spent": opt.spent,
                         "created_at": opt.created_at, "finished_at": opt.finished_at},
        "extra": {"owner_host": opt.owner_host, "owner_pid": opt.owner_pid, "heartbeat_at": opt.heartbeat_at},
        "base": prompt_facts(base), "winner": prompt_facts(winner),
        "diff": diff_text(base, winner) if base and winner else str(report.get("diff") or ""),
        "scores": {"base": {s: _first(side["base"].get(s), base_c and base_c[s]) for s in _SPLITS},
                   "winner": {s: _first(side["winner"].get(s), winner_c and winner_c[s]) for s in _SPLITS}},
        "summary": {k: report.get(k) for k in ("stopped", "iterations", "objective", "model", "proposer",
                                               "splits", "lift", "seed") if report.get(k) is not None},
        "candidates": candidates,
        # the notes as stored (keys sorted): proposer failures, the stop reason…
        "events": [dict(sorted(step_json(step).items())) for step in opt.history if isinstance(step, Note)],
        "runs": runs,
    }


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)
