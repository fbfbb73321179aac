"""The machinery every strategy shares: candidates, the proposer, the winner — over an
`Evaluator` (scores each version on each case once, through the eval runner) and a
`Ledger` (every budget counter and rule).

- Every candidate is a prompt version in the base's family, with its parent
  (lineage) and ``made_by = optimize:<name>``; identical content is one candidate.
- The call budget is a cap on everything the optimization sends (see
  `promptlab.optimizers.ledger`): the search decides on calls *needed*, so a
  resumed search makes the same decisions; past the gateway's cap a request is
  not sent and the search stops.
- The proposer is asked through `ask_json`, its replies checked by the caller's
  validator and re-asked in a conversation that keeps every unusable reply; each
  attempt is a call on the budget.
- The base competes on equal terms: it is scored on the whole val split before
  the search starts. Winner: the candidate with the best val score, if that beats
  the base's by more than `min_gain`; then the best train score (tied candidates
  are scored on train, the budget permitting; train counts only if every tied
  one has it), then fewest prompt tokens (`render.prompt_tokens_estimate`), then
  the earliest. Otherwise no improvement was found and the base is the winner.
"""

from __future__ import annotations

import functools
import math
import random
from typing import TYPE_CHECKING, Any, Callable, Sequence

from promptlab.providers.ask import InvalidReply, Retry, ask_json
from promptlab.errors import ProviderError, UsageError
from promptlab.hints import command
from promptlab.providers.errors import CallError
from promptlab.providers.gateway import structured_mode
from promptlab.models import Case, PromptContent, PromptVersion
from promptlab.optimizers.base import BudgetExhausted, OptimizationResult, Problem, Spent
from promptlab.optimizers.evaluator import UNSENT, Candidate, Evaluator
from promptlab.optimizers.ledger import Ledger, Metered
from promptlab.progress import Progress, SearchStatus, SearchStep, SilentProgress
from promptlab.store.records import CandidateRecord, CandidateStep, EvalStep, Note, Step
from promptlab.prompting.render import check_prompt, prompt_tokens_estimate
from promptlab.store import Store

if TYPE_CHECKING:
    from promptlab.config import Settings
    from promptlab.providers.gateway import Gateway
    from promptlab.optimizers.base import SearchConfig

# how the proposer is re-asked (its cached replies are keyed by these conversations)
PROPOSER_RETRY = Retry(note="That reply is unusable: {reason}. Reply with the JSON object only.", keep_all=True)


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


class Search:
    """One optimization's shared machinery (one per run; strategies keep no state of their own)."""

    def __init__(self, config: SearchConfig, problem: Problem, *, store: Store, settings: Settings,
                 gateway: Gateway, ledger: Ledger, progress: Progress | None = None):
        self.config, self.problem = config, problem
        self.store, self.gateway, self.ledger = store, gateway, ledger
        self.name, self.strategy, self.knobs = config.name, config.strategy, config.knobs
        self.progress = progress or SilentProgress()
        self.evaluator = Evaluator(store=store, settings=settings, gateway=gateway, ledger=ledger, config=config,
                                   problem=problem, progress=self.progress, status=self.status)
        self.signature_id = problem.base.signature_id  # candidates render with the base's signature version
        self.candidates: dict[str, Candidate] = {}   # content hash -> candidate
        self.history: list[Step] = []
        self.iteration = 0
        gateway.max_calls = ledger.gateway_cap()
        self.latest: list[tuple[str, str, float | None, float | None]] = []
        self.base = self._register(problem.base, "base", parent=None)
        self.naive: Candidate | None = None  # the naive k-shot baseline (see `add_naive`)
        self.decoded: Candidate | None = None  # the start with structured decoding switched (`add_decoded`)

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

    async def add_decoded(self) -> None:
        """The better of the base and naive k-shot with structured decoding switched (on: replies
        decoded to the signature's schema), scored on val, when the task model can decode so: a
        start that wins only by how replies are decoded is where every strategy then searches from."""
        from promptlab.optimizers import operators as ops

        start = self.start
        if (start.mean(self.problem.val) or 0.0) >= 1.0 or not (start.content.structured or self.can_structure):
            return  # nothing to gain, or no way to decode
        self.decoded = self.candidate(ops.toggle_structured(start.content), start, "structured",
                                      "structured decoding " + ("off" if start.content.structured else "on"))
        if self.decoded is not None:
            await self.evaluate([self.decoded], "val")

    @functools.cached_property
    def can_structure(self) -> bool:
        """Whether the task model can decode replies to the signature's schema (the structured edit)."""
        return self.problem.signature is not None and structured_mode(self.problem.task_model) != "none"

    @property
    def start(self) -> Candidate:
        """The best on val of the base, the naive k-shot version and the better of those two with
        structured decoding switched (the earlier on a tie)."""
        best = self.base
        for other in (self.naive, self.decoded):
            other_val = other.mean(self.problem.val) if other is not None else None
            if other_val is not None and (best.mean(self.problem.val) is None
                                          or other_val > best.mean(self.problem.val)):
                best = other
        return best

    # ---- candidates -----------------------------------------------------------
    def _register(self, prompt: PromptVersion, operator: str, parent: Candidate | None) -> Candidate:
        cand = Candidate(prompt=prompt, operator=operator, iteration=self.iteration,
                         tokens=prompt_tokens_estimate(prompt.content))
        self.candidates[prompt.content.hash()] = cand
        self.history.append(CandidateStep(self.iteration, prompt.id, prompt.ref,
                                          parent.id if parent else None, operator))
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
        version = self.store.add_prompt(self.config.project_id, self.problem.base.name, content,
                                        signature_id=self.signature_id, parent_id=parent.id,
                                        made_by=f"optimize:{self.name}", message=message[:500],
                                        candidate=True)
        return self._register(version, operator, parent)

    def next_iteration(self) -> int:
        self.iteration += 1
        return self.iteration

    @property
    def spent(self) -> Spent:
        return self.ledger.spent(self.gateway.calls, self.gateway.usage)

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
        done = await self.evaluator.evaluate(candidates, cases)
        self._log_eval(done.done, split)
        if done.short:
            raise BudgetExhausted("call budget reached")
        if done.unsent:
            raise BudgetExhausted("call budget reached: retries took the rest of the requests")
        if self.ledger.exhausted:
            raise BudgetExhausted("token or cost budget reached")

    async def score_test(self, candidates: Sequence[Candidate], cases: Sequence[Case]) -> None:
        """Score the base and the winner on the held-out test split, with the calls set aside for it."""
        unsent = await self.evaluator.evaluate_test(candidates, cases)
        self.save()
        if unsent:
            raise ProviderError(f"optimize {self.name}: the call budget ({self.problem.budget.calls} requests, "
                                f"retries included) ran out before the test split was scored; the provider "
                                f"needed retries. Start again with a larger --budget-calls: replies already "
                                f"received are reused from the cache")

    def _log_eval(self, todo: list[tuple[Candidate, list[Case]]], split: str) -> None:
        for cand, cases in todo:
            val, train = cand.mean(self.problem.val), cand.mean(self.problem.train)
            shown = val if val is not None else cand.estimate(self.problem.val)
            self.latest = ([(cand.prompt.ref, cand.operator, shown, train)] + self.latest)[:6]
            self.history.append(EvalStep(self.iteration, cand.prompt.ref, split, len(cases), val, train,
                                         cand.estimate(self.problem.val), self.ledger.calls))
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
            base_val=self.base.mean(self.problem.val), latest=tuple(self.latest), calls=self.ledger.calls,
            budget_calls=self.ledger.projection()["search"], tokens=self.ledger.tokens, budget_tokens=b.tokens,
            candidates=len(self.candidates), message=message)

    def save(self, **fields: Any) -> None:
        self.store.update_optimization(self.config.optimization_id, history=self.history,
                                       spent=self.spent.__dict__,
                                       **fields)

    def note(self, event: str, **data: Any) -> None:
        self.history.append(Note(event, self.iteration, data))

    # ---- the proposer -------------------------------------------------------------
    async def propose(self, operator: str, messages: list[dict],
                      validate: Callable[[Any], str | None]) -> dict | None:
        """Ask the proposer for a JSON object; validated, re-asked up to `proposer_retries` times.

        Returns None when the replies stay unusable (noted in the history). A
        provider failure (after the gateway's retries) stops the search (exit 3)."""
        if not self.knobs.use_proposer:
            return None
        model = self.problem.proposer

        def checked(obj: Any) -> dict:
            reason = validate(obj)
            if reason:
                raise ValueError(reason)
            return obj

        try:
            answer = await ask_json(Metered(self.gateway, self.ledger), model, messages, checked,
                                    attempts=max(0, self.knobs.proposer_retries) + 1, retry=PROPOSER_RETRY,
                                    params={"temperature": self.knobs.proposer_temperature,
                                            "max_tokens": self.knobs.proposer_max_tokens})
        except InvalidReply as exc:
            reason = exc.reason
        except CallError as exc:
            if exc.kind == UNSENT:
                raise BudgetExhausted("call budget reached: retries took the rest of the requests") from None
            if exc.transient:
                raise ProviderError(f"proposer {model.alias or model.model}: {exc.kind}: {exc}; "
                                    f"continue with `{command(self.store, self.config.project_id, 'optimize', '--resume', self.name)}`") from None
            reason = f"{exc.kind}: {exc}"
        else:
            self.note("proposer", operator=operator, ok=True, attempts=answer.attempts)
            return answer.value
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

    async def finish(self, stopped: str, eligible: Callable[[Candidate], bool] | None = None) -> OptimizationResult:
        """Pick the winner against the base (see the module doc), freeze the result. `eligible`:
        which candidates may win (a strategy that promises a kind of change, e.g. params only)."""
        val, train = self.problem.val, self.problem.train
        base_val = self.base.mean(val)
        contenders = [c for c in self.candidates.values() if c is not self.base and base_val is not None
                      and (v := c.mean(val)) is not None and v > base_val + self.knobs.min_gain
                      and (eligible is None or eligible(c))]
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
