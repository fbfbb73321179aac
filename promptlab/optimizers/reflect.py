"""reflect — reflective prompt evolution with a per-case Pareto front (GEPA-style).

Meant for a strong proposer: it reads failed traces (inputs, expected and actual
output, and any feedback text a metric returned in ``Score.detail["feedback"]``)
and writes a new instruction.

- The pool starts with the base and the naive k-shot version, both scored on val.
- The Pareto front: the candidates that have the best score on at least one val
  case. A parent is sampled from it, weighted by how many val cases it is best on.
- Each round the parent runs on a fresh train minibatch (`minibatch` cases); if it
  fails none of them the round is skipped. Otherwise the proposer reflects on the
  failures and rewrites the instruction (a useless reply, as a weak proposer's
  tends to be, falls back to one model-free edit — per-input demos first — so
  the search still moves).
- The child is scored on the same minibatch first, and on the whole val split only
  if it beats the parent there; then it joins the pool.
- Every `merge_every`-th round two front candidates that are best on different val
  cases are merged (instructions combined by the proposer, demos crossed over), and
  the merge goes through the same minibatch gate.
- Stop after `iterations`, on the budget, or after `patience` rounds without a
  better val score.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from promptlab.optimizers.base import CommonKnobs, Problem, knob
from promptlab.optimizers.strategy import SearchStrategy

if TYPE_CHECKING:
    from promptlab.models import Case
    from promptlab.optimizers.evaluator import Candidate
    from promptlab.optimizers.search import Search


@dataclass(frozen=True)
class ReflectKnobs(CommonKnobs):
    patience: int = knob(8, "stop after this many rounds without a better val score")
    iterations: int = knob(30, "most reflect (or merge) rounds")
    minibatch: int = knob(4, "train cases a parent runs on, and a child must beat it on, per round")
    failures_shown: int = knob(4, "failed traces shown to the proposer")
    merge_every: int = knob(5, "every Nth round merges two front candidates (0: never)")


def pareto_front(pool: list[Candidate], cases: tuple[Case, ...]) -> dict[Candidate, int]:
    """Each candidate that has the best score on at least one case -> on how many cases."""
    wins: dict[Candidate, int] = {}
    for case in cases:
        scored = [c for c in pool if case.id in c.scores]
        if not scored:
            continue
        top = max(c.scores[case.id] for c in scored)
        for cand in scored:
            if cand.scores[case.id] == top:
                wins[cand] = wins.get(cand, 0) + 1
    return wins


class Reflect(SearchStrategy):
    name: ClassVar[str] = "reflect"
    Knobs: ClassVar[type] = ReflectKnobs

    async def _search(self, problem: Problem, search: Search, rng: random.Random) -> str:
        from promptlab.optimizers.search import Plateau, minibatch

        k = self.knobs
        pool = [c for c in dict.fromkeys([search.start, search.base, search.naive])
                if c is not None and c.mean(problem.val) is not None]
        plateau = Plateau(k.patience, k.min_gain)
        plateau.update(search.best().mean(problem.val))
        for i in range(1, k.iterations + 1):
            search.next_iteration()
            front = pareto_front(pool, problem.val)
            batch = minibatch(problem.train, k.minibatch, rng)
            if k.merge_every and i % k.merge_every == 0 and len(front) >= 2:
                parent, child = await self._merge(search, front, rng)
            else:
                parent = self._sample(front, rng)
                await search.evaluate([parent], "train", batch)
                if not parent.failures(batch):
                    plateau.update(None)
                    if plateau.stopped:
                        return f"plateau: {k.patience} rounds without a gain"
                    continue
                child = await self._mutate(search, parent, batch, rng)
            if child is not None and child not in pool:
                await search.evaluate([parent, child], "train", batch)
                gate = [c for c in child.eligible(batch) if c in parent.eligible(batch)]
                if sum(child.scores[c.id] for c in gate) > sum(parent.scores[c.id] for c in gate):
                    await search.evaluate([child], "val")
                    pool.append(child)
                else:
                    search.note("reflect_gate", ref=child.prompt.ref, parent=parent.prompt.ref, passed=False)
            plateau.update(search.best().mean(problem.val))
            if plateau.stopped:
                return f"plateau: {k.patience} rounds without a gain"
            if search.best().mean(problem.val) >= 1.0:
                return "done: perfect val score"
        return f"done: {k.iterations} rounds"

    @staticmethod
    def _sample(front: dict[Candidate, int], rng: random.Random) -> Candidate:
        ranked = sorted(front, key=lambda c: c.id)  # a stable order for the seeded draw
        return rng.choices(ranked, weights=[front[c] for c in ranked])[0]

    async def _mutate(self, search: Search, parent: Candidate, batch: list[Case],
                      rng: random.Random) -> Candidate | None:
        from promptlab.optimizers import edits
        from promptlab.optimizers import operators as ops
        from promptlab.optimizers.search import demo_pool

        failures = parent.failures(batch)
        shown = failures if len(failures) <= self.knobs.failures_shown else rng.sample(
            failures, self.knobs.failures_shown)
        traces = [(case, got, parent.feedback.get(case.id, "")) for case, got in shown]
        current = parent.content.system
        obj = await search.propose("reflect", ops.reflect_messages(search.problem.signature, current, traces),
                                   lambda o: ops.validate_instruction(o, current))
        if obj is not None:
            return search.candidate(ops.with_system(parent.content, obj["instruction"].strip()), parent,
                                    "reflect", str(obj.get("rationale") or "")[:200])
        pool = demo_pool(search)
        failed = [ops.demo_from_case(c, search.problem.signature) for c, _ in shown]
        options = [op for op in edits.MODEL_FREE if op != "knn"]
        rng.shuffle(options)
        # the proposer gave nothing usable: one model-free edit instead, per-input demos first
        # (the edit that changes what every input is shown without a model writing anything)
        for op in ["knn"] + options:
            content = edits.model_free(op, parent.content, search, rng, pool=pool, failed=failed)
            if content is not None and search.known(content) is None:
                return search.candidate(content, parent, op, "the proposer's reflection was unusable")
        return None

    async def _merge(self, search: Search, front: dict[Candidate, int],
                     rng: random.Random) -> tuple[Candidate, Candidate | None]:
        """Two front candidates best on different val cases: instructions combined, demos crossed."""
        from promptlab.optimizers import edits
        from promptlab.optimizers import operators as ops

        val = search.problem.val
        ranked = sorted(front, key=lambda c: (-front[c], c.id))
        a = ranked[0]
        others = [b for b in ranked[1:] if any(b.scores.get(c.id, 0.0) > a.scores.get(c.id, 0.0) for c in val)]
        if not others:
            return a, None
        b = rng.choice(others)
        system = await edits.combine(search, a, b) or a.content.system
        demos = ops.crossover_demos(a.content, b.content, rng, search.knobs.max_demos)
        content = ops.with_system(ops.with_demos(a.content, demos), system)
        return a, search.candidate(content, a, "merge", f"with {b.prompt.ref}")
