"""Gather everything a report shows from the store, once, as plain JSON-able data.

Every format (HTML, Markdown, JUnit, JSON) and `runs show` render these facts;
none of them reads the store itself.

- `run_facts`          one run: scores with intervals, per-label metrics, every
                       result with its case, the failed, slowest and most
                       expensive ones, score distributions, gates if given;
- `optimization_facts` one optimization: its candidates' train/val scores (read
                       gracefully from whatever its history holds), the base and
                       the winner with their diff, the runs it made;
- `build_facts`        resolve a name (a run first, then an optimization).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from promptlab.diffing import diff_text, prompt_text
from promptlab.errors import NotFoundError
from promptlab.evaluation import run_json
from promptlab.models import PromptVersion
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


def run_facts(store: Store, project_id: int, run: dict, *, gates: list | None = None,
              top: int = TOP) -> dict[str, Any]:
    prompt = store.prompt_by_id(run["prompt_id"])
    summary = run["summary"] or {}
    raw = store.results(run["id"])
    cases = store.cases_by_id(project_id, (r["case_id"] for r in raw))
    results = []
    for r in raw:
        case = cases.get(r["case_id"])
        results.append({
            "case_id": r["case_id"], "repeat": r["repeat"],
            "inputs": case.inputs if case else None, "expected": case.expected if case else None,
            "tags": list(case.tags) if case else [], "split": case.split if case else None,
            "output": r["output"], "parsed": r["parsed"], "passed": bool(r["passed"]),
            "score": r["score"],
            "scores": {k: (v or {}).get("value") for k, v in (r["scores"] or {}).items()},
            "error_kind": r["error_kind"], "error": r["error"], "parse_error": r["parse_error"],
            "latency_ms": r["latency_ms"], "prompt_tokens": r["prompt_tokens"] or 0,
            "completion_tokens": r["completion_tokens"] or 0, "cost": r["cost"],
            "cached": bool(r["cached"]), "attempts": r["attempts"]})
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
            "id": run["id"], "created_at": run["created_at"], "finished_at": run["finished_at"],
            "model_name": run["model_name"], "repeat": run["repeat"],
            "params": run["params"], "cases": len(run["case_ids"] or []),
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

_STEP_KEYS = ("iteration", "step", "round", "generation", "index", "i")
_NOTE_KEYS = ("operator", "rationale", "note", "message", "reason", "edit", "strategy")
_SPLITS = ("train", "val", "test")


def _number(value: Any) -> float | None:
    """A score from whatever shape a record holds: 0.8, {'mean': 0.8}, {'score': 0.8}…"""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        for key in ("mean", "score", "objective", "value"):
            if key in value:
                return _number(value[key])
    return None


def _split_score(record: dict, split: str) -> float | None:
    for key in (split, f"{split}_score", f"{split}_mean", f"score_{split}"):
        if key in record and (n := _number(record[key])) is not None:
            return n
    scores = record.get("scores")
    if isinstance(scores, dict) and split in scores:
        return _number(scores[split])
    return None


def _history_records(history: Any) -> list[dict]:
    if isinstance(history, dict):
        history = next((history[k] for k in ("candidates", "history", "records", "events") if k in history), [])
    if not isinstance(history, list):
        return []
    return [r for r in history if isinstance(r, dict)]


def _candidates(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Candidates (in order of first appearance, scores as last recorded) and the other events.

    Takes either a list of candidate records ({prompt_id, train, val, ...}) or an
    event log ({"event": "candidate" | "eval" | ..., "prompt_id" or "ref", ...});
    a record naming no prompt is an event (proposer failures, the stop reason…).
    """
    by_key: dict[Any, dict] = {}
    ordered: list[dict] = []
    events: list[dict] = []
    for record in records:
        prompt_id = record.get("prompt_id", record.get("prompt"))
        prompt_id = prompt_id if isinstance(prompt_id, int) and not isinstance(prompt_id, bool) else None
        ref = record.get("ref") if isinstance(record.get("ref"), str) else None
        if prompt_id is None and ref is None:
            events.append(record)
            continue
        cand = by_key.get(("id", prompt_id)) or by_key.get(("ref", ref))
        if cand is None:
            cand = {"index": len(ordered), "prompt_id": prompt_id, "ref": ref, "step": None, "note": "",
                    "parent_id": None, "train": None, "val": None, "test": None, "tokens": None,
                    "evals": []}
            ordered.append(cand)
        cand["prompt_id"] = cand["prompt_id"] or prompt_id
        cand["ref"] = cand["ref"] or ref
        for key in (("id", cand["prompt_id"]), ("ref", cand["ref"])):
            if key[1] is not None:
                by_key[key] = cand
        if cand["step"] is None:
            cand["step"] = next((record[k] for k in _STEP_KEYS if isinstance(record.get(k), (int, float))), None)
        cand["note"] = cand["note"] or next((record[k] for k in _NOTE_KEYS if isinstance(record.get(k), str)), "")
        if isinstance(record.get("parent_id"), int):
            cand["parent_id"] = record["parent_id"]
        scores = {split: _split_score(record, split) for split in _SPLITS}
        for split, value in scores.items():
            if value is not None:
                cand[split] = value
        if (n := _number(record.get("tokens"))) is not None:
            cand["tokens"] = n
        if any(v is not None for v in scores.values()):
            cand["evals"].append(scores)
    return ordered, events


def optimization_facts(store: Store, project_id: int, opt: dict) -> dict[str, Any]:
    def prompt_or_none(prompt_id: Any) -> PromptVersion | None:
        if not isinstance(prompt_id, int):
            return None
        try:
            return store.prompt_by_id(prompt_id)
        except NotFoundError:
            return None

    base, winner = prompt_or_none(opt.get("base_prompt_id")), prompt_or_none(opt.get("winner_prompt_id"))
    report = opt.get("report") if isinstance(opt.get("report"), dict) else {}
    # the final report's candidate records come last: their scores are the settled ones
    candidates, events = _candidates(_history_records(opt.get("history"))
                                     + _history_records(report.get("candidates")))
    side = {k: report.get(k) if isinstance(report.get(k), dict) else {} for k in ("base", "winner")}
    # the winner may have been promoted to a new version: its candidate is the one that won
    winner_refs = {r for r in (side["winner"].get("candidate"), side["winner"].get("ref"),
                               winner.ref if winner else None) if isinstance(r, str)}
    winner_ids = {i for i in (side["winner"].get("prompt_id"), winner.id if winner else None) if isinstance(i, int)}
    for cand in candidates:
        prompt = prompt_or_none(cand["prompt_id"])
        if prompt is not None:
            cand["ref"] = prompt.ref
        if cand["ref"] is None:
            cand["ref"] = f"candidate {cand['index']}"
        cand["is_base"] = bool(base and (cand["prompt_id"] == base.id or cand["ref"] == base.ref))
        cand["is_winner"] = cand["prompt_id"] in winner_ids or cand["ref"] in winner_refs
        for flag, key in (("is_base", "base"), ("is_winner", "winner")):
            if cand[flag] and cand["test"] is None:
                cand["test"] = _number(side[key].get("test"))
    runs = []
    if isinstance(opt.get("id"), int):
        for run in store.optimization_runs(opt["id"]):
            runs.append(run_json(run, store.prompt_by_id(run["prompt_id"])) | {"created_at": run["created_at"]})
    known = {"id", "project_id", "name", "strategy", "config", "base_prompt_id", "winner_prompt_id",
             "splits", "budget", "status", "history", "spent", "created_at", "finished_at", "report"}
    base_c = next((c for c in candidates if c["is_base"]), None)
    winner_c = next((c for c in reversed(candidates) if c["is_winner"]), None)
    return {
        "kind": "optimization", "generated_at": now(),
        "project": store.db["projects"].get(project_id)["name"],
        "optimization": {k: opt.get(k) for k in ("id", "name", "strategy", "status", "config", "splits",
                                                 "budget", "spent", "created_at", "finished_at")},
        "extra": {k: v for k, v in opt.items() if k not in known},
        "base": prompt_facts(base), "winner": prompt_facts(winner),
        "diff": diff_text(base, winner) if base and winner else str(report.get("diff") or ""),
        "scores": {"base": {s: _first(side["base"].get(s), base_c and base_c[s]) for s in _SPLITS},
                   "winner": {s: _first(side["winner"].get(s), winner_c and winner_c[s]) for s in _SPLITS}},
        "summary": {k: report.get(k) for k in ("stopped", "iterations", "objective", "model", "proposer",
                                               "splits", "lift", "seed") if report.get(k) is not None},
        "candidates": candidates,
        "events": events,
        "runs": runs,
    }


def _first(*values: Any) -> float | None:
    return next((_number(v) for v in values if _number(v) is not None), None)
