"""Judge ended runs: resolve the baselines, apply the gates, write the CI files, decide the exit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from promptlab.evaluation.summary import run_json
from promptlab.evaluation.gates import DEFAULT_BASELINE, CannotJudge, GateResult, check_gates, find_baseline
from promptlab.reports.ci import write_ci_outputs

if TYPE_CHECKING:
    from promptlab.store import Store

# What runs after the evaluation (an experiment's optimization): (extra JSON keys, extra gate
# results, a function that shows its part).
Then = Callable[[], tuple[dict, list[GateResult], Any]]


@dataclass(frozen=True)
class Verdict:
    runs: list[dict]
    gates: list[GateResult]
    extra: dict = field(default_factory=dict)  # the JSON keys `then` added
    show: Callable[[], None] | None = None  # shows what `then` did

    @property
    def failed_runs(self) -> list[dict]:
        return [r for r in self.runs if r["status"] != "completed"]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def unjudged(self) -> list[GateResult]:
        return [g for g in self.gates if not g.judged]

    @property
    def exit_code(self) -> int:
        """3 when a run did not complete, 2 when a gate cannot judge, 1 when a gate failed, else 0."""
        return 3 if self.failed_runs else 2 if self.unjudged else 0 if self.passed else 1


def resolve_baselines(store: Store, plans: list, gates: dict[str, Any]) -> dict[str, dict | str | CannotJudge]:
    """Run name -> its baseline (run_json) or why there is none, for the max_regression gate."""
    if "max_regression" not in gates:
        return {}
    out: dict[str, dict | str | CannotJudge] = {}
    for plan in plans:
        run = store.run_by_id(plan.run_id)
        base = find_baseline(store, plan.project_id, gates.get("baseline", DEFAULT_BASELINE), run)
        out[run.name] = base if isinstance(base, (str, CannotJudge)) else run_json(
            base, store.prompt_by_id(base.prompt_id))
    return out


def judge(store: Store, plans: list, runs: list[dict], gates: dict[str, Any], *, then: Then | None = None,
          junit: Path | None = None, report_md: Path | None = None) -> Verdict:
    """`plans`: what has the runs' run_id and project_id; `runs`: their summaries."""
    results = check_gates(gates, runs, resolve_baselines(store, plans, gates))
    extra, later, show = then() if then is not None else ({}, [], None)
    results = [*results, *later]
    write_ci_outputs(store, plans, results, junit=junit, report_md=report_md)
    return Verdict(runs, results, extra, show)
