"""Quality gates: named checks over run summaries; any failure means exit 1.

Keys (in an experiment's `gates:` or as CLI flags):
  min_score: 0.8 | {metric: 0.8}   every run's metric mean must reach it (the headline: every
                                   item counts, an item that errored scores 0)
  min_pass_rate: 0.9               share of items that passed (an item that errored failed)
  min_pass_k: 0.8                  pass^k: share of cases that passed on every repeat
  max_error_rate: 0.05             share of items that ended in an error
  max_regression: 0.05 | {metric: 0.05}
                                   how far a metric mean may drop below the baseline's
  baseline: production | RUN_NAME  what max_regression compares with: a run by name, or
                                   a label (default production): the latest completed run
                                   of the version of the same prompt carrying that label
                                   on the same model and cases (never the run itself); a
                                   baseline on another model, split or set of cases cannot
                                   be judged against: exit 2, naming the difference
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptlab.errors import UsageError
from promptlab.store.records import Run

KNOWN = ("min_score", "min_pass_rate", "min_pass_k", "max_error_rate", "max_regression", "baseline")
DEFAULT_BASELINE = "production"


@dataclass(frozen=True)
class GateResult:
    name: str       # e.g. "min_score[exact_match] one-word@1 on fake"
    passed: bool
    actual: float | None
    limit: float
    message: str
    judged: bool = True  # False: the gate cannot judge (a baseline unlike the run): bad input, exit 2


@dataclass(frozen=True)
class CannotJudge:
    """Why a baseline cannot be compared with the run (another model, split or set of cases)."""

    reason: str


def validate_gates(gates: dict[str, Any], where: str = "gates") -> None:
    if "baseline" in gates and "max_regression" not in gates:
        raise UsageError(f"{where}.baseline: set max_regression too (e.g. max_regression: 0.05)")
    for key, value in gates.items():
        if key not in KNOWN:
            raise UsageError(f"{where}: unknown gate '{key}'; known gates are {', '.join(KNOWN)}")
        if key == "baseline":
            if not isinstance(value, str) or not value:
                raise UsageError(f"{where}.baseline: expected a run name or a label, got {value!r}")
            continue
        values = value.values() if isinstance(value, dict) and key in ("min_score", "max_regression") else [value]
        for v in values:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise UsageError(f"{where}.{key}: expected a number, got {v!r}")
            if not 0 <= v <= 1:  # scores, pass and error rates are shares
                raise UsageError(f"{where}.{key}: {v!r} is outside [0, 1]; give a share such as 0.8")


def check_gates(gates: dict[str, Any], runs: list[dict],
                baselines: dict[str, dict | str] | None = None) -> list[GateResult]:
    """Each gate against each run (run dicts as evaluation.run_json makes them).

    baselines: run name -> its baseline (a run_json dict), or why none was found.
    """
    results: list[GateResult] = []
    for run in runs:
        label = f"{run['prompt']}@{run['version']} on {run['model']}"
        if "min_score" in gates:
            wanted = gates["min_score"]
            limits = wanted if isinstance(wanted, dict) else {m: wanted for m in run["scores"]}
            for metric, limit in limits.items():
                actual = run["scores"].get(metric)
                ok = actual is not None and actual >= limit
                results.append(GateResult(f"min_score[{metric}] {label}", ok, actual, limit,
                                          f"{metric} mean {_fmt(actual)} {'>=' if ok else '<'} {limit}"))
        if "min_pass_rate" in gates:
            actual, limit = run.get("pass_rate"), gates["min_pass_rate"]
            ok = actual is not None and actual >= limit
            results.append(GateResult(f"min_pass_rate {label}", ok, actual, limit,
                                      f"pass rate {_fmt(actual)} {'>=' if ok else '<'} {limit}"))
        if "min_pass_k" in gates:
            repeats, limit = run.get("repeats") or {}, gates["min_pass_k"]
            actual, k = repeats.get("pass_hat_k"), repeats.get("k") or 1
            ok = actual is not None and actual >= limit
            results.append(GateResult(f"min_pass_k {label}", ok, actual, limit,
                                      f"pass^{k} {_fmt(actual)} {'>=' if ok else '<'} {limit}"))
        if "max_error_rate" in gates:
            rate = run["errors"] / run["n"] if run["n"] else 1.0
            limit = gates["max_error_rate"]
            ok = rate <= limit
            results.append(GateResult(f"max_error_rate {label}", ok, rate, limit,
                                      f"error rate {rate:.3f} {'<=' if ok else '>'} {limit}"))
        if "max_regression" in gates:
            results.extend(_regression(gates["max_regression"], run, label,
                                       (baselines or {}).get(run["name"], "no baseline was resolved")))
    return results


def _regression(wanted: Any, run: dict, label: str, base: dict | str | CannotJudge) -> list[GateResult]:
    if not isinstance(base, dict):
        limit = wanted if not isinstance(wanted, dict) else min(wanted.values(), default=0.0)
        if isinstance(base, CannotJudge):
            return [GateResult(f"max_regression {label}", False, None, limit,
                               f"cannot judge: {base.reason}", judged=False)]
        return [GateResult(f"max_regression {label}", False, None, limit, f"no baseline: {base}")]
    limits = wanted if isinstance(wanted, dict) else {m: wanted for m in run["scores"] if m in base["scores"]}
    out = []
    for metric, limit in limits.items():
        actual, before = run["scores"].get(metric), base["scores"].get(metric)
        drop = None if actual is None or before is None else before - actual
        ok = drop is not None and drop <= limit + 1e-12
        detail = (f"{metric} mean {_fmt(actual)} vs {_fmt(before)} in baseline {base['name']}: drop "
                  f"{_fmt(drop)} {'<=' if ok else '>'} {limit}") if drop is not None else (
                  f"{metric} has no mean in this run or in baseline {base['name']}")
        out.append(GateResult(f"max_regression[{metric}] {label}", ok, drop, limit, detail))
    return out


def find_baseline(store: Any, project_id: int, baseline: str, run: Run) -> Run | str | CannotJudge:
    """The baseline run for `run`: a run by name, or the latest completed run of the labelled
    version on the same model and cases. A one-line reason when there is none, CannotJudge when
    the only candidates ran on another model, split or set of cases."""
    named = store.find_run(project_id, baseline)
    if named is not None:
        if named.id == run.id:
            return f"baseline '{baseline}' is this run itself"
        unlike = mismatch(store, project_id, named, run)
        return CannotJudge(f"baseline run '{named.name}' {unlike}") if unlike else named
    prompt = store.prompt_by_id(run.prompt_id)
    try:
        version = store.prompt(project_id, f"{prompt.name}@{baseline}")
    except UsageError:
        return f"no run named '{baseline}', and prompt '{prompt.name}' has no label '{baseline}'"
    candidates = [r for r in store.prompt_runs(project_id, version.id) if r.id != run.id]
    if not candidates:
        return (f"no earlier completed run of {version.ref} ({prompt.name}@{baseline}); "
                f"evaluate it once: promptlab eval --prompt {version.ref}")
    for candidate in candidates:
        if not mismatch(store, project_id, candidate, run):
            return candidate
    latest = candidates[0]
    return CannotJudge(f"no completed run of {version.ref} ({prompt.name}@{baseline}) is on this run's model "
                       f"and cases: its latest, '{latest.name}', {mismatch(store, project_id, latest, run)}; "
                       f"evaluate {version.ref} on the same model and cases, or name a run with --baseline")


def mismatch(store: Any, project_id: int, base: Run, run: Run) -> str | None:
    """How `base` differs from `run` in what a score depends on (model, cases), or None."""
    if (base.model, base.model_name) != (run.model, run.model_name):
        return f"ran on model {base.model}, this run on {run.model}"
    if sorted(base.case_ids) == sorted(run.case_ids):
        return None
    theirs, ours = (_splits(store, project_id, r.case_ids) for r in (base, run))
    if theirs != ours:
        return f"ran on {theirs}, this run on {ours}"
    common = len(set(base.case_ids) & set(run.case_ids))
    return (f"ran on other cases of {ours}: {len(base.case_ids)} cases, {common} of them among this "
            f"run's {len(run.case_ids)}")


def _splits(store: Any, project_id: int, case_ids: list[int]) -> str:
    """'split val (12 cases)', or the mix: 'split train (8 cases) and no split (2 cases)'."""
    counts: dict[str, int] = {}
    for case in store.cases_by_id(project_id, case_ids).values():
        name = f"split {case.split}" if case.split else "no split"
        counts[name] = counts.get(name, 0) + 1
    return " and ".join(f"{name} ({n} cases)" for name, n in sorted(counts.items()))


def check_baseline(store: Any, project_id: int | None, gates: dict[str, Any], prompt_names: list[str],
                   where: str = "gates") -> None:
    """Before anything runs: a baseline must name an existing run or a label of each prompt."""
    if "max_regression" not in gates:
        return
    baseline = gates.get("baseline", DEFAULT_BASELINE)
    if project_id is not None and store.find_run(project_id, baseline) is not None:
        return
    for name in prompt_names:
        try:
            if project_id is None:
                raise UsageError(name)
            store.prompt(project_id, f"{name}@{baseline}")
        except UsageError:
            raise UsageError(f"{where}: baseline '{baseline}': no run of that name, and prompt '{name}' has no "
                             f"label '{baseline}'; label the version to compare with "
                             f"(promptlab prompt label {name}@VERSION {baseline}) or name a run") from None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
