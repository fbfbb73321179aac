"""Declarative experiment files: validate everything first, then set up idempotently.

Nothing is written until the whole file has been checked: its YAML, its
signature, every template against the signature, every model alias, every
metric and every case.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from promptlab.cases.files import read_cases, read_experiment_file, rows_to_cases
from promptlab.config import Concurrency, ModelConfig, Settings, check_params
from promptlab.errors import UsageError
from promptlab.evaluation.plan import RunPlan, build_metrics, metric_context, plan_run, resume_plan
from promptlab.models import Case, Demo, DemoSelector, PromptContent, Signature, check_tools
from promptlab.prompting import images
from promptlab.prompting.structured import decoding
from promptlab.providers.gateway import structured_mode
from promptlab.scorers import MetricContext
from promptlab.prompting.render import check_prompt
from promptlab.store import Store


class SelectorSpec(BaseModel):
    """A prompt entry's `demo_selector`: a `models.DemoSelector` whose pool is named the way an
    experiment file can — a split of the file's cases, `all` of them, or stored case ids (what
    `prompt export` writes) — and becomes case ids once the cases are in the store."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["knn"] = "knn"
    k: int = Field(ge=1, le=64)
    pool: str | list[int] = "train"
    balance: bool = False
    similarity: Literal["lexical", "embedding"] = "lexical"
    embedding_model: str | None = None


class PromptSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    system: str = ""
    template: str
    demos: list[Demo] = Field(default_factory=list)
    demo_selector: SelectorSpec | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    structured: bool = False           # the signature drives the decoder (prompting.structured)
    structured_fallback: bool = False  # a model that cannot: called unconstrained, not refused
    message: str = ""

    @model_validator(mode="after")
    def _tools_and_decoding(self) -> "PromptSpec":
        check_tools(tuple(self.tools), self.tool_choice)
        if self.structured_fallback and not self.structured:
            raise ValueError("structured_fallback is for a structured prompt: add structured: true "
                             "or drop structured_fallback")
        return self

    def content(self, pool: tuple[int, ...] | None = None) -> PromptContent:
        """The version this entry makes; a demo selector needs its `pool` of case ids (without
        one, the content checked at load time: everything but the selector)."""
        selector = None
        if self.demo_selector is not None and pool is not None:
            selector = DemoSelector(**self.demo_selector.model_dump(exclude={"pool"}), pool=pool)
        return PromptContent(system=self.system, template=self.template, demos=tuple(self.demos),
                             demo_selector=selector, params=self.params, tools=tuple(self.tools),
                             tool_choice=self.tool_choice, structured=self.structured,
                             structured_fallback=self.structured_fallback)


# A model an experiment file defines itself: a [models.x] table of promptlab.toml with `name` for its
# alias. Its fields are ModelConfig's own (type, default and bounds), so a bad value is the file's
# field error and the two never drift apart.
InlineModel = create_model("InlineModel", __config__=ConfigDict(extra="forbid"), name=(str, ...),
                           **{field: (info.annotation, info) for field, info in ModelConfig.model_fields.items()
                              if field != "alias"})


class CasesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    format: str | None = None
    split: str | None = None


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    concurrency: Concurrency | None = None  # a number, or "auto" (AIMD on rate limits)
    repeat: int = Field(default=1, ge=1)
    cache: bool = True
    split: str | None = None  # evaluate only the cases of this split
    tags: list[str] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1)  # at most this many of them (the first, in file order)
    # call: a request per case; batch: the provider's Batch API; auto: batch from [batch] auto_threshold items
    mode: Literal["call", "batch", "auto"] = "call"


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str
    description: str | None = None
    signature: Signature
    prompts: list[PromptSpec] = Field(min_length=1)
    models: list[str | InlineModel] = Field(default_factory=list)
    cases: CasesFile | list[dict[str, Any]]
    metrics: list[str | dict[str, Any]] = Field(default_factory=lambda: ["exact_match"])
    eval: EvalSpec = EvalSpec()
    gates: dict[str, Any] = Field(default_factory=dict)
    optimize: dict[str, Any] | None = None
    # Let metrics run model-written code (python_tests) in this file's runs; never saved on the
    # project (that takes `promptlab project add P --allow-code-execution`).
    allow_code_execution: bool = False

    @field_validator("prompts")
    @classmethod
    def _unique_prompt_names(cls, prompts: list[PromptSpec]) -> list[PromptSpec]:
        names = [p.name for p in prompts]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"prompt name '{duplicate}' is used twice")
        return prompts


class Experiment:
    """A checked experiment file, ready to be set up in a store."""

    def __init__(self, path: Path, spec: ExperimentSpec, models: list[ModelConfig],
                 cases: list[Case], context: MetricContext | None = None):
        self.path, self.spec, self.models, self.cases = path, spec, models, cases
        # Metrics resolve judge/embedding models with the settings and find custom
        # `module:function` metrics in the experiment file's folder.
        self.context = context or MetricContext(base_dir=path.parent.resolve())

    @property
    def eval_cases(self) -> list[Case]:
        """The cases the runs evaluate: all of them, or those of eval.split / eval.tags (eval.limit at most)."""
        split, tags = self.spec.eval.split, set(self.spec.eval.tags)
        chosen = [c for c in self.cases if (not split or c.split == split) and tags <= set(c.tags)]
        return chosen[:self.spec.eval.limit]

    def content(self, store: Store, project_id: int, prompt: PromptSpec) -> PromptContent:
        """The version a prompt entry makes in this project (its cases already stored): a demo
        selector's pool named by split becomes the ids of those cases."""
        selector = prompt.demo_selector
        if selector is None:
            return prompt.content()
        where = f"{self.path}: prompts '{prompt.name}': demo_selector.pool"
        if isinstance(selector.pool, list):
            found = store.cases_by_id(project_id, selector.pool)
            missing = [i for i in selector.pool if i not in found]
            if missing:
                raise UsageError(f"{where}: case {missing[0]} is not in project '{self.spec.project}'; "
                                 f"name a split of this file's cases instead (e.g. pool: train)")
            return prompt.content(tuple(selector.pool))
        chosen = [c for c in self.cases if selector.pool == "all" or c.split == selector.pool]
        return prompt.content(tuple(c.id for c in store.cases_by_hash(project_id, [c.hash() for c in chosen])))


def load_experiment(path: Path, settings: Settings, overrides: dict[str, Any] | None = None) -> Experiment:
    """Read and check an experiment file; `overrides` (command-line flags: `models`, `eval.*` keys)
    replace what the file says and are checked like it."""
    data = read_experiment_file(path)
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with project, signature, prompts, cases")
    for key, value in (overrides or {}).items():
        if key != "eval" or data.get("eval") is None:
            data[key] = value
        elif isinstance(data["eval"], dict):  # else the file's own bad value is reported below
            data["eval"] = {**data["eval"], **value}
    try:
        spec = ExperimentSpec(**data)
    except ValidationError as exc:
        # a model or cases entry that is a mapping fails the `str` branch of its union as well:
        # that error only says it is not a name, so the mapping's own error is the one to show
        errors = exc.errors()
        err = next((e for e in errors if "str" not in map(str, e["loc"])), errors[0])
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("str", "InlineModel",
                                                                              "CasesFile", "list")))
        raise UsageError(f"{path}: field '{loc}': {err['msg']}; fix that field") from None
    cases = _cases(spec, path)
    for i, prompt in enumerate(spec.prompts):
        check_params(prompt.params, f"{path}: prompts[{i}] '{prompt.name}'")
        prompt.demos = _demo_images(prompt.demos, spec.signature, path, f"prompts[{i}] '{prompt.name}'")
        check_prompt(prompt.content(), spec.signature, f"{path}: prompts[{i}] '{prompt.name}'")
        if prompt.demo_selector is not None and prompt.demos:
            raise UsageError(f"{path}: prompts[{i}] '{prompt.name}': fixed demos or a demo_selector, "
                             f"not both; drop one")
        if prompt.demo_selector is not None:
            _check_selector(prompt.demo_selector, cases, settings, f"{path}: prompts[{i}].demo_selector")
    models = [_model(m, settings, f"{path}: models[{i}]")
              for i, m in enumerate(spec.models or [settings.defaults.model])]
    for i, prompt in enumerate(spec.prompts):  # a model that cannot decode to the schema: before any call
        if prompt.structured:
            for model in models:
                decoding(prompt.content(), spec.signature, structured_mode(model),
                         model=model.alias or model.model, ref=f"{path}: prompts[{i}] '{prompt.name}'")
    context = replace(metric_context(settings, path.parent), allow_code_execution=spec.allow_code_execution)
    build_metrics(spec.metrics, f"{path}: metrics", context)
    experiment = Experiment(path, spec, models, cases, context)
    if not experiment.eval_cases:
        splits = sorted({c.split or "none" for c in experiment.cases})
        raise UsageError(f"{path}: no cases to evaluate; add cases (or loosen eval.split / eval.tags; "
                         f"splits here: {', '.join(splits) or 'none'})")
    return experiment


def _demo_images(demos: list[Demo], signature: Signature, path: Path, where: str) -> list[Demo]:
    """Demos with their image inputs read (paths relative to the experiment file)."""
    try:
        return [Demo(inputs=images.resolve_inputs(d.inputs, signature.inputs, path.parent), outputs=d.outputs)
                for d in demos]
    except ValueError as exc:
        raise UsageError(f"{path}: {where}: demo {exc}") from None


def _check_selector(selector: SelectorSpec, cases: list[Case], settings: Settings, where: str) -> None:
    """What can be checked before the store: its settings, the embedding model, a pool split that has cases."""
    try:
        DemoSelector(**selector.model_dump(exclude={"pool"}), pool=(0,))
    except ValidationError as exc:
        raise UsageError(f"{where}: {exc.errors()[0]['msg'].removeprefix('Value error, demo_selector: ')}") from None
    if selector.embedding_model:
        try:
            settings.resolve_model(selector.embedding_model)
        except UsageError as exc:
            raise UsageError(f"{where}.embedding_model: {exc}") from None
    if isinstance(selector.pool, str) and selector.pool != "all" \
            and not any(c.split == selector.pool for c in cases):
        splits = sorted({c.split for c in cases if c.split})
        raise UsageError(f"{where}.pool: no case of split '{selector.pool}' in this file (splits: "
                         f"{', '.join(splits) or 'none'}); name one of them, or `all`")
    if isinstance(selector.pool, list) and not selector.pool:
        raise UsageError(f"{where}.pool: no case ids; name a split of this file's cases (e.g. pool: train)")


def _model(entry: str | InlineModel, settings: Settings, where: str) -> ModelConfig:
    """A model the file names: an alias of promptlab.toml, or one of its own, which may not send a
    key anywhere the user did not configure, nor carry more than sampling parameters."""
    if isinstance(entry, str):
        try:
            return settings.resolve_model(entry)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
    check_params(entry.params, where)
    try:
        model = ModelConfig(alias=entry.name, **entry.model_dump(exclude={"name"}))
    except UsageError as exc:  # an api_base carrying credentials
        raise UsageError(f"{where}: {exc}") from None
    settings.check_destination(model, where)
    return model


def _cases(spec: ExperimentSpec, path: Path) -> list[Case]:
    if isinstance(spec.cases, CasesFile):
        file = Path(spec.cases.file)
        file = file if file.is_absolute() else path.parent / file
        return read_cases(file, spec.cases.format, spec.signature, split=spec.cases.split)
    return rows_to_cases(spec.cases, spec.signature, f"{path}: cases", base_dir=path.parent)


def setup(store: Store, experiment: Experiment, *, concurrency: int,
          settings: Settings | None = None) -> tuple[int, list[RunPlan]]:
    """Upsert project, signature, prompts and cases, and plan one run per prompt × model. With
    `settings`, a prompt × model whose same run (cases, metrics, repeat) was interrupted resumes it."""
    spec = experiment.spec
    with store.db.atomic():
        project_id = store.ensure_project(spec.project, spec.description)
        signature_id = store.upsert_signature(project_id, spec.signature)
        store.add_cases(project_id, experiment.cases, source=str(experiment.path))
        prompts = [store.add_prompt(project_id, p.name, experiment.content(store, project_id, p),
                                    signature_id=signature_id, message=p.message or f"from {experiment.path.name}")
                   for p in spec.prompts]
        cases = store.cases_by_hash(project_id, [c.hash() for c in experiment.eval_cases])
        same = {"case_ids": [c.id for c in cases], "repeat": spec.eval.repeat, "metrics": json.loads(json.dumps(
            [m.spec for m in build_metrics(spec.metrics, str(experiment.path), experiment.context)]))}
        plans = []
        for prompt in prompts:
            for model in experiment.models:
                twin = _interrupted(store, project_id, prompt.id, model.alias or model.model, same) \
                    if settings is not None else None
                plans.append(resume_plan(store, settings, project_id, twin) if twin else plan_run(
                    store, project_id, prompt, model, cases, name=None, metric_specs=spec.metrics,
                    repeat=spec.eval.repeat, concurrency=concurrency, where=str(experiment.path),
                    context=experiment.context))
    return project_id, plans


def _interrupted(store: Store, project_id: int, prompt_id: int, model: str, same: dict) -> str | None:
    """The newest interrupted (or submitted: its batches are waited for, never sent again) run of
    this prompt version on this model over the same cases, metrics and repeat, if any (what
    re-running an experiment file continues)."""
    run = max((r for status in ("interrupted", "submitted")
               if (r := store.latest_run(project_id, prompt_id, model=model, status=status))),
              key=lambda r: r.id, default=None)
    return run.name if run and all(getattr(run, k) == v for k, v in same.items()) else None
