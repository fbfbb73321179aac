"""Candidates scored on cases through the eval runner, each (version, case) paid for once.

- Every evaluation goes through `promptlab.evaluation` (plan_run / PerCall.execute /
  finish): each is a run row with ``optimization_id`` set, named after the
  candidate and its cases, so it is cached, concurrent and resumable. A replay
  of the same search finds those runs (and the response cache) and sends
  nothing that already finished.
- A version's score on a case, once known, is kept on the candidate: no strategy
  pays for it again (the ledger counts distinct version × case evaluations).
- A candidate is never scored on a case it carries as a demo (leave-one-out
  when train and val are the same tiny pool).
- A candidate that samples (`repeats` > 1, set by the strategy) is scored on each
  case that many times, with distinct cached samples; its score on the case is
  their mean. The held-out test takes one sample per case (what its reserve holds).
- A kNN selector comparing embeddings gets its texts embedded first, each one
  request (cached) counted like a case.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from promptlab.errors import ProviderError
from promptlab.evaluation.per_call import PerCall
from promptlab.evaluation.plan import RunPlan, build_metrics, metric_context, plan_run, run_decoding
from promptlab.evaluation.summary import finish
from promptlab.hints import command
from promptlab.providers.errors import PROVIDER_FAILURES, CallError
from promptlab.models import Case, PromptContent, PromptVersion
from promptlab.optimizers.operators import inputs_key
from promptlab.progress import SearchEvaluating
from promptlab.store.records import Result
from promptlab.prompting.render import demo_text

if TYPE_CHECKING:
    from promptlab.config import Settings
    from promptlab.providers.gateway import Gateway
    from promptlab.optimizers.base import Problem, SearchConfig
    from promptlab.optimizers.ledger import Ledger
    from promptlab.progress import Progress, SearchStatus
    from promptlab.store import Store

# error kinds that mean the provider failed (after retries), not that the candidate is bad
# a request the gateway did not send because the call budget was spent
UNSENT = "budget"
RETRIED = PROVIDER_FAILURES | {UNSENT}  # results dropped and evaluated again on resume


@dataclass(frozen=True)
class CaseScore:
    """One version's result on one case, as the search reads it."""

    objective: float
    metrics: dict[str, float]     # metric -> value
    output: str                   # the raw model output (or the error)
    parsed: dict | None = None    # the parsed output fields
    feedback: str = ""            # the metrics' feedback text, if any

    @classmethod
    def of(cls, r: Result, weights: Sequence[tuple[str, float]]) -> CaseScore:
        notes = [str(r.scores[name].detail.get("feedback") or "") if name in r.scores else ""
                 for name, _ in weights]
        return cls(objective=objective_score(r, weights),
                   metrics={name: (0.0 if r.error_kind else float(r.value(name) or 0.0)) for name, _ in weights},
                   output=r.output or (r.error or ""), parsed=r.parsed,
                   # a metric's Score.detail["feedback"]: what the reflective proposer reads
                   feedback=" ".join(n for n in notes if n))

    @classmethod
    def unevaluated(cls, weights: Sequence[tuple[str, float]], why: str) -> CaseScore:
        """A case its run never reached (stopped by the failure threshold): a failure."""
        return cls(objective=0.0, metrics={name: 0.0 for name, _ in weights}, output=f"(not evaluated: {why})")


@dataclass(eq=False)
class Candidate:
    """A prompt version under evaluation, with its per-case objective scores."""

    prompt: PromptVersion
    operator: str
    iteration: int
    scores: dict[int, float] = field(default_factory=dict)   # case id -> objective score
    outputs: dict[int, str] = field(default_factory=dict)    # case id -> raw model output
    parsed: dict[int, dict | None] = field(default_factory=dict)  # case id -> parsed output fields
    metric_scores: dict[int, dict[str, float]] = field(default_factory=dict)  # case id -> metric -> value
    feedback: dict[int, str] = field(default_factory=dict)  # case id -> the metrics' feedback text, if any
    tokens: int = 0
    repeats: int = 1   # samples wanted per case (a sampling temperature makes one sample noise)
    samples: dict[int, dict[int, CaseScore]] = field(default_factory=dict)  # case id -> repeat -> score

    @property
    def id(self) -> int:
        return self.prompt.id

    @property
    def content(self) -> PromptContent:
        return self.prompt.content

    def add(self, case_id: int, score: CaseScore, repeat: int = 0) -> None:
        """One sample's score on a case; the case's score is the mean of its samples."""
        mine = self.samples.setdefault(case_id, {})
        mine[repeat] = score
        self.scores[case_id] = sum(s.objective for s in mine.values()) / len(mine)
        self.metric_scores[case_id] = {name: sum(s.metrics.get(name, 0.0) for s in mine.values()) / len(mine)
                                       for name in score.metrics}
        self.outputs[case_id] = score.output
        self.parsed[case_id] = score.parsed
        if score.feedback:
            self.feedback[case_id] = score.feedback

    def lacking(self, case: Case, repeats: int) -> int:
        """Samples of this case still to take to have `repeats` of them."""
        return max(0, repeats - len(self.samples.get(case.id, ())))

    def carries(self, case: Case) -> bool:
        """True if the case is one of this prompt's demos (it is then never scored on it)."""
        key = inputs_key(case.inputs)
        return any(inputs_key(d.inputs) == key for d in self.prompt.content.demos)

    def eligible(self, cases: Iterable[Case]) -> list[Case]:
        return [c for c in cases if not self.carries(c)]

    def mean(self, cases: Sequence[Case]) -> float | None:
        """Mean score over the cases (those it carries as demos excluded); None unless all are scored."""
        own = self.eligible(cases)
        if not own or any(c.id not in self.scores for c in own):
            return None
        return sum(self.scores[c.id] for c in own) / len(own)

    def metric_means(self, cases: Sequence[Case]) -> dict[str, float]:
        own = [c for c in self.eligible(cases) if c.id in self.metric_scores]
        names = {n for c in own for n in self.metric_scores[c.id]}
        return {n: sum(self.metric_scores[c.id].get(n, 0.0) for c in own) / len(own) for n in sorted(names)}

    def estimate(self, cases: Sequence[Case]) -> float | None:
        """Mean over the cases scored so far (minibatch fitness); None if none."""
        seen = [self.scores[c.id] for c in self.eligible(cases) if c.id in self.scores]
        return sum(seen) / len(seen) if seen else None

    def failures(self, cases: Sequence[Case], below: float = 1.0) -> list[tuple[Case, str]]:
        return [(c, self.outputs.get(c.id, "")) for c in self.eligible(cases)
                if c.id in self.scores and self.scores[c.id] < below]


def objective_score(result: Result, weights: Sequence[tuple[str, float]]) -> float:
    """One result's objective: weighted mean of its metric values; an error scores 0."""
    if result.error_kind:
        return 0.0
    total = sum(w for _, w in weights)
    return sum(w * (result.value(name) or 0.0) for name, w in weights) / total


Todo = list[tuple[Candidate, list[Case]]]  # (candidate, the cases to score it on)


@dataclass(frozen=True)
class Evaluation:
    """What one budgeted evaluation did."""

    done: Todo        # the candidates evaluated, each with the cases it was scored on
    short: bool       # the call budget could not take the candidates after them (not evaluated)
    unsent: bool      # the gateway's cap left requests unsent (those cases stay unscored)


class Evaluator:
    """Scores candidates for one optimization, paying the ledger for what it has not scored yet.
    Before each batch goes to the runner, the search's `status` goes out as `SearchEvaluating`."""

    def __init__(self, *, store: Store, settings: Settings, gateway: Gateway, ledger: Ledger,
                 config: SearchConfig, problem: Problem, progress: Progress,
                 status: Callable[[], SearchStatus]):
        self.store, self.settings, self.gateway, self.ledger = store, settings, gateway, ledger
        self.config, self.problem, self.progress, self.status = config, problem, progress, status
        self.context = metric_context(settings)
        self.metrics = build_metrics(list(problem.objective.metrics), "objective", context=self.context)
        self.weights = tuple(zip([m.name for m in self.metrics], problem.objective.weights))
        self.embedded: set[tuple[str, str]] = set()   # (model, text) a kNN selector's embeddings need
        self._pools: dict[tuple[int, ...], list[Case]] = {}

    async def evaluate(self, candidates: Sequence[Candidate], cases: Sequence[Case]) -> Evaluation:
        """Score the candidates (in order) on the cases they lack, as many as the call budget
        takes whole; the calls they needed are spent from the ledger."""
        todo: Todo = []
        texts: set[tuple[str, str]] = set()
        short = False
        needed = 0
        for cand, missing in self.missing(candidates, cases):
            more = self._unembedded(cand, missing) - texts
            calls = sum(cand.lacking(c, cand.repeats) for c in missing)
            if not self.ledger.fits(needed + calls + len(more)):
                short = True
                break
            needed += calls + len(more)
            texts |= more
            todo.append((cand, missing))
        unsent = await self._embed(texts) or (bool(todo) and await self._run(todo))
        self.ledger.spend(needed)
        return Evaluation(todo, short, unsent)

    async def evaluate_test(self, candidates: Sequence[Candidate], cases: Sequence[Case]) -> bool:
        """Score the candidates on all the cases with the calls set aside for the test split;
        True if the gateway's cap left requests unsent (nothing is then spent)."""
        todo = self.missing(candidates, cases, repeats=1)
        self.gateway.max_calls = self.ledger.gateway_cap(test=True)
        texts = set().union(*(self._unembedded(cand, missing) for cand, missing in todo))
        if await self._embed(texts) or (todo and await self._run(todo, repeats=1)):
            return True
        self.ledger.spend_test(sum(len(missing) for _, missing in todo) + len(texts))
        return False

    @staticmethod
    def missing(candidates: Sequence[Candidate], cases: Sequence[Case], repeats: int | None = None) -> Todo:
        """(candidate, its eligible cases lacking samples), for each candidate with any; a
        candidate wants its own `repeats` samples per case unless `repeats` is given."""
        todo = [(cand, [c for c in cand.eligible(cases) if cand.lacking(c, repeats or cand.repeats)])
                for cand in dict.fromkeys(candidates)]
        return [(cand, missing) for cand, missing in todo if missing]

    def _unembedded(self, cand: Candidate, cases: Sequence[Case]) -> set[tuple[str, str]]:
        """(model, text) pairs a candidate comparing embeddings needs before it renders these
        cases (its pool's inputs and theirs) that this search has not embedded yet."""
        selector = cand.content.demo_selector
        if selector is None or selector.similarity != "embedding" or not cases:
            return set()
        if selector.pool not in self._pools:
            self._pools[selector.pool] = list(self.store.cases_by_id(self.config.project_id,
                                                                     selector.pool).values())
        signature = self.problem.signature
        return {(selector.embedding_model, demo_text(c.inputs, signature))
                for c in (*self._pools[selector.pool], *cases)} - self.embedded

    def _resume_command(self) -> str:
        return command(self.store, self.config.project_id, "optimize", "--resume", self.config.name)

    async def _embed(self, texts: set[tuple[str, str]]) -> bool:
        """Embed the texts through the gateway (one cached request each, so rendering finds them
        all in the cache); True if the budget's cap left some unsent."""
        for model_name, text in sorted(texts):
            model = self.settings.resolve_model(model_name)
            try:
                await self.gateway.embed(model, [text])
            except CallError as exc:
                if exc.kind == UNSENT:
                    return True
                raise ProviderError(f"embedding model {model_name}: {exc.kind}: {exc}; fix the provider and "
                                    f"continue with `{self._resume_command()}`") from None
            self.embedded.add((model_name, text))
        return False

    async def _run(self, todo: Todo, repeats: int | None = None) -> bool:
        """Evaluate through the eval runner (each candidate's `repeats` samples per case, or
        `repeats`); True if the gateway's cap left requests unsent (those cases stay unscored and
        their runs are left to finish on resume)."""
        name, project_id = self.config.name, self.config.project_id
        plans: list[RunPlan] = []
        runs: list[tuple[Candidate, int, list[Case]]] = []
        for cand, cases in todo:
            samples = repeats or cand.repeats
            digest = hashlib.sha256(json.dumps(sorted(c.id for c in cases)).encode()).hexdigest()[:10]
            run_name = f"opt:{name}:{cand.prompt.ref}:{digest}" + (f":x{samples}" if samples > 1 else "")
            run = self.store.find_run(project_id, run_name)
            if run is not None and run.status in ("completed", "failed") and not any(
                    r.error_kind in RETRIED for r in self.store.results(run.id)):
                runs.append((cand, run.id, cases))
                continue
            if run is not None:  # interrupted earlier: finish it (provider failures are retried)
                self.store.drop_results(run.id, error_kinds=RETRIED)
                self.store.claim("runs", run.id, f"run '{run_name}'", error=None)
                plan = RunPlan(run.id, run_name, project_id, cand.prompt, self.problem.signature,
                               self.problem.task_model, cases, samples, self.metrics,
                               {**cand.prompt.content.params},
                               decoding=run_decoding(cand.prompt, self.problem.signature,
                                                     self.problem.task_model))
            else:
                with self.store.db.atomic():
                    plan = plan_run(self.store, project_id, cand.prompt, self.problem.task_model,
                                    cases, name=run_name, metric_specs=list(self.problem.objective.metrics),
                                    concurrency=self.config.concurrency, repeat=samples,
                                    optimization_id=self.config.optimization_id,
                                    where=f"optimize {name}", context=self.context)
            plans.append(plan)
            runs.append((cand, plan.run_id, cases))
        if plans:
            self.progress.emit(SearchEvaluating(self.status()))
            try:
                outcome = await PerCall(self.config.concurrency, use_cache=True, settings=self.settings).execute(
                    self.store, self.gateway, plans, self.progress)
            except BaseException:
                finish(self.store, plans, None, status="interrupted", usage=self.gateway.usage)
                raise
            finish(self.store, plans, outcome, usage=self.gateway.usage)
        capped = False
        for cand, run_id, cases in runs:
            results = self.store.results(run_id)
            unsent = any(r.error_kind == UNSENT for r in results)
            if unsent:
                capped = True
                self.store.drop_results(run_id, error_kinds=[UNSENT])
                self.store.update_run(run_id, status="interrupted", error="the call budget is spent")
                results = [r for r in results if r.error_kind != UNSENT]
            failed = [r for r in results if r.error_kind in PROVIDER_FAILURES]
            if failed:
                self.store.update_run(run_id, status="failed", error=failed[0].error)
                model = self.problem.task_model
                raise ProviderError(f"task model {model.alias or model.model}: {failed[0].error_kind}: "
                                    f"{failed[0].error}; fix the provider and continue with "
                                    f"`{self._resume_command()}`")
            for r in results:
                cand.add(r.case_id, CaseScore.of(r, self.weights), r.repeat)
                self.ledger.charge(r.prompt_tokens + r.completion_tokens, r.cost or 0.0)
            stopped = self.store.run_by_id(run_id).error or "not run"
            for case in cases:  # a run stopped by the failure threshold: the rest count as failures
                if case.id not in cand.scores and not unsent:
                    cand.add(case.id, CaseScore.unevaluated(self.weights, stopped))
        return capped
