"""`promptlab eval`: prompt versions × models over a selection of cases (every pair a run)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from promptlab.cli import completion
from promptlab.cli.common import (Baseline, JUnit, MaxErrorRate, MaxRegression, MinPassK, MinPassRate, MinScore,
                                  Project, ProgressMode, ReportMd, metric_spec)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(ctx: typer.Context,
              project: Project = None,
              prompt: Annotated[list[str], typer.Option(
                  help="NAME, NAME@VERSION or NAME@LABEL (repeatable: every prompt × every model).",
                  autocompletion=completion.prompts)] = [],
              model: Annotated[list[str], typer.Option(
                  help="Alias from promptlab.toml or a LiteLLM model (repeatable).")] = [],
              name: Annotated[Optional[str], typer.Option(
                  help="Run name (unique in the project); with several runs, each adds its prompt "
                       "and/or model to it.")] = None,
              concurrency: Annotated[Optional[str], typer.Option(
                  metavar="N|auto", help="Calls in flight, or auto: halved on rate limits (429), "
                                         "grown while calls succeed.")] = None,
              repeat: Annotated[int, typer.Option(min=1, help="Evaluate each case N times.")] = 1,
              metric: Annotated[list[str], typer.Option(
                  help="Metric name, or NAME:JSON-ARGS such as 'fuzzy:{\"threshold\":0.9}' (repeatable).")] = [],
              split: Annotated[Optional[str], typer.Option(help="Only cases of this split.")] = None,
              tag: Annotated[list[str], typer.Option(help="Only cases with this tag.")] = [],
              limit: Annotated[Optional[int], typer.Option(min=1, help="At most N cases.")] = None,
              include_generated: Annotated[bool, typer.Option(
                  "--include-generated",
                  help="Also evaluate non-golden cases (generated, or imported with --not-golden); "
                       "by default only golden cases are evaluated.")] = False,
              param: Annotated[list[str], typer.Option(help="Model parameter KEY=VALUE.")] = [],
              no_cache: Annotated[bool, typer.Option("--no-cache", help="Call the provider even when cached.")] = False,
              resume: Annotated[list[str], typer.Option(
                  help="Finish an interrupted run by name (repeatable: they run together).",
                  autocompletion=completion.runs)] = [],
              batch: Annotated[bool, typer.Option(
                  "--batch", help="Send the cases through the provider's Batch API (about half the "
                                  "price, up to 24 h); the same as --mode batch.")] = False,
              mode: Annotated[Optional[str], typer.Option(
                  metavar="MODE", help="call (a request per case, the default), batch (the provider's "
                                       "Batch API) or auto (batch from [batch] auto_threshold items on "
                                       "a provider with batches).")] = None,
              no_wait: Annotated[bool, typer.Option(
                  "--no-wait", help="With batches: submit them and return at once; collect the results "
                                    "later with `promptlab runs wait NAME`.")] = False,
              min_score: MinScore = None, min_pass_rate: MinPassRate = None,
              max_error_rate: MaxErrorRate = None, min_pass_k: MinPassK = None, max_regression: MaxRegression = None,
              baseline: Baseline = None, junit: JUnit = None, report_md: ReportMd = None,
              progress: ProgressMode = "auto",
              json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
        """Evaluate prompt versions on models (or --resume interrupted runs).

        Each --prompt × --model pair is a run; all of them share one table, one set of gates and one
        exit code.

        Examples:

        \b
          promptlab eval --prompt classifier@3 --model gpt --split test --name nightly
          promptlab eval --prompt classifier@2 --prompt classifier@3 --model gpt --model local
          promptlab eval --prompt classifier@production --metric exact_match --min-score 0.8
          promptlab eval --resume nightly
          promptlab eval --prompt classifier@3 --model gpt --batch --no-wait --name big
        """
        from promptlab.evaluation import batch as batches
        from promptlab.providers import batch_api
        from promptlab.cli.common import gate_flags, parse_pairs, run_plans
        from promptlab.config import parse_concurrency
        from promptlab.errors import UsageError
        from promptlab.evaluation.plan import matrix_run_name, metric_context, plan_run, resume_plan
        from promptlab.evaluation.gates import check_baseline, validate_gates
        from promptlab.services.evaluate import EvaluateRequest

        state = ctx.obj
        store, settings = state.store, state.settings
        concurrency = concurrency and parse_concurrency(concurrency, "--concurrency")
        project_id = state.project_id(project)
        gates = gate_flags(min_score=min_score, min_pass_rate=min_pass_rate, max_error_rate=max_error_rate,
                           min_pass_k=min_pass_k, max_regression=max_regression, baseline=baseline)
        validate_gates(gates, "eval gates")
        mode = _mode(batch, mode, resume)
        if no_wait and mode != "auto" and (mode != "batch" if not resume else any(
                store.run(project_id, r).mode != "batch" for r in resume)):  # refused before anything is written
            raise UsageError("eval: --no-wait is for batch mode; add --batch")
        if no_wait and (gates or junit or report_md):  # never dropped: they apply once the results are in
            raise UsageError("eval: with --no-wait, give the gates and --junit/--report-md to "
                             "`promptlab runs wait RUN`, which applies them once the results are in")
        if resume:  # a resumed run keeps its mode
            if prompt or model:
                raise UsageError("eval: --resume continues runs with their own prompt and model; "
                                 "drop --prompt/--model")
            plans = [resume_plan(store, settings, project_id, r) for r in _distinct(resume, "--resume")]
            chosen = {p.run_id for p in plans if store.run_by_id(p.run_id).mode == "batch"}
        else:
            if not prompt:
                raise UsageError("eval: give --prompt NAME[@VERSION] (or --resume RUN)")
            models = [settings.resolve_model(m) for m in _distinct(model, "--model")] \
                or [settings.resolve_model(None)]
            if mode == "batch":  # before anything is written
                for chosen_model in models:
                    batch_api.check(chosen_model)
            versions = [store.prompt(project_id, p) for p in _distinct(prompt, "--prompt")]
            check_baseline(store, project_id, gates, sorted({v.name for v in versions}), "eval")
            cases = store.cases(project_id, split=split, tags=tag,  # selected in SQL, limit included
                                golden=None if include_generated else True, limit=limit)
            if not cases:
                _check_selection(store, project_id, split, tag)
            if not cases and not include_generated and store.count_cases(project_id, split=split, tags=tag):
                raise UsageError("eval: the selected cases are all non-golden (e.g. generated); review "
                                 "them and mark them with `promptlab case golden IDS`, or pass "
                                 "--include-generated")
            with store.db.atomic():  # every run of the matrix, or none
                plans = [plan_run(store, project_id, version, chosen_model, cases,
                                  name=name and matrix_run_name(name, version, chosen_model,
                                                                by_prompt=len(versions) > 1,
                                                                by_model=len(models) > 1),
                                  metric_specs=[metric_spec(m) for m in metric] or None,
                                  repeat=repeat, concurrency=settings.concurrency(concurrency),
                                  params=parse_pairs(param, "--param"),
                                  context=metric_context(settings), use_cache=not no_cache)
                         for version in versions for chosen_model in models]
        # a resumed run keeps its concurrency and cache choice unless told otherwise
            chosen = batches.choose(mode, plans, store, settings.batch)
        request = EvaluateRequest(plans, settings.concurrency(concurrency, plans[0].concurrency),
                                  use_cache=not no_cache, batch=frozenset(chosen), wait=not no_wait)
        run_plans(state, request, progress=progress, as_json=json_, gates=gates, junit=junit,
                  report_md=report_md)


def _distinct(values: list[str], flag: str) -> list[str]:
    """A repeated option's values, each once: the same one twice is a slip, not two runs."""
    from promptlab.errors import UsageError

    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise UsageError(f"eval: {flag} {twice} is given twice; give each once")
    return values


def _mode(batch: bool, mode: str | None, resume: list[str]) -> str:
    """--batch / --mode as one mode (call, batch or auto)."""
    from promptlab.errors import UsageError

    if mode is not None and mode not in ("call", "batch", "auto"):
        raise UsageError(f"eval: --mode must be call, batch or auto, not '{mode}'")
    if batch and mode not in (None, "batch"):
        raise UsageError(f"eval: --batch contradicts --mode {mode}; give one of them")
    if resume and (batch or mode):
        raise UsageError("eval: --resume continues a run in its own mode; drop --batch/--mode")
    return "batch" if batch else mode or "call"


def _check_selection(store, project_id: int, split: str | None, tags: list[str]) -> None:
    """An empty selection because of an unknown split or tag: name the ones that exist."""
    from promptlab.errors import UsageError

    splits, known_tags = store.case_facets(project_id)
    if split and split not in splits:
        here = ", ".join(f"{name} ({n})" for name, n in splits.items()) or "none: no cases yet"
        raise UsageError(f"eval: no cases in split '{split}'; splits here: {here}")
    unknown = [t for t in tags if t not in known_tags]
    if unknown:
        here = ", ".join(f"{name} ({n})" for name, n in known_tags.items()) or "none"
        raise UsageError(f"eval: no case has tag '{unknown[0]}'; tags here: {here}")

