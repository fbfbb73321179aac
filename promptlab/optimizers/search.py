"""The machinery every strategy shares: candidates, evaluation, the proposer, the budget, the winner.

- Every candidate is a prompt version in the base's family, with its parent
  (lineage) and ``made_by = optimize:<name>``; identical content is one candidate.
- Every evaluation goes through `promptlab.evaluation` (plan_run / execute /
  finish): each is a run row with ``optimization_id`` set, named after the
  candidate and its cases, so it is cached, concurrent and resumable. A replay
  of the same search finds those runs (and the response cache) and sends
  nothing that already finished.
- The call budget is a cap on everything the optimization sends. The search
  decides on calls *needed* (a cached reply counts too), so a resumed search
  spends exactly what the uninterrupted one would and makes the same decisions;
  scoring the base and the winner on the test split has its share set aside
  up front (`test_reserve`). The gateway's hard cap (`Gateway.max_calls`) keeps
  the requests really sent (retries included, earlier sessions included) within
  the budget: past it a request is not sent and the search stops.
- A candidate is never scored on a case it carries as a demo (leave-one-out
  when train and val are the same tiny pool).
- The base competes on equal terms: it is scored on the whole val split before
  the search starts. Winner: the candidate with the best val score, if that beats
  the base's by more than `min_gain`; then the best train score (tied candidates
  are scored on train, the budget permitting; train counts only if every tied
  one has it), then fewest prompt tokens (`render.prompt_tokens_estimate`), then
  the earliest. Otherwise no improvement was found and the base is the winner.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from promptlab.errors import ProviderError, UsageError
from promptlab.evaluation import RunPlan, build_metrics, execute, finish, metric_context, plan_run
from promptlab.lm import CallError
from promptlab.models import Case, PromptContent, PromptVersion
from promptlab.optimizers.base import (BudgetExhausted, CandidateRecord, CommonKnobs, OptimizationResult,
                                       Problem, Spent)
from promptlab.optimizers.operators import inputs_key
from promptlab.outputs import ParseError, extract_json
from promptlab.progress import Progress, SearchEvaluating, SearchStatus, SearchStep, SilentProgress
from promptlab.render import check_prompt, demo_text, prompt_tokens_estimate
from promptlab.store import Store

if TYPE_CHECKING:
    from promptlab.config import Settings
    from promptlab.lm import Gateway

# error kinds that mean the provider failed (after retries), not that the candidate is bad
PROVIDER_FAILURES = {"timeout", "connection", "server", "rate_limit", "conflict", "too_early", "auth"}
# a request the gateway did not send because the call budget was spent
UNSENT = "budget"
RETRIED = PROVIDER_FAILURES | {UNSENT}  # results dropped and evaluated again on resume


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

    @property
    def id(self) -> int:
        return self.prompt.id

    @property
    def content(self) -> PromptContent:
        return self.prompt.content

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


class Plateau:
    """Early stop: `patience` steps in a row without beating the best by more than `min_gain`."""

    def __init__(self, patience: int, min_gain: float = 0.0):
        self.patience, self.min_gain = max(1, patience), min_gain
        self.best: float | None = None
        self.stale = 0

    def update(self, score: float | None) -> bool:
        """Record a step's best score; True if it counted as progress."""
        if score is not None and (self.best is None or score > self.best + self.min_gain):
            self.best, self.stale = score, 0
            return True
        self.stale += 1
        return False

    @property
    def stopped(self) -> bool:
        return self.stale >= self.patience


def objective_score(result: dict, weights: Sequence[tuple[str, float]]) -> float:
    """One result's objective: weighted mean of its metric values; an error scores 0."""
    if result["error_kind"]:
        return 0.0
    total = sum(w for _, w in weights)
    value = 0.0
    for name, w in weights:
        s = (result["scores"] or {}).get(name) or {}
        value += w * float(s.get("value") or 0.0)
    return value / total


class Search:
    """One optimization's shared machinery (one per run; strategies keep no state of their own)."""

    def __init__(self, *, store: Store, settings: Settings, gateway: Gateway, project_id: int,
                 optimization_id: int, name: str, strategy: str, problem: Problem,
                 knobs: CommonKnobs, concurrency: int, test_reserve: int = 0, sent_before: int = 0,
                 progress: Progress | None = None):
        self.store, self.settings, self.gateway = store, settings, gateway
        self.project_id, self.optimization_id, self.name = project_id, optimization_id, name
        self.strategy, self.problem, self.knobs = strategy, problem, knobs
        self.concurrency = concurrency
        self.progress = progress or SilentProgress()
        self.context = metric_context(settings)
        self.metrics = build_metrics(list(problem.objective.metrics), "objective", context=self.context)
        self.weights = tuple(zip([m.name for m in self.metrics], problem.objective.weights))
        self.signature_id = problem.base.signature_id  # candidates render with the base's signature version
        self.candidates: dict[str, Candidate] = {}   # content hash -> candidate
        self.history: list[dict] = []
        self.iteration = 0
        self.calls = self.tokens = 0
        self.cost = 0.0
        self.test_reserve = test_reserve  # calls set aside for scoring base and winner on test
        self.sent_before = sent_before    # requests sent by earlier sessions of this optimization
        self.provider_calls_start = gateway.calls
        self.test_calls = 0
        self._cap(self.test_reserve)
        self.latest: list[tuple[str, str, float | None, float | None]] = []
        self.base = self._register(problem.base, "base", parent=None)
        self.naive: Candidate | None = None  # the naive k-shot baseline (see `add_naive`)
        self.embedded: set[tuple[str, str]] = set()   # (model, text) a kNN selector's embeddings need
        self._pools: dict[tuple[int, ...], list[Case]] = {}

    # ---- where the search starts ------------------------------------------------------
    async def add_naive(self, rng: random.Random) -> None:
        """The naive few-shot baseline: the base with `max_demos` label-balanced random train
        cases as demos (drawn with the search's rng), scored on val like the base. It is a
        candidate like any other (hidden unless it wins), and the search starts from the better
        of the two (`start`), so a winner is never worse on val than naive few-shot."""
        from promptlab.optimizers import operators as ops

        k = self.knobs.max_demos
        if k <= 0 or self.base.content.demo_selector is not None:
            return
        shots = ops.sample_demos(demo_pool(self), k, rng)
        if not shots:
            return
        self.naive = self.candidate(ops.with_demos(self.base.content, shots), self.base, "naive",
                                    f"{len(shots)} random label-balanced train demos")
        if self.naive is not None:
            await self.evaluate([self.naive], "val")

    @property
    def start(self) -> Candidate:
        """The better on val of the base and the naive k-shot version (the base on a tie)."""
        base_val = self.base.mean(self.problem.val)
        naive_val = self.naive.mean(self.problem.val) if self.naive is not None else None
        if naive_val is not None and (base_val is None or naive_val > base_val):
            return self.naive
        return self.base

    # ---- candidates -----------------------------------------------------------
    def _register(self, prompt: PromptVersion, operator: str, parent: Candidate | None) -> Candidate:
        cand = Candidate(prompt=prompt, operator=operator, iteration=self.iteration,
                         tokens=prompt_tokens_estimate(prompt.content))
        self.candidates[prompt.content.hash()] = cand
        self.history.append({"event": "candidate", "iteration": self.iteration, "prompt_id": prompt.id,
                             "ref": prompt.ref, "parent_id": parent.id if parent else None,
                             "operator": operator})
        return cand

    def known(self, content: PromptContent) -> Candidate | None:
        return self.candidates.get(content.hash())

    def candidate(self, content: PromptContent | None, parent: Candidate, operator: str,
                  note: str = "") -> Candidate | None:
        """Store content as a new prompt version (child of parent); None if it is not admissible.

        The same content twice is the same candidate (returned as is)."""
        if content is None:
            return None
        existing = self.known(content)
        if existing is not None:
            return existing
        limit = self.knobs.max_prompt_tokens
        if limit and prompt_tokens_estimate(content) > limit:
            return None
        try:
            check_prompt(content, self.problem.signature, "candidate")
        except UsageError:
            return None
        message = f"{operator}: {note}" if note else operator
        version = self.store.add_prompt(self.project_id, self.problem.base.name, content,
                                        signature_id=self.signature_id, parent_id=parent.id,
                                        made_by=f"optimize:{self.name}", message=message[:500],
                                        candidate=True)
        return self._register(version, operator, parent)

    def next_iteration(self) -> int:
        self.iteration += 1
        return self.iteration

    # ---- budget -------------------------------------------------------------------
    def remaining_calls(self) -> int | None:
        budget = self.problem.budget.calls
        return None if budget is None else budget - self.test_reserve - self.calls

    def _cap(self, reserved: int) -> None:
        """Let the gateway send at most the budget, less `reserved`, counting earlier sessions."""
        budget = self.problem.budget.calls
        self.gateway.max_calls = (None if budget is None else
                                  self.provider_calls_start + budget - reserved - self.sent_before)

    def projection(self) -> dict[str, int | None]:
        """Most calls the search and the test scoring may take (None: no call budget)."""
        budget = self.problem.budget.calls
        return {"search": None if budget is None else budget - self.test_reserve,
                "test": self.test_reserve if budget is not None else None, "total": budget}

    def can_afford(self, calls: int) -> bool:
        left = self.remaining_calls()
        return left is None or calls <= left

    def _check_spend(self) -> None:
        b = self.problem.budget
        if (b.tokens is not None and self.tokens >= b.tokens) or (b.cost is not None and self.cost >= b.cost):
            raise BudgetExhausted("token or cost budget reached")

    @property
    def spent(self) -> Spent:
        return Spent(calls=self.calls, tokens=self.tokens, cost=round(self.cost, 6),
                     provider_calls=self.sent_before + self.gateway.calls - self.provider_calls_start,
                     test_calls=self.test_calls)

    # ---- evaluation ---------------------------------------------------------------
    def split_cases(self, split: str) -> tuple[Case, ...]:
        return {"train": self.problem.train, "val": self.problem.val}[split]

    async def evaluate(self, candidates: Sequence[Candidate], split: str = "val",
                       cases: Sequence[Case] | None = None) -> None:
        """Score candidates on cases (default: the whole split), skipping what is already scored.

        Evaluates the candidates that fit in the call budget (in order) and raises
        BudgetExhausted after them if some did not fit, or if the gateway's cap
        stopped requests (retries spent the budget)."""
        cases = list(cases if cases is not None else self.split_cases(split))
        todo: list[tuple[Candidate, list[Case]]] = []
        texts: set[tuple[str, str]] = set()
        short = False
        needed = 0
        for cand, missing in self._missing(candidates, cases):
            more = self._unembedded(cand, missing) - texts
            if not self.can_afford(needed + len(missing) + len(more)):
                short = True
                break
            needed += len(missing) + len(more)
            texts |= more
            todo.append((cand, missing))
        unsent = await self._embed(texts) or (bool(todo) and await self._run(todo))
        self.calls += needed
        self._log_eval(todo, split)
        if short:
            raise BudgetExhausted("call budget reached")
        if unsent:
            raise BudgetExhausted("call budget reached: retries took the rest of the requests")
        self._check_spend()

    async def score_test(self, candidates: Sequence[Candidate], cases: Sequence[Case]) -> None:
        """Score the base and the winner on the held-out test split, with the calls set aside for it."""
        todo = self._missing(candidates, list(cases))
        self._cap(0)
        texts = set().union(*(self._unembedded(cand, missing) for cand, missing in todo))
        if await self._embed(texts) or (todo and await self._run(todo)):
            self.save()
            raise ProviderError(f"optimize {self.name}: the call budget ({self.problem.budget.calls} requests, "
                                f"retries included) ran out before the test split was scored; the provider "
                                f"needed retries. Start again with a larger --budget-calls: replies already "
                                f"received are reused from the cache")
        self.test_calls += sum(len(missing) for _, missing in todo) + len(texts)
        self.save()

    def _unembedded(self, cand: Candidate, cases: Sequence[Case]) -> set[tuple[str, str]]:
        """(model, text) pairs a candidate comparing embeddings needs before it renders these
        cases (its pool's inputs and theirs) that this search has not embedded yet."""
        selector = cand.content.demo_selector
        if selector is None or selector.similarity != "embedding" or not cases:
            return set()
        if selector.pool not in self._pools:
            self._pools[selector.pool] = list(self.store.cases_by_id(self.project_id, selector.pool).values())
        signature = self.problem.signature
        return {(selector.embedding_model, demo_text(c.inputs, signature))
                for c in (*self._pools[selector.pool], *cases)} - self.embedded

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
                                    f"continue with `promptlab optimize --resume {self.name}`") from None
            self.embedded.add((model_name, text))
        return False

    @staticmethod
    def _missing(candidates: Sequence[Candidate], cases: list[Case]) -> list[tuple[Candidate, list[Case]]]:
        """(candidate, its eligible cases not scored yet), for each candidate with any."""
        todo = [(cand, [c for c in cand.eligible(cases) if c.id not in cand.scores])
                for cand in dict.fromkeys(candidates)]
        return [(cand, missing) for cand, missing in todo if missing]

    async def _run(self, todo: list[tuple[Candidate, list[Case]]]) -> bool:
        """Evaluate through the eval runner; True if the gateway's cap left requests unsent
        (those cases stay unscored and their runs are left to finish on resume)."""
        plans: list[RunPlan] = []
        runs: list[tuple[Candidate, int, list[Case]]] = []
        for cand, cases in todo:
            digest = hashlib.sha256(json.dumps(sorted(c.id for c in cases)).encode()).hexdigest()[:10]
            run_name = f"opt:{self.name}:{cand.prompt.ref}:{digest}"
            run = self.store.find_run(self.project_id, run_name)
            if run is not None and run["status"] in ("completed", "failed") and not any(
                    r["error_kind"] in RETRIED for r in self.store.results(run["id"])):
                runs.append((cand, run["id"], cases))
                continue
            if run is not None:  # interrupted earlier: finish it (provider failures are retried)
                self.store.drop_results(run["id"], error_kinds=RETRIED)
                self.store.claim("runs", run["id"], f"run '{run_name}'", error=None)
                plan = RunPlan(run["id"], run_name, self.project_id, cand.prompt, self.problem.signature,
                               self.problem.task_model, cases, 1, self.metrics,
                               {**cand.prompt.content.params})
            else:
                with self.store.db.atomic():
                    plan = plan_run(self.store, self.project_id, cand.prompt, self.problem.task_model,
                                    cases, name=run_name, metric_specs=list(self.problem.objective.metrics),
                                    concurrency=self.concurrency, optimization_id=self.optimization_id,
                                    where=f"optimize {self.name}", context=self.context)
            plans.append(plan)
            runs.append((cand, plan.run_id, cases))
        if plans:
            self.progress.emit(SearchEvaluating(self.status()))
            try:
                outcome = await execute(self.store, self.gateway, plans, self.progress,
                                        concurrency=self.concurrency, use_cache=True,
                                        settings=self.settings)
            except BaseException:
                finish(self.store, plans, None, status="interrupted")
                raise
            finish(self.store, plans, outcome)
        capped = False
        for cand, run_id, cases in runs:
            results = self.store.results(run_id)
            unsent = any(r["error_kind"] == UNSENT for r in results)
            if unsent:
                capped = True
                self.store.drop_results(run_id, error_kinds=[UNSENT])
                self.store.update_run(run_id, status="interrupted", error="the call budget is spent")
                results = [r for r in results if r["error_kind"] != UNSENT]
            failed = [r for r in results if r["error_kind"] in PROVIDER_FAILURES]
            if failed:
                self.store.update_run(run_id, status="failed", error=failed[0]["error"])
                raise ProviderError(f"task model {self.problem.task_model.alias or self.problem.task_model.model}: "
                                    f"{failed[0]['error_kind']}: {failed[0]['error']}; fix the provider "
                                    f"and continue with `promptlab optimize --resume {self.name}`")
            for r in results:
                cand.scores[r["case_id"]] = objective_score(r, self.weights)
                cand.metric_scores[r["case_id"]] = {
                    name: (0.0 if r["error_kind"] else float(((r["scores"] or {}).get(name) or {}).get("value") or 0.0))
                    for name, _ in self.weights}
                cand.outputs[r["case_id"]] = r["output"] or (r["error"] or "")
                notes = [str(((r["scores"] or {}).get(name) or {}).get("detail", {}).get("feedback") or "")
                         for name, _ in self.weights]
                if any(notes):  # a metric's Score.detail["feedback"]: what the reflective proposer reads
                    cand.feedback[r["case_id"]] = " ".join(n for n in notes if n)
                cand.parsed[r["case_id"]] = r["parsed"]
                self.tokens += (r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0)
                self.cost += r["cost"] or 0.0
            stopped = self.store.run_by_id(run_id).get("error") or "not run"
            for case in cases:  # a run stopped by the failure threshold: the rest count as failures
                if case.id not in cand.scores and not unsent:
                    cand.scores[case.id] = 0.0
                    cand.metric_scores[case.id] = {name: 0.0 for name, _ in self.weights}
                    cand.outputs[case.id] = f"(not evaluated: {stopped})"
        return capped

    def _log_eval(self, todo: list[tuple[Candidate, list[Case]]], split: str) -> None:
        for cand, cases in todo:
            val, train = cand.mean(self.problem.val), cand.mean(self.problem.train)
            shown = val if val is not None else cand.estimate(self.problem.val)
            self.latest = ([(cand.prompt.ref, cand.operator, shown, train)] + self.latest)[:6]
            self.history.append({"event": "eval", "iteration": self.iteration, "ref": cand.prompt.ref,
                                 "split": split, "n": len(cases), "val": val, "train": train,
                                 "val_estimate": cand.estimate(self.problem.val),
                                 "calls": self.calls})
        self.save()
        if todo:
            self.report()

    def report(self, message: str = "") -> None:
        self.progress.emit(SearchStep(self.status(message)))

    def status(self, message: str = "") -> SearchStatus:
        best = self.best()
        b = self.problem.budget
        return SearchStatus(
            strategy=self.strategy, iteration=self.iteration, best_ref=best.prompt.ref if best else "-",
            best_val=best.mean(self.problem.val) if best else None,
            base_val=self.base.mean(self.problem.val), latest=tuple(self.latest), calls=self.calls,
            budget_calls=self.projection()["search"], tokens=self.tokens, budget_tokens=b.tokens,
            candidates=len(self.candidates), message=message)

    def save(self, **fields: Any) -> None:
        self.store.update_optimization(self.optimization_id, history=self.history,
                                       spent=self.spent.__dict__,
                                       **fields)

    def note(self, event: str, **data: Any) -> None:
        self.history.append({"event": event, "iteration": self.iteration, **data})

    # ---- the proposer -------------------------------------------------------------
    async def propose(self, operator: str, messages: list[dict],
                      validate: Callable[[Any], str | None]) -> dict | None:
        """Ask the proposer for a JSON object; validated, re-asked up to `proposer_retries` times.

        Returns None when the replies stay unusable (noted in the history). A
        provider failure (after the gateway's retries) stops the search (exit 3)."""
        if not self.knobs.use_proposer:
            return None
        model = self.problem.proposer
        params = {"temperature": self.knobs.proposer_temperature, "max_tokens": self.knobs.proposer_max_tokens}
        reason = ""
        for attempt in range(self.knobs.proposer_retries + 1):
            if not self.can_afford(1):
                raise BudgetExhausted("call budget reached")
            self.calls += 1
            try:
                reply = await self.gateway.complete(model, messages, params)
            except CallError as exc:
                if exc.kind == UNSENT:
                    raise BudgetExhausted("call budget reached: retries took the rest of the requests") from None
                if exc.transient:
                    raise ProviderError(f"proposer {model.alias or model.model}: {exc.kind}: {exc}; "
                                        f"continue with `promptlab optimize --resume {self.name}`") from None
                reason = f"{exc.kind}: {exc}"
                break
            self.tokens += reply.usage.prompt_tokens + reply.usage.completion_tokens
            self.cost += reply.usage.cost or 0.0
            try:
                obj = extract_json(reply.text)
                reason = validate(obj) or ""
            except ParseError as exc:
                obj, reason = None, str(exc)
            if not reason:
                self.note("proposer", operator=operator, ok=True, attempts=attempt + 1)
                return obj
            messages = messages + [{"role": "assistant", "content": reply.text},
                                   {"role": "user", "content": f"That reply is unusable: {reason}. "
                                                               f"Reply with the JSON object only."}]
        self.note("proposer", operator=operator, ok=False, reason=reason[:200])
        return None

    # ---- the winner -------------------------------------------------------------
    def rank_key(self, cand: Candidate) -> tuple:
        return rank_key(cand, self.problem.val, self.problem.train)

    def best(self) -> Candidate | None:
        scored = [c for c in self.candidates.values() if c.mean(self.problem.val) is not None]
        return max(scored, key=self.rank_key) if scored else None

    def top(self, n: int, key: Callable[[Candidate], float | None] | None = None) -> list[Candidate]:
        """The n best candidates by a score (default: the val estimate), ties by the winner rule."""
        key = key or (lambda c: c.estimate(self.problem.val))
        scored = [c for c in self.candidates.values() if key(c) is not None]
        return sorted(scored, key=lambda c: (key(c), self.rank_key(c)), reverse=True)[:n]

    async def finish(self, stopped: str) -> OptimizationResult:
        """Pick the winner against the base (see the module doc), freeze the result."""
        val, train = self.problem.val, self.problem.train
        base_val = self.base.mean(val)
        contenders = [c for c in self.candidates.values() if c is not self.base and base_val is not None
                      and (v := c.mean(val)) is not None and v > base_val + self.knobs.min_gain]
        winner = self.base
        if contenders:
            top_val = max(c.mean(val) for c in contenders)
            tied = [c for c in contenders if c.mean(val) == top_val]
            if len(tied) > 1:
                lacking = [c for c in tied if c.mean(train) is None]
                try:
                    await self.evaluate(sorted(lacking, key=self.rank_key, reverse=True), "train")
                except BudgetExhausted:
                    self.note("tie_break", ok=False, reason="budget left no calls to score tied candidates on train")
            on_train = all(c.mean(train) is not None for c in tied)  # train decides only if all have it
            winner = max(tied, key=lambda c: (c.mean(train) if on_train else 0.0, -c.tokens, -c.id))
        improved = winner is not self.base
        self.note("stop", reason=stopped, winner=winner.prompt.ref, improved=improved)
        self.save(winner_prompt_id=winner.id)
        self.report(f"stopped: {stopped}" + ("" if improved else "; no improvement found"))
        records = tuple(self.record(c) for c in self.candidates.values())
        return OptimizationResult(strategy=self.strategy, base=self.record(self.base), best=self.record(winner),
                                  candidates=records, spent=self.spent, stopped=stopped,
                                  iterations=self.iteration, improved=improved)

    def record(self, cand: Candidate) -> CandidateRecord:
        return CandidateRecord(
            prompt_id=cand.id, ref=cand.prompt.ref, parent_id=cand.prompt.parent_id if cand is not self.base
            else None, operator=cand.operator, iteration=cand.iteration,
            val=cand.mean(self.problem.val), train=cand.mean(self.problem.train),
            val_estimate=cand.estimate(self.problem.val),
            n_val=sum(1 for c in self.problem.val if c.id in cand.scores), tokens=cand.tokens)


def rank_key(cand: Candidate, val: Sequence[Case], train: Sequence[Case]) -> tuple:
    """The winner rule as a sort key (larger is better): best val score, then best train
    score, then fewest prompt tokens, then the earliest version."""
    v, t = cand.mean(val), cand.mean(train)
    return (v if v is not None else -math.inf, t if t is not None else -math.inf, -cand.tokens, -cand.id)


def demo_pool(search: Search) -> list:
    """Every train case as a labeled demo (what model-free demo edits draw from)."""
    from promptlab.optimizers.operators import demo_from_case

    return [demo_from_case(c, search.problem.signature) for c in search.problem.train]


def minibatch(cases: Sequence[Case], size: int, rng: random.Random) -> list[Case]:
    cases = list(cases)
    if size <= 0 or size >= len(cases):
        return cases
    return sorted(rng.sample(cases, size), key=lambda c: c.id or 0)
