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

import json
from array import array
from typing import Any

from promptlab.prompting.diffing import diff_text
from promptlab.errors import NotFoundError, UsageError
from promptlab.evaluation.evaluate import run_json
from promptlab.models import PromptVersion
from promptlab.store.records import Run
from promptlab.scorers.stats import mcnemar, paired_bootstrap
from promptlab.store import Store, loads

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


def warnings(run_a: Run, run_b: Run, all_errors: tuple[bool, bool]) -> list[str]:
    """What makes the comparison unlike with unlike: models, cases, runs that are all errors."""
    out = []
    if run_a.model != run_b.model:
        out.append(f"A ran on {run_a.model} and B on {run_b.model}: the difference mixes the "
                   f"prompts with the models")
    cases_a, cases_b = set(run_a.case_ids), set(run_b.case_ids)
    if cases_a != cases_b:
        out.append(f"A and B were evaluated on different cases ({len(cases_a)} and {len(cases_b)}, "
                   f"{len(cases_a & cases_b)} shared): only the shared ones are compared")
    for side, run, errors_only in (("A", run_a, all_errors[0]), ("B", run_b, all_errors[1])):
        if errors_only:
            out.append(f"every result of {side} ({run.name}) is an error: its scores are 0 and say "
                       f"nothing about the prompt")
    return out


def _values(scores: str | None, error_kind: str | None, names: list[str]) -> list[float]:
    """A result's value on each metric: 0 for an error or a missing score."""
    if error_kind is not None or not scores:
        return [0.0] * len(names)
    decoded = json.loads(scores)
    return [float(v) if (v := (decoded.get(name) or {}).get("value")) is not None else 0.0 for name in names]


def _metric_names(store: Store, run: Run) -> list[str]:
    """The run's metrics: its summary's, then any other its results were scored by, in the order
    they first appear (by case, repeat and key)."""
    names = list(((run.summary or {}).get("metrics") or {}).keys())
    rows = store.db.execute(
        "select j.key from results r, json_each(r.scores) j where r.run_id = ? and json_valid(r.scores) "
        "group by j.key order by min(printf('%020d %020d %020d', r.case_id, r.repeat, j.id))", [run.id])
    names.extend(key for (key,) in rows if key not in names)
    for (scores,) in store.db.execute("select scores from results where run_id = ? and not json_valid(scores)",
                                      [run.id]):
        names.extend(k for k in json.loads(scores) if k not in names)
    return names


def _side(row: tuple) -> dict:
    passed, output, score, error, parse_error, error_kind = row
    return {"passed": bool(passed), "output": output, "score": score, "error": error or parse_error,
            "error_kind": error_kind}


_PAIRS = """select a.case_id, a.repeat, coalesce(a.passed, 0) != 0, coalesce(b.passed, 0) != 0,
                   a.error_kind, b.error_kind, a.scores, b.scores
            from results a join results b on b.run_id = ? and b.case_id = a.case_id and b.repeat = a.repeat
            where a.run_id = ? order by a.case_id, a.repeat"""


def compare_runs(store: Store, project_id: int, run_a: Run, run_b: Run, *,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Everything `runs compare` shows, as plain data (B is compared against A). The pairs are
    joined and read in SQL as a stream: what stays in memory is a number per pair and metric."""
    prompt_a, prompt_b = store.prompt_by_id(run_a.prompt_id), store.prompt_by_id(run_b.prompt_id)
    names_a, names_b = _metric_names(store, run_a), _metric_names(store, run_b)
    shared = [n for n in names_a if n in names_b]
    values_a, values_b = ([array("d") for _ in shared] for _ in range(2))
    a_pass, b_pass = bytearray(), bytearray()
    changes = _Changes()
    for case_id, repeat, passed_a, passed_b, error_a, error_b, scores_a, scores_b in store.db.execute(
            _PAIRS, [run_b.id, run_a.id]):
        for column, value in zip(values_a, _values(scores_a, error_a, shared)):
            column.append(value)
        for column, value in zip(values_b, _values(scores_b, error_b, shared)):
            column.append(value)
        a_pass.append(passed_a)
        b_pass.append(passed_b)
        changes.add(case_id, repeat, bool(passed_a), bool(passed_b))
    pairs = len(a_pass)
    if not pairs:
        raise UsageError(f"runs '{run_a.name}' and '{run_b.name}' share no (case, repeat) results; "
                         f"compare runs evaluated on the same cases")
    (n_a, errors_a), (n_b, errors_b) = (store.db.execute(
        "select count(*), count(error_kind) from results where run_id = ?", [run.id]).fetchone()
        for run in (run_a, run_b))
    notes = []
    only_a, only_b = n_a - pairs, n_b - pairs
    if only_a or only_b:
        notes.append(f"{pairs} paired results; {only_a} only in A and {only_b} only in B are left out")

    metrics = {}
    for name, a, b in zip(shared, values_a, values_b):
        stats = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
        metrics[name] = {"a_mean": sum(a) / len(a), "b_mean": sum(b) / len(b), **stats, "n": pairs}
    names_b_set = set(names_b)
    unmatched = [n for n in names_a if n not in names_b_set] + sorted(names_b_set - set(names_a))
    if unmatched:
        notes.append(f"metrics in only one run are not compared: {', '.join(unmatched)}")

    a_passes, b_passes = [bool(x) for x in a_pass], [bool(x) for x in b_pass]
    regressed, fixed = changes.cases(store, project_id, run_a.id, run_b.id)
    return {
        "a": run_json(run_a, prompt_a) | {"id": run_a.id},
        "b": run_json(run_b, prompt_b) | {"id": run_b.id},
        "pairs": pairs, "only_a": only_a, "only_b": only_b,
        "metrics": metrics,
        "pass": {"a_rate": sum(a_passes) / pairs, "b_rate": sum(b_passes) / pairs,
                 "mcnemar": mcnemar(a_passes, b_passes)},
        "regressed": regressed, "fixed": fixed,
        "same_prompt": prompt_a.id == prompt_b.id,
        "prompt_diff": diff_text(prompt_a, prompt_b),
        "warnings": warnings(run_a, run_b, (n_a > 0 and errors_a == n_a, n_b > 0 and errors_b == n_b)),
        "notes": notes,
    }


class _Changes:
    """Cases whose pass share over their repeats fell (regressed) or rose (fixed) from A to B,
    found as the pairs stream by in case order: one case's repeats are held at a time."""

    def __init__(self) -> None:
        self.changed: list[tuple[int, int, int, float, float]] = []  # case, repeat shown, repeats, shares
        self._case: int | None = None
        self._repeats: list[tuple[int, bool, bool]] = []

    def add(self, case_id: int, repeat: int, passed_a: bool, passed_b: bool) -> None:
        if case_id != self._case:
            self._close()
            self._case = case_id
        self._repeats.append((repeat, passed_a, passed_b))

    def _close(self) -> None:
        if not self._repeats:
            return
        n = len(self._repeats)
        a_share = sum(r[1] for r in self._repeats) / n
        b_share = sum(r[2] for r in self._repeats) / n
        if a_share != b_share:
            worse = b_share < a_share
            # show the repeat where the change is visible: A passed and B failed (or the reverse)
            repeat = next((r for r, a, b in self._repeats if a == worse and b != worse), self._repeats[0][0])
            self.changed.append((self._case, repeat, n, a_share, b_share))
        self._repeats = []

    def cases(self, store: Store, project_id: int, run_a: int, run_b: int) -> tuple[list[dict], list[dict]]:
        """The regressed and the fixed cases, each with its inputs and both sides of the repeat shown."""
        self._close()
        cases = store.cases_by_id(project_id, (c[0] for c in self.changed))
        regressed, fixed = [], []
        for case_id, repeat, repeats, a_share, b_share in self.changed:
            a, b = (store.db.execute(
                "select passed, output, score, error, parse_error, error_kind, expected from results "
                "where run_id = ? and case_id = ? and repeat = ?", [run, case_id, repeat]).fetchone()
                for run in (run_a, run_b))
            case = cases.get(case_id)
            # the expected output B was scored against (kept with it), else its case's as it is now
            expected = loads(b[6]) if b[6] is not None else case.expected if case else None
            entry = {"case_id": case_id, "repeat": repeat, "repeats": repeats,
                     "inputs": case.inputs if case else None, "expected": expected,
                     "a_pass_share": a_share, "b_pass_share": b_share, "a": _side(a[:6]), "b": _side(b[:6])}
            (regressed if b_share < a_share else fixed).append(entry)
        return regressed, fixed
