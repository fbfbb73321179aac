"""Gather everything a report shows from the store, as JSON-able data.

Every format (HTML, Markdown, JUnit, JSON), `runs show` and the viewer render these facts;
none of them reads the store itself. A run's results are the exception to "gathered once":
they are `ResultRows`, read a page at a time as they are rendered, so that showing a run of
any size takes the memory of a page.

- `run_facts`          one run: scores with intervals, per-label metrics, every
                       result with its case (streamed), the failed, slowest and most
                       expensive ones, score distributions, gates if given;
- `optimization_facts` one optimization: its candidates' train/val scores (from
                       its history and its report's candidate records), the base
                       and the winner with their diff, the runs it made;
- `build_facts`        resolve a name (a run first, then an optimization).
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Iterable

from promptlab.prompting.diffing import diff_text, prompt_text
from promptlab.errors import NotFoundError
from promptlab.evaluation.summary import run_json
from promptlab.models import PromptVersion
from promptlab.reports.notes import run_notes
from promptlab.reports.results import ResultRows, all_costed, counts, score_values
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
    """A run's facts. Its `results` and `failed` are `ResultRows`, read from the store as they are
    shown; the counts, the top-N tables and the histograms come from SQL, whatever the run's size."""
    prompt = store.prompt_by_id(run.prompt_id)
    summary = run.summary or {}
    results = ResultRows(store, project_id, run.id)
    metrics = summary.get("metrics") or {}
    live = ResultRows(store, project_id, run.id, status="live")
    slowest = (live if live else results).top("latency", top)
    cost_by = "cost" if all_costed(store, run.id) else "tokens"
    values = {name: array("d") for name in metrics}  # 8 bytes a score
    for name, value in score_values(store, run.id):
        if name in values and value is not None and math.isfinite(value):
            values[name].append(value)
    shown = run_json(run, prompt)
    return {
        "kind": "run", "generated_at": now(),
        "project": store.db["projects"].get(project_id)["name"],
        "run": shown | {
            "id": run.id, "created_at": run.created_at, "finished_at": run.finished_at,
            "model_name": run.model_name, "repeat": run.repeat,
            "params": run.params, "cases": len(run.case_ids),
            "expected_results": summary.get("expected"),
            "elapsed_s": summary.get("elapsed_s")},
        "prompt": prompt_facts(prompt),
        "notes": run_notes(shown),
        "metrics": metrics,
        "distributions": {name: histogram(values[name]) for name in metrics},
        "counts": counts(store, run.id),
        "results": results,
        "failed": ResultRows(store, project_id, run.id, status="failed"),
        "slowest": slowest,
        "costliest": results.top(cost_by, top), "costliest_by": cost_by,
        "gates": gate_facts(gates),
    }


def histogram(values: Iterable[float | None], bins: int = BINS) -> dict[str, Any]:
    """Counts of the non-missing values in equal bins over [0, 1] (or their range, if wider)."""
    xs = array("d", (float(v) for v in values if v is not None and math.isfinite(float(v))))
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
