"""`promptlab suggest RUN`: a run's failures → an analysis, concrete edits, the categories first.

The counting is the model-free part (`failures.analyse`: confused label pairs, per-label stats,
parse failures, errors, per-tag pass rates). A model (the run's own unless `model` names one)
reads the counts and a sample of failures and proposes edits as whole new instructions; its
reply is validated and re-asked, and when no attempt is usable the suggestion says so and keeps
the rule-based edits (state the labels, show examples of the confused pair). `apply` turns one
edit into a candidate version, evaluates it on the run's model and cases, and compares the two
with a paired bootstrap; nothing is promoted unless asked.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from pydantic import BaseModel, Field, field_validator

from promptlab.prompting.diffing import diff_text
from promptlab.errors import NotFoundError, UsageError
from promptlab.models import Case, PromptContent, PromptVersion, Signature
from promptlab.optimizers import operators
from promptlab.services.failures import Item, Tally

if TYPE_CHECKING:
    from promptlab.config import Settings
    from promptlab.progress import Progress
    from promptlab.store.records import Run
    from promptlab.store import Store

FAILURES_SHOWN = 12  # failures quoted to the model
PAGE = 500  # results read (with their cases) at a time
DEMOS_PER_LABEL = 2  # examples of each confused label in the rule-based demo edit


class _ModelEdit(BaseModel):
    title: str = Field(min_length=3, max_length=120)
    rationale: str = Field(min_length=3, max_length=1000)
    instruction: str = Field(min_length=10, max_length=4000)


class _ModelReply(BaseModel):
    analysis: str = Field(min_length=3, max_length=2000)
    patterns: list[str] = Field(default_factory=list, max_length=10)
    edits: list[_ModelEdit] = Field(min_length=1, max_length=5)

    @field_validator("edits")
    @classmethod
    def _new(cls, edits: list[_ModelEdit], info: Any) -> list[_ModelEdit]:
        current = (info.context or {}).get("current", "")
        if all(" ".join(e.instruction.split()) == " ".join(current.split()) for e in edits):
            raise ValueError("every edit repeats the current instruction; propose a changed one")
        return edits


_EXAMPLE = ('{"analysis": "billing questions are read as refunds when they mention money back", '
            '"patterns": ["money words trigger refund"], "edits": [{"title": "Separate billing from refunds", '
            '"rationale": "the instruction never says how the two differ", "instruction": "Classify the '
            'banking question. A question about a charge on the bill is billing, even when it mentions '
            'money back; a request to return a payment is refund."}]}')


@dataclass(frozen=True)
class Edit:
    number: int
    title: str
    rationale: str
    source: str               # "model" or "rule"
    content: PromptContent
    diff: str

    def json(self) -> dict[str, Any]:
        return {"number": self.number, "title": self.title, "rationale": self.rationale,
                "source": self.source, "diff": self.diff}


@dataclass
class Suggestions:
    run: str
    version: str
    model: str
    analysis: dict[str, Any]
    model_analysis: str | None = None
    model_patterns: list[str] = field(default_factory=list)
    model_note: str | None = None       # why the model's reply could not be used
    edits: list[Edit] = field(default_factory=list)
    applied: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        return {"run": self.run, "version": self.version, "model": self.model, **self.analysis,
                "model_analysis": self.model_analysis, "model_patterns": self.model_patterns,
                "model_note": self.model_note, "edits": [e.json() for e in self.edits],
                "applied": self.applied}


def suggest(store: Store, settings: Settings, project_id: int, run_name: str, *, model: str | None = None,
            apply: int | None = None, promote: bool = False, progress: Progress) -> Suggestions:
    run = store.find_run(project_id, run_name)
    if run is None:
        raise NotFoundError(f"no run named '{run_name}' in this project; see `promptlab runs list`")
    version = store.prompt_by_id(run.prompt_id)
    signature = store.prompt_signature(version)
    tally = Tally(signature, sample=FAILURES_SHOWN)
    for item in _items(store, project_id, run, signature):
        tally.add(item)
    if not tally.n:
        raise UsageError(f"suggest: run '{run.name}' has no results yet; finish it with "
                         f"`promptlab eval --resume {run.name}`")
    proposer = settings.resolve_model(model or run.model_name or run.model)
    out = Suggestions(run.name, version.ref, proposer.alias or proposer.model, tally.analysis())
    proposed = asyncio.run(_ask_model(store, settings, proposer, version, signature, out, tally.sample,
                                      tally.failures)) if tally.failures else []
    edits = [(e.title, e.rationale, "model", operators.with_system(version.content, e.instruction))
             for e in proposed]
    out.edits = _numbered(version, [*edits, *_rule_edits(store, project_id, run, version, signature,
                                                          out.analysis)])
    if apply is not None:
        out.applied = _apply(store, settings, project_id, run, version, out.edits, apply, promote, progress)
    return out


def _items(store: Store, project_id: int, run: Run, signature: Signature | None) -> Iterator[Item]:
    """The run's results with their cases, read a page at a time (a run of any size in bounded memory)."""
    output = operators.enum_output(signature)
    results = store.iter_results(run.id)
    while page := list(itertools.islice(results, PAGE)):
        cases = store.cases_by_id(project_id, (r.case_id for r in page))
        yield from (Item(case=cases[r.case_id], passed=r.passed,
                         predicted=(r.parsed or {}).get(output.name) if output is not None else None,
                         parse_error=r.parse_error, error_kind=r.error_kind, error=r.error, output=r.output or "")
                    for r in page if r.case_id in cases)


async def _ask_model(store: Store, settings: Settings, proposer: Any, version: PromptVersion,
                     signature: Signature | None, out: Suggestions, failures: list[tuple[Case, str]],
                     n_failures: int) -> list[_ModelEdit]:
    """The model's reading of the failures (into `out`) and its edits; none when its reply is unusable."""
    from promptlab.providers.ask import InvalidReply, ask_json
    from promptlab.evaluation.sink import make_gateway

    current = version.content.system or (signature.instruction if signature else "")
    ask = (f"{operators.describe_task(signature)}\nCurrent instruction: {current or '(none)'}\n"
           f"What went wrong, counted:\n{_counts_text(out.analysis)}\n"
           f"Failures ({len(failures)} of {n_failures}):\n"
           f"{operators.failure_lines(failures)}\n"
           "Keys: analysis (what the failures have in common), patterns (short phrases), edits (1 to 3, "
           "each with title, rationale and instruction: the whole new instruction).\nReply (JSON):")
    messages = [{"role": "system", "content": operators.PROPOSER_SYSTEM},
                {"role": "user", "content": ask}]
    try:
        answer = await ask_json(make_gateway(store, settings), proposer, messages, _ModelReply, attempts=3,
                                context={"current": current}, example=_EXAMPLE)
    except InvalidReply as exc:
        out.model_note = (f"the reply of {out.model} was not usable ({exc.reason or exc}); the edits below "
                          "are rule-based")
        return []
    reply = answer.value
    out.model_analysis, out.model_patterns = reply.analysis, list(reply.patterns)
    return reply.edits


def _counts_text(analysis: dict[str, Any]) -> str:
    lines = [f"{analysis['failed']} of {analysis['n']} items failed."]
    cls = analysis["classification"]
    if cls:
        lines += [f"- '{c['labels'][0]}' vs '{c['labels'][1]}': {c['count']} confusions" for c in cls["confusions"][:5]]
        lines += [f"- label '{r['label']}': recall {r['recall']:.2f}, precision {r['precision']:.2f}"
                  for r in cls["labels"]]
    lines += [f"- {p}" for p in analysis["patterns"]]
    return "\n".join(lines)


def _rule_edits(store: Store, project_id: int, run: Run, version: PromptVersion, signature: Signature | None,
                analysis: dict[str, Any]) -> list[tuple[str, str, str, PromptContent]]:
    edits = []
    stated = operators.state_format(version.content, signature)
    if stated is not None and (analysis["parse_failures"] or analysis["classification"]):
        edits.append(("State the answer format", "replies that name no label, or more than the label, "
                      "fail; the instruction should say exactly what to answer", "rule", stated))
    cls = analysis["classification"]
    if cls and cls["confusions"] and version.content.demo_selector is None:
        a, b = cls["confusions"][0]["labels"]
        demos = _demos_of(store, project_id, run, signature, cls["field"], (a, b))
        if demos:
            edits.append((f"Show examples of '{a}' and '{b}'",
                          f"the two are confused most ({cls['confusions'][0]['count']} times); labelled "
                          "training examples of each show the model where the line is", "rule",
                          operators.with_demos(version.content, [*version.content.demos, *demos])))
    return edits


def _demos_of(store: Store, project_id: int, run: Run, signature: Signature | None, field_name: str,
              labels: tuple[str, str]) -> list:
    """Training cases of these labels that the run was not scored on (no answer leaks into its cases)."""
    scored = set(run.case_ids)
    picked: dict[str, list] = {label: [] for label in labels}
    for case in store.iter_cases(project_id, split="train"):
        label = str(case.expected.get(field_name))
        if case.id not in scored and label in picked and len(picked[label]) < DEMOS_PER_LABEL:
            picked[label].append(operators.demo_from_case(case, signature))
            if all(len(demos) == DEMOS_PER_LABEL for demos in picked.values()):
                break
    return [d for label in labels for d in picked[label]]


def _numbered(version: PromptVersion, edits: list[tuple[str, str, str, PromptContent]]) -> list[Edit]:
    out, seen = [], {version.content.hash()}
    for title, rationale, source, content in edits:
        if content.hash() in seen:
            continue
        seen.add(content.hash())
        candidate = version.model_copy(update={"content": content})
        out.append(Edit(len(out) + 1, title, rationale, source, content, diff_text(version, candidate)))
    return out


def _apply(store: Store, settings: Settings, project_id: int, run: Run, version: PromptVersion,
           edits: list[Edit], number: int, promote: bool, progress: Progress) -> dict[str, Any]:
    from promptlab.evaluation.plan import metric_context, plan_run
    from promptlab.services.compare import compare_runs
    from promptlab.services.evaluate import EvaluateRequest, evaluate

    if not 1 <= number <= len(edits):
        raise UsageError(f"suggest: --edit {number}: there are {len(edits)} edits (1 to {len(edits)})"
                         if edits else "suggest: no edit to apply")
    edit = edits[number - 1]
    candidate = store.add_prompt(project_id, version.name, edit.content, signature_id=version.signature_id,
                                 parent_id=version.id, made_by=f"suggest:{run.name}", message=edit.title,
                                 candidate=not promote)
    cases = list(store.cases_by_id(project_id, run.case_ids).values())
    model = settings.resolve_model(run.model_name or run.model)
    name = _free_name(store, project_id, f"{run.name}-suggest-{number}")
    with store.db.atomic():
        plan = plan_run(store, project_id, candidate, model, cases, name=name, metric_specs=run.metrics,
                        repeat=run.repeat or 1, concurrency=settings.concurrency(run.concurrency),
                        params=run.params, context=metric_context(settings))
    evaluation = evaluate(store, settings, EvaluateRequest([plan], settings.concurrency(run.concurrency),
                                                           use_cache=True), progress=progress)
    ended = evaluation.runs[0]
    if ended["status"] != "completed":
        raise UsageError(f"suggest: the candidate's run '{name}' {ended['status']}: {ended.get('error')}")
    if promote:
        store.promote_prompt(candidate.id)
    compared = compare_runs(store, project_id, run, store.find_run(project_id, name))
    metric = next(iter(compared["metrics"]), None)
    stats = compared["metrics"].get(metric, {})
    return {"edit": number, "version": candidate.ref, "run": name, "promoted": promote, "metric": metric,
            "base": stats.get("a_mean"), "candidate": stats.get("b_mean"), "delta": stats.get("delta"),
            "ci": [stats.get("ci_low"), stats.get("ci_high")], "p_value": stats.get("p_value"),
            "significant": stats.get("p_value") is not None and stats["p_value"] < 0.05,
            "pairs": compared["pairs"],
            "note": "scored on the run's own cases, which the suggestions were drawn from: confirm on "
                    "held-out cases before trusting the lift"}


def _free_name(store: Store, project_id: int, name: str) -> str:
    n, candidate = 1, name
    while store.find_run(project_id, candidate) is not None:
        n += 1
        candidate = f"{name}-{n}"
    return candidate
