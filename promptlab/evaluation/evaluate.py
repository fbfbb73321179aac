"""Evaluation as a unit of work over the store: plan runs, feed the runner, record outcomes.

The runner knows nothing of the database; this module turns store records
into jobs, gives the runner a sink that commits results as they arrive, and
writes each run's summary when it ends.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from promptlab.scorers.baselines import collapse, constant_baseline
from promptlab.config import AUTO, Concurrency, ModelConfig, Settings, check_params
from promptlab.errors import ProviderError, StorageError, UsageError
from promptlab.hints import command
from promptlab.store.lease import HEARTBEAT_S
from promptlab.providers.gateway import (AUTO_CEILING, PROVIDER_FAILURES, CallError, Gateway, check_capabilities,
                                         check_credentials, structured_mode)
from promptlab.models import Case, PromptVersion, Signature
from promptlab.prompting.structured import Decoding, decoding, with_decoding
from promptlab.prompting.tools import request_params
from promptlab.store.records import Run
from promptlab.prompting.render import RenderError, check_cases, check_prompt, demo_text, render_messages
from promptlab.progress import Progress, RunTotal
from promptlab.evaluation.figures import (cost_figures, error_figures, field_accuracy, lenient_figures,
                                          metric_figures, repeat_figures)
from promptlab.evaluation.runner import ItemResult, Job, Outcome, evaluate
from promptlab.scorers import Metric, MetricContext, MetricError, get_metric
from promptlab.store import Store, dumps, is_locked, now, storage_error
from promptlab.providers.usage import ROLES, Ledger, RoleUsage, by_run, merged

DEFAULT_METRICS = ("exact_match",)


class StoreSink:
    """Sink and response cache over the store: buffered, committed once per loop tick.

    Every result finished in one turn of the event loop goes out in one commit,
    so a kill loses at most the items still in flight. A commit that meets lock
    contention keeps its rows and is retried; any other failure (disk full,
    I/O error) is kept in `failure`, and `check()` raises it so the runner
    stops calling the provider. Rows are never dropped before they are stored.
    """

    RETRY_S = 0.2

    def __init__(self, store: Store):
        self.store = store
        self.rows: list[dict] = []
        self.pending_cache: dict[str, dict] = {}
        self.scheduled = False
        self.failure: StorageError | None = None

    def get(self, key: str) -> dict | None:
        if key in self.pending_cache:
            return self.pending_cache[key]["value"]
        return self.store.cache_get(key)

    def put(self, key: str, kind: str, model: str, value: dict) -> None:
        self.pending_cache[key] = {"key": key, "kind": kind, "model": model, "value": value}
        self._schedule()

    def add(self, item: ItemResult) -> None:
        self.rows.append(item.row() | {"created_at": now()})
        self._schedule()

    def check(self) -> None:
        """Raise the write failure, if a commit failed: no more work should start."""
        if self.failure is not None:
            raise self.failure

    def _schedule(self, delay: float = 0.0) -> None:
        if not self.scheduled:
            self.scheduled = True
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: flush right away
                self.flush()
                return
            if delay:
                loop.call_later(delay, self.flush)
            else:
                loop.call_soon(self.flush)

    def flush(self) -> bool:
        """Commit what is buffered; False when it could not be (it stays buffered)."""
        self.scheduled = False
        if not self.rows and not self.pending_cache or self.failure is not None:
            return self.failure is None
        cache_rows = [{"key": c["key"], "kind": c["kind"], "model": c["model"],
                       "response": dumps(c["value"]), "created_at": now()}
                      for c in self.pending_cache.values()]
        try:
            self.store.save_results(self.rows, cache_rows)
        except Exception as exc:  # never lost: lock contention retries, anything else stops the run
            if is_locked(exc):
                self._schedule(self.RETRY_S)
            else:
                self.failure = storage_error(self.store.path, exc)
            return False
        self.rows, self.pending_cache = [], {}
        return True

    def close(self, attempts: int = 20) -> None:
        """The last commit, retried through lock contention; a failure stays in `failure`."""
        for _ in range(attempts):
            if self.flush() or self.failure is not None:
                return
            time.sleep(self.RETRY_S)
        if self.rows or self.pending_cache:
            self.failure = StorageError(f"{self.store.path} stayed locked by other processes; "
                                        f"{len(self.rows)} results could not be saved")

    def beat(self, run_ids: list[int]) -> None:
        """Heartbeat of the runs this process owns (a locked database just skips a beat)."""
        try:
            self.store.heartbeat("runs", run_ids)
        except Exception as exc:
            if not is_locked(exc) and self.failure is None:
                self.failure = storage_error(self.store.path, exc)


@dataclass
class RunPlan:
    run_id: int
    name: str
    project_id: int
    prompt: PromptVersion
    signature: Signature | None
    model: ModelConfig
    cases: list[Case]
    repeat: int
    metrics: tuple[Metric, ...]
    params: dict
    concurrency: Concurrency = 8
    use_cache: bool = True
    done_before: int = 0  # results it held when this process took it up
    demo_pool: tuple[Case, ...] = ()  # the cases the prompt's demo selector picks from (pending_jobs)
    demo_vectors: dict[str, list[float]] | None = None  # its texts' embeddings (embed_demo_texts)
    decoding: Decoding = Decoding()  # how its replies are constrained (`call_params`)

    @property
    def label(self) -> str:
        return f"{self.prompt.ref} × {self.model.alias or self.model.model}"


def metric_context(settings: Settings, base_dir: Path | None = None) -> MetricContext:
    """What metrics get from the settings: model aliases, judge/embedding defaults, the base folder."""
    return MetricContext(resolve_model=settings.resolve_model,
                         default_models={"judge": settings.defaults.judge_model,
                                         "embedding": settings.defaults.embedding_model},
                         base_dir=(base_dir or Path.cwd()).resolve())


def build_metrics(specs: list[Any] | None, where: str = "--metric",
                  context: MetricContext | None = None) -> tuple[Metric, ...]:
    """Metric specs → metrics, each with a distinct name (a clear error for unknown ones).

    `context` (see `metric_context`) is how metrics that call a model resolve
    it and custom `module:function` metrics find their module; without one,
    model aliases are those of a config-less install and modules come from the cwd.
    """
    metrics: list[Metric] = []
    context = context or MetricContext(base_dir=Path.cwd())
    for spec in specs or DEFAULT_METRICS:
        try:
            metric = get_metric(spec, context)
        except MetricError as exc:
            raise UsageError(f"{where}: {exc}") from None
        names = {m.name for m in metrics}
        if metric.name in names:
            suffix = 2
            while f"{metric.name}_{suffix}" in names:
                suffix += 1
            metric.name = f"{metric.name}_{suffix}"
        metrics.append(metric)
    return tuple(metrics)


def auto_run_name(store: Store, project_id: int, prompt: PromptVersion, model: ModelConfig) -> str:
    """NAME@VERSION-MODEL, then -2, -3… for the next runs of the same pair: short enough to type."""
    return store.free_name("runs", project_id, f"{prompt.name}@{prompt.version}-{_word(model.alias or model.model)}")


def matrix_run_name(name: str, prompt: PromptVersion, model: ModelConfig, *, by_prompt: bool,
                    by_model: bool) -> str:
    """A given --name for one run of a matrix: the name, then what sets this run apart."""
    return "-".join([name, *([f"{prompt.name}@{prompt.version}"] if by_prompt else []),
                     *([_word(model.alias or model.model)] if by_model else [])])


def _word(text: str) -> str:
    """A model string as one shell word (openai/gpt-4o → openai-gpt-4o)."""
    return re.sub(r"[^\w.-]+", "-", text)


def check_code_execution(store: Store, project_id: int, project: str, metrics: tuple[Metric, ...],
                         allowed: bool = False) -> None:
    """Metrics that run model-written code (python_tests) need explicit consent: the project's,
    or `allowed` (an experiment file's allow_code_execution, for that file's runs only)."""
    runs_code = [m.name for m in metrics if getattr(m, "runs_code", False)]
    if runs_code and not allowed and not store.project_settings(project_id).get("allow_code_execution"):
        raise UsageError(
            f"metric '{runs_code[0]}' runs model-written code, which project '{project}' does not allow; "
            f"allow it with `promptlab project add {project} --allow-code-execution` "
            f"(or `allow_code_execution: true` in the experiment file)")


def plan_run(store: Store, project_id: int, prompt: PromptVersion, model: ModelConfig,
             cases: list[Case], *, name: str | None, metric_specs: list[Any] | None,
             concurrency: Concurrency, repeat: int = 1, params: dict | None = None,
             optimization_id: int | None = None, where: str = "eval",
             context: MetricContext | None = None, use_cache: bool = True) -> RunPlan:
    """Validate everything a run needs, then create its row (nothing is written on bad input).

    `context`: see `build_metrics` (`metric_context(settings, base_dir)`).
    """
    signature = store.prompt_signature(prompt)
    check_prompt(prompt.content, signature, f"prompt '{prompt.ref}'")
    if not cases:
        raise UsageError(f"{where}: no cases selected; add some with `promptlab case import`")
    if signature:
        check_cases(cases, signature, where)
    metrics = build_metrics(metric_specs, context=context)
    check_code_execution(store, project_id, prompt.project, metrics,
                         allowed=context is not None and context.allow_code_execution)
    if repeat < 1:
        raise UsageError(f"{where}: --repeat must be at least 1")
    check_credentials(model)  # a missing key is bad input, found before any call
    check_capabilities(model, prompt.content, signature)
    decoded = run_decoding(prompt, signature, model)  # a model that cannot constrain it: bad input too
    name = name or auto_run_name(store, project_id, prompt, model)
    params = {**prompt.content.params, **(params or {})}
    check_params(params, where)
    call_params(prompt, params, decoded)  # a clash between its params and its decoding: bad input
    run_id = store.create_run(
        project_id, name, prompt, model=model.alias or model.model, model_name=model.model,
        api_base=model.api_base, params=params, metrics=[m.spec for m in metrics],
        case_ids=[c.id for c in cases], repeat=repeat, concurrency=concurrency,
        optimization_id=optimization_id, use_cache=int(use_cache), active_s=0.0)
    return RunPlan(run_id, name, project_id, prompt, signature, model, cases, repeat, metrics, params,
                   concurrency, use_cache, decoding=decoded)


def run_decoding(prompt: PromptVersion, signature: Signature | None, model: ModelConfig) -> Decoding:
    """How a run of `prompt` on `model` constrains its replies (UsageError when it cannot and the
    version allows no fallback); the model's mechanism is looked up only for a structured version."""
    mode = structured_mode(model) if prompt.content.structured else None
    return decoding(prompt.content, signature, mode, model=model.alias or model.model, ref=prompt.ref)


def call_params(prompt: PromptVersion, params: dict, decoded: Decoding) -> dict:
    """What each request of a run sends beside its messages: the run's params, the version's tools
    and its structured decoding (in the model's mechanism)."""
    return with_decoding(request_params(prompt.content, params), decoded, f"prompt '{prompt.ref}'")


def resume_plan(store: Store, settings: Settings, project_id: int, name: str) -> RunPlan:
    run = store.run(project_id, name)
    if run.status == "completed":
        raise UsageError(f"run '{name}' is already completed; nothing to resume")
    prompt = store.prompt_by_id(run.prompt_id)
    signature = store.prompt_signature(prompt)
    check_prompt(prompt.content, signature, f"prompt '{prompt.ref}'")  # stored before the checks existed?
    model = settings.resolve_model(run.model)
    if model.model != run.model_name or (model.api_base or None) != (run.api_base or None):
        # the alias changed since (or the database came from elsewhere): call what the run called,
        # if promptlab.toml sends keys there
        model = ModelConfig(alias=run.model, model=run.model_name, api_base=run.api_base)
        settings.check_destination(model, f"run '{name}'")
    check_params(run.params, f"run '{name}'")
    by_id = store.cases_by_id(project_id, run.case_ids)
    cases = [by_id[i] for i in run.case_ids if i in by_id]
    metrics = build_metrics(run.metrics, f"run '{name}': metrics", context=metric_context(settings))
    check_code_execution(store, project_id, prompt.project, metrics)
    check_credentials(model)
    check_capabilities(model, prompt.content, signature)
    decoded = run_decoding(prompt, signature, model)
    store.claim("runs", run.id, f"run '{name}'", error=None)
    store.drop_results(run.id, error_kinds=PROVIDER_FAILURES)  # asked again: the provider, not the prompt, failed
    return RunPlan(run.id, name, project_id, prompt, signature, model, cases, run.repeat,
                   metrics, run.params, run.concurrency or 1, run.use_cache is None or bool(run.use_cache),
                   decoding=decoded)


def pending_jobs(store: Store, plans: list[RunPlan]) -> tuple[Iterator[Job], tuple[RunTotal, ...]]:
    """Jobs for every (run, case, repeat) without a result yet, and how many each run has."""
    todo: list[tuple[RunPlan, Case, int]] = []
    totals: list[RunTotal] = []
    for plan in plans:
        selector = plan.prompt.content.demo_selector
        if selector is not None:
            plan.demo_pool = tuple(store.cases_by_id(plan.project_id, selector.pool).values())
        done = store.done_keys(plan.run_id)
        plan.done_before = len(done)
        mine = [(plan, case, r) for r in range(plan.repeat) for case in plan.cases if (case.id, r) not in done]
        todo.extend(mine)
        totals.append(RunTotal(plan.run_id, plan.label, len(mine), name=plan.name, model=plan.model.model))
    return (job(plan, case, r) for plan, case, r in todo), tuple(totals)


def job(plan: RunPlan, case: Case, repeat: int) -> Job:
    """One (case, repeat) of a run, its messages rendered; a template that fails for this input
    makes a job that is only its error (kind `render`)."""
    try:
        messages, error = render_messages(plan.prompt.content, plan.signature, case.inputs, case_id=case.id,
                                          resolve=lambda ids: plan.demo_pool, vectors=plan.demo_vectors), None
    except RenderError as exc:
        messages, error = [], str(exc)
    return Job(plan.run_id, case, repeat, messages, plan.model, call_params(plan.prompt, plan.params, plan.decoding),
               plan.signature, plan.metrics, render_error=error)


async def embed_demo_texts(gateway: Gateway, plans: list[RunPlan], settings: Settings) -> None:
    """The vectors a demo selector that compares embeddings needs: of its pool's inputs and the
    run's, one cached request per text (a text embedded once is never sent again)."""
    for plan in plans:
        selector = plan.prompt.content.demo_selector
        if selector is None or selector.similarity != "embedding":
            continue
        texts = sorted({demo_text(c.inputs, plan.signature) for c in (*plan.demo_pool, *plan.cases)})
        model = settings.resolve_model(selector.embedding_model)
        try:
            vectors = await asyncio.gather(*(gateway.embed(model, [text]) for text in texts))
        except CallError as exc:
            raise ProviderError(f"demo selector of {plan.prompt.ref}: embedding model "
                                f"{selector.embedding_model}: {exc.kind}: {exc}") from None
        plan.demo_vectors = {text: vector[0] for text, vector in zip(texts, vectors)}


def embed_texts(store: Store, settings: Settings, model_name: str, texts: list[str]) -> list[list[float]]:
    """Embeddings outside a run (`prompt try`, `load_prompt` with an embedding demo selector),
    through the store's response cache: the texts a run embedded cost no request."""
    model = settings.resolve_model(model_name)
    gateway = make_gateway(store, settings)

    async def embed() -> list[list[float]]:
        try:
            return await gateway.embed(model, texts)
        finally:
            await gateway.aclose()

    try:
        vectors = asyncio.run(embed())
    except CallError as exc:
        raise ProviderError(f"embedding model {model_name}: {exc.kind}: {exc}") from None
    gateway.cache.close()
    gateway.cache.check()
    return vectors


async def execute(store: Store, gateway: Gateway, plans: list[RunPlan], progress: Progress, *,
                  concurrency: Concurrency, use_cache: bool, settings: Settings) -> Outcome:
    """Evaluate what the runs still need, beating their heartbeat meanwhile.

    A run keeps the cache choice it was made with (`--no-cache` holds on resume too). With
    concurrency "auto" the gateway's AIMD limits decide how many of AUTO_CEILING workers call.
    """
    if concurrency == AUTO:
        gateway.adaptive, concurrency = True, AUTO_CEILING
    for plan in plans:  # per call: what the run records (batch runs go through batch.execute)
        if store.run_by_id(plan.run_id).mode is None:
            store.update_run(plan.run_id, mode="call")
    sink = gateway.cache if isinstance(gateway.cache, StoreSink) else StoreSink(store)
    bind_metrics(plans, gateway)
    jobs, runs = pending_jobs(store, plans)
    await embed_demo_texts(gateway, plans, settings)
    run_ids = [p.run_id for p in plans]

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            sink.beat(run_ids)

    beating = asyncio.create_task(heartbeat())
    try:
        return await evaluate(jobs, gateway, sink, progress, runs=runs, concurrency=concurrency,
                              use_cache=use_cache and all(p.use_cache for p in plans),
                              failure_threshold=settings.defaults.failure_threshold,
                              failure_min_items=settings.defaults.failure_min_items)
    finally:
        beating.cancel()
        await gateway.aclose()


def bind_metrics(plans: list[RunPlan], gateway: Gateway) -> None:
    """Give metrics that call a model (judge, embedding) the gateway the runner uses.

    Their calls then share its cache (in the store), retries and rate limits.
    """
    for plan in plans:
        for metric in plan.metrics:
            bind = getattr(metric, "bind", None)
            if callable(bind):
                bind(gateway)


def make_gateway(store: Store, settings: Settings) -> Gateway:
    return Gateway(cache=StoreSink(store), retries=settings.defaults.retries,
                   timeout=settings.defaults.timeout, max_reply_bytes=settings.defaults.max_reply_bytes)


def finish(store: Store, plans: list[RunPlan], outcome: Outcome | None, *, status: str | None = None,
           elapsed_s: float | None = None, reason: str | None = None, usage: Ledger | None = None) -> list[dict]:
    """Write each run's status, reason and summary; returns the summaries. `usage`: what this
    session's gateway spent per run and role (the judge's and embeddings' calls are added to the
    run's role usage; the task's come from its results).

    Without an explicit status a run is `completed` only when it holds a result
    for every planned item, `failed` when it was stopped or every item failed
    (the reason says why), else `interrupted` (resumable). A run with batches still
    at the provider stays `submitted` (unless it failed), free for any process to wait for.
    """
    summaries = []
    for plan in plans:
        state = outcome.states.get(plan.run_id) if outcome else None
        before = store.run_by_id(plan.run_id)
        active_s = (before.active_s or 0.0) + (elapsed_s or 0.0)
        session = by_run(usage or {}, plan.run_id, tuple(r for r in ROLES if r != "task"))
        if session:
            stored = {role: RoleUsage.of(u) for role, u in (before.role_usage or {}).items()}
            store.update_run(plan.run_id, role_usage={role: u.as_json()
                                                      for role, u in merged(stored, session).items()})
        summary = summarize_run(store, plan, active_s or None, session_s=elapsed_s)
        run_status, error, owner = status, reason, {}
        waiting = store.db["batches"].count_where("run_id = ? and done = 0", [plan.run_id])
        if waiting and run_status in (None, "interrupted"):
            run_status, owner = "submitted", {"owner_pid": None}
            error = (f"{waiting} batch{'es' if waiting > 1 else ''} at the provider; wait for "
                     f"{'them' if waiting > 1 else 'it'} with `{command(store, plan.project_id, 'runs', 'wait', plan.name)}`")
        if run_status is None:
            if state and state.stopped:  # the line names the cause, not only the count
                run_status, error = "failed", f"{state.stopped}; the first: {first_error(store, plan.run_id)}"
            elif summary["n"] < summary["expected"]:
                run_status, error = "interrupted", f"{summary['n']} of {summary['expected']} results stored"
            elif summary["n"] and summary["errors"] == summary["n"]:
                run_status, error = "failed", f"every item failed; the first: {first_error(store, plan.run_id)}"
            else:
                run_status = "completed"
        store.update_run(plan.run_id, status=run_status, error=error, active_s=round(active_s, 3),
                         summary=summary, n_results=summary["n"], n_errors=summary["errors"],
                         prompt_tokens=summary["tokens"]["prompt"],
                         completion_tokens=summary["tokens"]["completion"], cost=summary["cost"],
                         latency_p50_ms=summary["latency_ms"]["p50"],
                         latency_p95_ms=summary["latency_ms"]["p95"], finished_at=now(), **owner)
        summaries.append(run_json(store.run_by_id(plan.run_id), plan.prompt))
    return summaries


def first_error(store: Store, run_id: int) -> str | None:
    row = store.db.execute("select error_kind, error from results where run_id = ? and error_kind is not null "
                           "order by id limit 1", [run_id]).fetchone()
    return None if row is None else f"{row[0]}: {row[1]}"


def demo_overlap(prompt: PromptVersion, cases: list[Case]) -> str | None:
    """A warning when some evaluated cases are the prompt's own demos (the model sees their answers)."""
    demos = {dumps(d.inputs) for d in prompt.content.demos}
    ids = [c.id for c in cases if dumps(c.inputs) in demos]
    if not ids:
        return None
    shown = ", ".join(map(str, ids[:5])) + (" …" if len(ids) > 5 else "")
    return (f"{len(ids)} of the {len(cases)} cases are demos of {prompt.ref} (case ids {shown}): it is shown "
            f"their answers, so its score on them means little; evaluate on another split")


def summarize_run(store: Store, plan: RunPlan, elapsed_s: float | None = None,
                  session_s: float | None = None) -> dict:
    """The run's numbers (see `evaluation.figures`). `elapsed_s`: its active time over every session;
    calls/s is measured over this process's session (`session_s`) alone, since a killed
    session's time is unknown."""
    results = store.results(plan.run_id)
    scored = [r for r in results if r.error_kind is None]
    live = [r for r in results if not r.cached and r.error_kind is None]
    latencies = np.array([r.latency_ms for r in live]) if live else np.array([0.0])
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(r.completion_tokens for r in results)
    run = store.run_by_id(plan.run_id)
    costs = cost_figures(results, {role: RoleUsage.of(u) for role, u in (run.role_usage or {}).items()})
    # what answering one label every time would score, and whether the outputs did that
    baseline = constant_baseline(plan.signature, (c.expected for c in plan.cases))
    collapsed = collapse(plan.signature, (r.parsed for r in scored))
    return {
        "n": len(results), "expected": len(plan.cases) * plan.repeat,
        **error_figures(results),
        "pass_rate": (sum(r.passed for r in scored) / len(results)) if results else None,
        "scored": {"n": len(scored),
                   "pass_rate": (sum(r.passed for r in scored) / len(scored)) if scored else None},
        "metrics": {metric.name: metric_figures(metric, results) for metric in plan.metrics},
        "fields": field_accuracy(plan.signature, plan.cases, results),
        "repeats": repeat_figures(results),
        "lenient": lenient_figures(results),
        "mode": run.mode,
        # replies that did not fit the signature (scored, not errors), and how decoding was constrained
        "parse_failures": sum(1 for r in scored if r.parse_error),
        "decoding": plan.decoding.as_json(),
        "tokens": {"prompt": prompt_tokens, "completion": completion_tokens,
                   "per_call": round((prompt_tokens + completion_tokens) / len(results), 1) if results else 0},
        **costs,
        "cached": sum(1 for r in results if r.cached),
        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 1),
                       "p95": round(float(np.percentile(latencies, 95)), 1)},
        "elapsed_s": round(elapsed_s, 3) if elapsed_s else None,
        "calls_per_s": (round((len(results) - plan.done_before) / session_s, 2)
                        if session_s and len(results) > plan.done_before else None),
        "constant_baseline": baseline and baseline.as_json(),
        "collapse": collapsed and collapsed.as_json(),
        "warnings": [w for w in (collapsed and collapsed.warning(), demo_overlap(plan.prompt, plan.cases)) if w],
    }


def run_json(run: Run, prompt: PromptVersion) -> dict:
    """The machine-readable shape of one run (as `--json` prints it). `scores`, `intervals` and
    `pass_rate` are the headline (every item, errors 0); `scored` the figures over the scored
    items only. A run summarised before the headline counted errors has no `scored` key."""
    summary = run.summary or {}
    metrics = summary.get("metrics", {})
    return {"name": run.name, "prompt": prompt.name, "version": prompt.version,
            "model": run.model, "status": run.status, "mode": run.mode or summary.get("mode"),
            "n": summary.get("n", 0), "errors": summary.get("errors", 0),
            "error_kinds": summary.get("error_kinds") or {}, "top_errors": summary.get("top_errors") or [],
            # runs summarised before decoding was reported print as they always did
            **{k: summary[k] for k in ("parse_failures", "decoding") if k in summary},
            "scores": {k: v.get("mean") for k, v in metrics.items()},
            "intervals": {k: [v.get("ci_low"), v.get("ci_high")] for k, v in metrics.items()},
            "pass_rate": summary.get("pass_rate"),
            "scored": summary.get("scored") and {
                **summary["scored"], "scores": {k: (v.get("scored") or {}).get("mean") for k, v in metrics.items()}},
            "fields": summary.get("fields"), "repeats": summary.get("repeats"),
            "lenient": summary.get("lenient"), "tokens": summary.get("tokens"),
            "cost": summary.get("cost"), "by_role": summary.get("by_role"), "cached": summary.get("cached"),
            "provider_calls": summary.get("provider_calls"),
            "calls_per_s": summary.get("calls_per_s"), "latency_ms": summary.get("latency_ms"),
            "constant_baseline": summary.get("constant_baseline"), "collapse": summary.get("collapse"),
            "warnings": summary.get("warnings") or [], "error": run.error}
