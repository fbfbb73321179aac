"""What `eval` and `run` add for CI: the JUnit and Markdown files, the failure summary."""

from __future__ import annotations

from pathlib import Path

from promptlab.evaluation.gates import GateResult
from promptlab.store import Store

MAX_LISTED = 10


def write_ci_outputs(store: Store, plans: list, gates: list[GateResult], *, junit: Path | None = None,
                     report_md: Path | None = None) -> None:
    """The JUnit XML (every case result and every gate) and the Markdown summary of these runs."""
    if not junit and not report_md:
        return
    from promptlab.reports import chunks, write_report
    from promptlab.reports.facts import gate_facts, run_facts

    facts = [run_facts(store, plan.project_id, store.run_by_id(plan.run_id)) for plan in plans]
    gate_rows = gate_facts(gates) or []
    if junit:
        write_report(junit, chunks(facts, "junit", gates=gate_rows))
    if report_md:
        write_report(report_md, chunks(facts, "md", gates=gate_rows))


def failure_summary(gates: list[GateResult]) -> str:
    """One message naming every failing gate (the first MAX_LISTED, then a count)."""
    failing = [g for g in gates if not g.passed]
    listed = "; ".join(f"{g.name}: {g.message}" for g in failing[:MAX_LISTED])
    more = f"; and {len(failing) - MAX_LISTED} more" if len(failing) > MAX_LISTED else ""
    return f"{len(failing)} gate(s) failed: {listed}{more}"
