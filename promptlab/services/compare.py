"""Compare two runs on the cases they share: paired deltas, McNemar, regressions, prompt diff.

Results pair by (case_id, repeat). Within a pair, a result that ended in an
error (or could not be scored by a metric) counts as score 0 and as failed:
a case that errors in B after passing in A is a regression.

Either side may be named by run name, or by a prompt reference
(NAME@VERSION, NAME@LABEL, NAME) meaning that version's completed run most
like the other side's (see `resolve_runs`). `warnings` says when the two runs
still differ in model or cases, or when one of them is all errors.
"""

from __future__ import annotations

from typing import Any

from promptlab.prompting.diffing import diff_text
from promptlab.errors import NotFoundError, UsageError
from promptlab.evaluation.evaluate import run_json
from promptlab.models import PromptVersion
from promptlab.store.records import Result, Run
from promptlab.scorers.stats import mcnemar, paired_bootstrap
from promptlab.store import Store

N_RESAMPLES = 10_000


def resolve_runs(store: Store, project_id: int, a: str, b: str,
                 model: str | None = None) -> tuple[Run, Run]:
    """Runs A and B. A run name is that run; a prompt reference picks one of its completed runs
    with results (on `model` if given), like the other side's: on its model, then on its cases,
    then with scored results, then the newest. B follows A when both are references."""
    found_a, found_b = _lookup(store, project_id, a), _lookup(store, project_id, b)
    run_a = found_a if isinstance(found_a, Run) else None
    run_b = found_b if isinstance(found_b, Run) else None
    if run_a is None:
        run_a = _pick(store, project_id, found_a, model, like=run_b)
    if run_b is None:
        run_b = _pick(store, project_id, found_b, model, like=run_a)
    return run_a, run_b


def _lookup(store: Store, project_id: int, ref: str) -> Run | PromptVersion:
    """A run name first, else a prompt reference."""
    run = store.find_run(project_id, ref)
    if run is not None:
        return run
    try:
        return store.prompt(project_id, ref)
    except (NotFoundError, UsageError):
        raise NotFoundError(f"no run or prompt version '{ref}' in this project; see "
                            f"`promptlab runs list` or `promptlab prompt list`") from None


def _pick(store: Store, project_id: int, prompt: PromptVersion, model: str | None, like: Run | None) -> Run:
    runs = [r for r in store.prompt_runs(project_id, prompt.id)
            if r.n_results and (model is None or r.model == model)]
    if not runs:
        on = f" on model '{model}'" if model else ""
        raise NotFoundError(f"prompt {prompt.ref} has no completed run{on}; evaluate it first with "
                            f"`promptlab eval --prompt {prompt.ref}`")

    def likeness(run: Run) -> tuple:
        same_model = like is not None and run.model == like.model
        same_cases = like is not None and set(run.case_ids) == set(like.case_ids)
        return same_model, same_cases, run.n_results > run.n_errors, run.id

    return max(runs, key=likeness)


def warnings(run_a: Run, run_b: Run, res_a: dict, res_b: dict) -> list[str]:
    """What makes the comparison unlike with unlike: models, cases, runs that are all errors."""
    out = []
    if run_a.model != run_b.model:
        out.append(f"A ran on {run_a.model} and B on {run_b.model}: the difference mixes the "
                   f"prompts with the models")
    cases_a, cases_b = set(run_a.case_ids), set(run_b.case_ids)
    if cases_a != cases_b:
        out.append(f"A and B were evaluated on different cases ({len(cases_a)} and {len(cases_b)}, "
                   f"{len(cases_a & cases_b)} shared): only the shared ones are compared")
    for side, run, results in (("A", run_a, res_a), ("B", run_b, res_b)):
        if results and all(r.error_kind is not None for r in results.values()):
            out.append(f"every result of {side} ({run.name}) is an error: its scores are 0 and say "
                       f"nothing about the prompt")
    return out


def _value(result: Result, metric: str) -> float:
    value = None if result.error_kind is not None else result.value(metric)
    return 0.0 if value is None else float(value)


def _metric_names(run: Run, results: list[Result]) -> list[str]:
    names = list(((run.summary or {}).get("metrics") or {}).keys())
    for r in results:
        names.extend(k for k in r.scores if k not in names)
    return names


def _side(result: Result) -> dict:
    return {"passed": result.passed, "output": result.output, "score": result.score,
            "error": result.error or result.parse_error, "error_kind": result.error_kind}


def compare_runs(store: Store, project_id: int, run_a: Run, run_b: Run, *,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Everything `runs compare` shows, as plain data (B is compared against A)."""
    prompt_a, prompt_b = store.prompt_by_id(run_a.prompt_id), store.prompt_by_id(run_b.prompt_id)
    res_a = {(r.case_id, r.repeat): r for r in store.results(run_a.id)}
    res_b = {(r.case_id, r.repeat): r for r in store.results(run_b.id)}
    keys = sorted(res_a.keys() & res_b.keys())
    if not keys:
        raise UsageError(f"runs '{run_a.name}' and '{run_b.name}' share no (case, repeat) results; "
                         f"compare runs evaluated on the same cases")
    notes = []
    only_a, only_b = len(res_a) - len(keys), len(res_b) - len(keys)
    if only_a or only_b:
        notes.append(f"{len(keys)} paired results; {only_a} only in A and {only_b} only in B are left out")

    names_a = _metric_names(run_a, list(res_a.values()))
    names_b = set(_metric_names(run_b, list(res_b.values())))
    metrics = {}
    for name in (n for n in names_a if n in names_b):
        a = [_value(res_a[k], name) for k in keys]
        b = [_value(res_b[k], name) for k in keys]
        stats = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
        metrics[name] = {"a_mean": sum(a) / len(a), "b_mean": sum(b) / len(b), **stats, "n": len(keys)}
    unmatched = [n for n in names_a if n not in names_b] + sorted(names_b - set(names_a))
    if unmatched:
        notes.append(f"metrics in only one run are not compared: {', '.join(unmatched)}")

    a_pass = [res_a[k].passed for k in keys]
    b_pass = [res_b[k].passed for k in keys]
    regressed, fixed = _changed_cases(store, project_id, keys, res_a, res_b)
    return {
        "a": run_json(run_a, prompt_a) | {"id": run_a.id},
        "b": run_json(run_b, prompt_b) | {"id": run_b.id},
        "pairs": len(keys), "only_a": only_a, "only_b": only_b,
        "metrics": metrics,
        "pass": {"a_rate": sum(a_pass) / len(keys), "b_rate": sum(b_pass) / len(keys),
                 "mcnemar": mcnemar(a_pass, b_pass)},
        "regressed": regressed, "fixed": fixed,
        "same_prompt": prompt_a.id == prompt_b.id,
        "prompt_diff": diff_text(prompt_a, prompt_b),
        "warnings": warnings(run_a, run_b, res_a, res_b),
        "notes": notes,
    }


def _changed_cases(store: Store, project_id: int, keys: list[tuple[int, int]], res_a: dict,
                   res_b: dict) -> tuple[list[dict], list[dict]]:
    """Cases whose pass share over their repeats fell (regressed) or rose (fixed) from A to B."""
    by_case: dict[int, list[tuple[int, int]]] = {}
    for key in keys:
        by_case.setdefault(key[0], []).append(key)
    changed = []
    for case_id, case_keys in by_case.items():
        a_share = sum(res_a[k].passed for k in case_keys) / len(case_keys)
        b_share = sum(res_b[k].passed for k in case_keys) / len(case_keys)
        if a_share != b_share:
            changed.append((case_id, case_keys, a_share, b_share))
    cases = store.cases_by_id(project_id, (c[0] for c in changed))
    regressed, fixed = [], []
    for case_id, case_keys, a_share, b_share in changed:
        worse = b_share < a_share
        # show the repeat where the change is visible: A passed and B failed (or the reverse)
        key = next((k for k in case_keys if res_a[k].passed == worse and res_b[k].passed != worse),
                   case_keys[0])
        case = cases.get(case_id)
        entry = {"case_id": case_id, "repeat": key[1], "repeats": len(case_keys),
                 "inputs": case.inputs if case else None, "expected": res_b[key].expected_of(case),
                 "a_pass_share": a_share, "b_pass_share": b_share,
                 "a": _side(res_a[key]), "b": _side(res_b[key])}
        (regressed if worse else fixed).append(entry)
    return regressed, fixed
