"""iterative — analyse failures on train, propose revisions, keep the best.

It starts from the better of the base and the naive k-shot version. Each
iteration scores the current best prompt on train (or a train minibatch),
collects the cases it fails, and proposes `candidates_per_iter` revisions:

- the proposer rewrites the instruction from those failures (structured JSON:
  rationale, instruction, demos to add; validated and re-asked);
- error-driven demos: failed train cases added as few-shot demos, label-balanced;
- further model-free edits (state the output format, swap or drop a demo,
  GrIPS phrase edits) fill the remaining slots — and replace the proposer's
  revision when its reply is useless.

The revisions are scored on val; the best replaces the current prompt if it
beats it by more than `min_gain`. Stop after `iterations`, on the budget, or
after `patience` iterations without a gain.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from promptlab.optimizers.base import CommonKnobs, Problem, knob
from promptlab.optimizers.strategy import SearchStrategy

if TYPE_CHECKING:
    from promptlab.optimizers.search import Search


@dataclass(frozen=True)
class IterativeKnobs(CommonKnobs):
    iterations: int = knob(20, "most revise-and-evaluate rounds")
    candidates_per_iter: int = knob(2, "revisions scored on val per round")
    demos_per_step: int = knob(2, "failed cases added as demos by one edit")
    train_batch: int = knob(0, "train cases analysed per round (0: all of train)")
    failures_shown: int = knob(5, "failures shown to the proposer")


class Iterative(SearchStrategy):
    name: ClassVar[str] = "iterative"
    Knobs: ClassVar[type] = IterativeKnobs

    async def _search(self, problem: Problem, search: Search, rng: random.Random) -> str:
        from promptlab.optimizers import edits
        from promptlab.optimizers import operators as ops
        from promptlab.optimizers.search import Plateau, demo_pool, minibatch

        k = self.knobs
        pool = demo_pool(search)
        best = search.start  # the better of the base and naive k-shot
        await search.evaluate([best], "val")
        plateau = Plateau(k.patience, k.min_gain)
        plateau.update(best.mean(problem.val))
        for _ in range(k.iterations):
            search.next_iteration()
            batch = minibatch(problem.train, k.train_batch, rng)
            await search.evaluate([best], "train", batch)
            failures = best.failures(batch)
            shown = failures if len(failures) <= k.failures_shown else rng.sample(failures, k.failures_shown)
            failed = [ops.demo_from_case(c, problem.signature) for c, _ in shown]

            proposals: list[tuple[object, str, str]] = []
            if failures:
                written = await edits.rewrite(search, best, failures, rng, k.failures_shown)
                if written is not None:
                    proposals.append((written[0], "rewrite", written[1]))
            add = edits.model_free("add_demos", best.content, search, rng, pool=pool, failed=failed,
                                   n=k.demos_per_step)
            if add is not None:
                proposals.append((add, "add_demos", f"{len(failed)} failed train cases offered"))
            fillers = list(edits.MODEL_FREE[1:])
            rng.shuffle(fillers)
            for op in fillers:
                if len(proposals) >= k.candidates_per_iter:
                    break
                content = edits.model_free(op, best.content, search, rng, pool=pool, failed=failed)
                if content is not None and search.known(content) is None:
                    proposals.append((content, op, ""))
            cands = [c for content, op, note in proposals[:max(1, k.candidates_per_iter)]
                     if (c := search.candidate(content, best, op, note)) is not None]
            cands = [c for c in dict.fromkeys(cands) if c.mean(problem.val) is None]
            if not cands:
                plateau.update(None)
                if plateau.stopped:
                    return "plateau: no new revision to try"
                continue
            await search.evaluate(cands, "val")
            top = max(cands, key=search.rank_key)
            if top.mean(problem.val) > best.mean(problem.val) + k.min_gain:
                best = top
            plateau.update(best.mean(problem.val))
            if plateau.stopped:
                return f"plateau: {k.patience} rounds without a gain"
            if best.mean(problem.val) >= 1.0:
                return "done: perfect val score"
        return f"done: {k.iterations} rounds"
