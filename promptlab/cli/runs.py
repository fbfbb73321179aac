"""`promptlab runs list|show|compare|delete|wait`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from promptlab.cli import completion
from promptlab.cli.common import (Project, AsJson, Baseline, JUnit, MaxErrorRate, MaxRegression, MinPassK,
                                  MinPassRate, MinScore, ProgressMode, ReportMd, Yes, confirm, emit_json, read_only)
from promptlab.terminal import printable

app = typer.Typer(help="Runs: list them, show one, compare two, delete one, wait for a batch run.",
                  no_args_is_help=True)


RUN_STATUSES = ("running", "submitted", "completed", "failed", "interrupted")


@app.command("list")
@read_only
def list_(ctx: typer.Context, project: Project = None,
          prompt: Annotated[Optional[str], typer.Option(
              metavar="REF", help="Only runs of this prompt: NAME (any version), NAME@VERSION or NAME@LABEL.")] = None,
          model: Annotated[Optional[str], typer.Option(metavar="MODEL", help="Only runs on this model alias.")] = None,
          status: Annotated[Optional[str], typer.Option(
              metavar="STATUS", help=f"Only runs with this status ({', '.join(RUN_STATUSES)}).")] = None,
          limit: Annotated[int, typer.Option(help="Newest N runs.")] = 30,
          all_: Annotated[bool, typer.Option("--all", help="Also list optimizer runs (hidden by default).")] = False,
          json_: AsJson = False) -> None:
    """List runs, newest first: name, status, prompt, model, n, main score, errors, created."""
    from promptlab import display
    from promptlab.errors import UsageError
    from promptlab.store import parse_ref

    if status is not None and status not in RUN_STATUSES:
        raise UsageError(f"--status: unknown status '{status}' (one of {', '.join(RUN_STATUSES)})")
    state = ctx.obj
    store, project_id = state.store, state.project_id(project)
    filters = {}
    if prompt is not None:  # a bare name means every version; a selector means that one version
        name, selector = parse_ref(prompt)
        filters = ({"prompt_id": store.prompt(project_id, prompt).id} if selector
                   else {"prompt_name": name})
    rows = store.run_rows(project_id, model=model, status=status, optimizer_runs=all_, limit=limit, **filters)
    gone = {r["name"] for r in rows if _owner_gone(r)}
    if json_:
        return emit_json([{"name": r["name"], "status": r["status"], "owner_gone": r["name"] in gone,
                           "prompt": r["prompt"], "version": r["version"], "ref": f"{r['prompt']}@{r['version']}",
                           "model": r["model"], "n": r["n"], "errors": r["errors"], "metric": r["metric"],
                           "score": r["score"], "optimizer": bool(r["optimizer"]), "created_at": r["created_at"]}
                          for r in rows])
    display.print_table("runs", ["name", "status", "prompt", "model", "n", "main score", "errors", "created"],
                        [[r["name"], "running, owner gone: --resume it" if r["name"] in gone else r["status"],
                          f"{r['prompt']}@{r['version']}", r["model"], r["n"],
                          "-" if r["score"] is None else f"{r['score']:.3f} {r['metric']}", r["errors"],
                          (r["created_at"] or "")[:16].replace("T", " ")] for r in rows])


def _owner_gone(row: dict) -> bool:
    """A run still marked running whose process is gone (killed, or its machine down): only a
    resume finishes it."""
    from promptlab.store.lease import holder

    return row["status"] == "running" and holder(row["status"], row["owner_host"], row["owner_pid"],
                                                  row["heartbeat_at"]) is None


@app.command("show")
@read_only
def show(ctx: typer.Context, name: Annotated[str, typer.Argument(
             help="The run's name (see `promptlab runs list`).", autocompletion=completion.runs)],
         project: Project = None,
         failures: Annotated[int, typer.Option(help="Failed cases to list.")] = 10,
         case: Annotated[Optional[int], typer.Option(
             "--case", metavar="ID", help="Show this case instead: the messages sent (rebuilt exactly from the "
                                          "immutable prompt version) and its results.")] = None,
         json_: AsJson = False) -> None:
    """One run: scores with intervals, per-label P/R/F1, confusion matrix, failed cases."""
    from promptlab import display
    from promptlab.reports.facts import run_facts

    store = ctx.obj.store
    project_id = ctx.obj.project_id(project)
    run = store.run(project_id, name)
    if case is not None:
        return _show_case(store, project_id, run, case, json_)
    facts = run_facts(store, project_id, run)
    batches = _batches(store, run.id)
    if json_:
        return emit_json(facts["run"] | {"summary": run.summary, "failed": facts["failed"][:failures],
                                         "slowest": facts["slowest"], "costliest": facts["costliest"],
                                         "distributions": facts["distributions"], "batches": batches})
    display.print_run_facts(facts, failures)
    for batch in batches:
        typer.echo(printable(f"batch {batch['batch_id']}: {batch['status']}, {batch['n_items']} requests"
                             f"{'' if batch['done'] else ' (at the provider)'}"))


def _batches(store, run_id: int, live: bool = False) -> list[dict]:
    """A batch run's provider batches (`live`: those not collected yet), oldest first (none for a
    per-call run)."""
    return [dict(row) for row in store.db.query(
        "select batch_id, provider, status, n_items, done, input_file_id, output_file_id, error_file_id, "
        f"error, created_at, updated_at from batches where run_id = ? {'and done = 0' if live else ''} "
        "order by id", [run_id])]


def _show_case(store, project_id: int, run, case_id: int, as_json: bool) -> None:
    import dataclasses
    import json

    from promptlab.api import LoadedPrompt
    from promptlab.errors import NotFoundError
    from promptlab.prompting.conversation import text_of

    if case_id not in run.case_ids:
        raise NotFoundError(f"run '{run.name}' has no case {case_id}; its cases are listed by "
                            f"`promptlab runs show {run.name} --json`")
    case = store.cases_by_id(project_id, [case_id])[case_id]
    loaded = LoadedPrompt.from_store(store, store.prompt_by_id(run.prompt_id))
    messages = loaded.render(case.inputs, case_id=case_id)
    stored = store.results(run.id, case_id)
    expected = next((r.expected_of(case) for r in stored), case.expected)  # as it was scored against
    results = [{"repeat": r.repeat, "output": r.output, "parsed": r.parsed, "parse_error": r.parse_error,
                "scores": {name: dataclasses.asdict(s) for name, s in r.scores.items()}, "score": r.score,
                "passed": int(r.passed), "error_kind": r.error_kind, "error": r.error, "latency_ms": r.latency_ms,
                "cached": int(r.cached)}  # 0/1: this output's shape since it was added
               for r in stored]
    if as_json:
        return emit_json({"run": run.name, "prompt": loaded.ref, "model": run.model, "case_id": case_id,
                          "inputs": case.inputs, "expected": expected, "messages": messages,
                          "params": run.params, "results": results})
    typer.echo(printable(f"run {run.name}: {loaded.ref} on {run.model}, case {case_id} "
                         f"(expected {json.dumps(expected, ensure_ascii=False)})"))
    if "tools" in loaded.params:
        names = [t["function"]["name"] for t in loaded.params["tools"]]
        typer.echo(printable(f"--- tools offered: {', '.join(names)}"
                             + (f" (tool_choice {json.dumps(loaded.params['tool_choice'])})"
                                if "tool_choice" in loaded.params else "")))
    for message in messages:
        typer.echo(printable(f"--- {message['role']}\n{text_of(message['content'])}"))
    for r in results or [{"repeat": 0, "output": None, "error": "no result stored yet"}]:
        outcome = r.get("error") or f"score {r['score']}, {'passed' if r['passed'] else 'failed'}"
        typer.echo(printable(f"=== reply (repeat {r['repeat']}): {outcome}\n{r.get('output') or ''}"))


@app.command("compare")
@read_only
def compare(ctx: typer.Context,
            a: Annotated[str, typer.Argument(help="Run A: a run name, or a prompt version (NAME@VERSION, "
                                                  "NAME@LABEL) meaning its latest completed run.",
                                             autocompletion=completion.runs_and_prompts)],
            b: Annotated[str, typer.Argument(help="Run B, compared against A (same forms; a prompt version "
                                                  "takes its latest run on A's model and cases, if any).",
                                             autocompletion=completion.runs_and_prompts)],
            project: Project = None,
            model: Annotated[Optional[str], typer.Option(
                help="When A or B is a prompt version: take its runs on this model only.")] = None,
            show: Annotated[int, typer.Option(help="Regressed and fixed cases to list.")] = 20,
            json_: AsJson = False) -> None:
    """Compare two runs on their shared cases: deltas with paired bootstrap intervals and p-values,
    McNemar on pass/fail, the cases that regressed and were fixed, and the prompt diff."""
    from promptlab import display
    from promptlab.services.compare import compare_runs, resolve_runs

    store = ctx.obj.store
    project_id = ctx.obj.project_id(project)
    data = compare_runs(store, project_id, *resolve_runs(store, project_id, a, b, model))
    for warning in data["warnings"]:  # on stderr with --json too: a script's log shows them
        typer.echo(printable(f"promptlab: warning: {warning}"), err=True)
    if json_:
        return emit_json(data)
    display.print_comparison(data, show)


@app.command("delete")
def delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The run to delete.", autocompletion=completion.runs)],
           project: Project = None, yes: Yes = False) -> None:
    """Delete a run and its results (its cases, prompt and cached replies stay)."""
    from promptlab.store import lease
    from promptlab.errors import UsageError

    store = ctx.obj.store
    run = store.run(ctx.obj.project_id(project), name)
    if holder := lease.holder(run.status, run.owner_host, run.owner_pid, run.heartbeat_at):
        raise UsageError(f"run '{name}' is still running ({holder}); stop that process first")
    if run.optimization_id:  # the optimization's report and resume read its runs
        owner = store.optimization_by_id(run.optimization_id).name
        raise UsageError(f"run '{name}' belongs to optimization '{owner}', whose report needs it")
    out = len(_batches(store, run.id, live=True))
    confirm(f"Delete run '{name}' and its {run.n_results or 0} results?"
            + (f" Its {out} batch(es) at the provider run on (and are billed): no one will collect them."
               if out else ""), yes)
    removed = store.delete_run(run.id)
    typer.echo(printable(f"deleted run {name} ({removed} results)"))


@app.command("wait")
def wait(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The batch run to wait for.", autocompletion=completion.runs)],
         project: Project = None, min_score: MinScore = None, min_pass_rate: MinPassRate = None,
         max_error_rate: MaxErrorRate = None, min_pass_k: MinPassK = None, max_regression: MaxRegression = None,
         baseline: Baseline = None, junit: JUnit = None, report_md: ReportMd = None,
         progress: ProgressMode = "auto", json_: AsJson = False) -> None:
    """Wait for a batch run: poll its batches, store the results as they finish, and submit again only
    what a failed or expired batch left unanswered; then apply the gates given (exit 1 when one fails).
    One process waits at a time; a killed wait loses nothing (run it again)."""
    from types import SimpleNamespace

    from promptlab.cli.common import conclude, gate_flags, run_plans
    from promptlab.errors import UsageError
    from promptlab.evaluation.plan import resume_plan
    from promptlab.evaluation.summary import run_json
    from promptlab.evaluation.gates import validate_gates
    from promptlab.services.evaluate import EvaluateRequest

    state = ctx.obj
    store, project_id = state.store, state.project_id(project)
    gates = gate_flags(min_score=min_score, min_pass_rate=min_pass_rate, max_error_rate=max_error_rate,
                       min_pass_k=min_pass_k, max_regression=max_regression, baseline=baseline)
    validate_gates(gates, "runs wait gates")
    run = store.run(project_id, name)
    if run.mode != "batch":
        raise UsageError(f"run '{name}' is not a batch run; continue it with `promptlab eval --resume {name}`")
    if run.status == "completed":  # waited for already: its numbers, gated
        return conclude(state, [SimpleNamespace(run_id=run.id, project_id=project_id)],
                        [run_json(run, store.prompt_by_id(run.prompt_id))], as_json=json_, gates=gates,
                        junit=junit, report_md=report_md)
    plan = resume_plan(store, state.settings, project_id, name)
    request = EvaluateRequest([plan], plan.concurrency, plan.use_cache, batch=frozenset({plan.run_id}))
    run_plans(state, request, progress=progress, as_json=json_, gates=gates, junit=junit, report_md=report_md)