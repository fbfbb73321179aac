"""Plan runs: validate a prompt, its cases and metrics, create the run's row, and turn what
it still lacks into jobs (messages rendered) for an executor."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


from promptlab.config import Concurrency, ModelConfig, Settings, check_params
from promptlab.errors import UsageError
from promptlab.providers.errors import PROVIDER_FAILURES
from promptlab.providers.gateway import Gateway, check_capabilities, check_credentials, structured_mode
from promptlab.models import Case, PromptVersion, Signature
from promptlab.prompting.structured import Decoding, decoding, with_decoding
from promptlab.prompting.tools import request_params
from promptlab.prompting.render import RenderError, check_cases, check_prompt, render_messages
from promptlab.progress import RunTotal
from promptlab.evaluation.runner import Job
from promptlab.scorers import Metric, MetricContext, MetricError, get_metric
from promptlab.store import Store

DEFAULT_METRICS = ("exact_match",)


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


def bind_metrics(plans: list[RunPlan], gateway: Gateway) -> None:
    """Give metrics that call a model (judge, embedding) the gateway the runner uses.

    Their calls then share its cache (in the store), retries and rate limits.
    """
    for plan in plans:
        for metric in plan.metrics:
            bind = getattr(metric, "bind", None)
            if callable(bind):
                bind(gateway)
