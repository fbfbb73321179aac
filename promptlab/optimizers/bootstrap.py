"""bootstrap — few-shot by bootstrapping (BootstrapFewShotWithRandomSearch-style).

1. A teacher (the base prompt, given `teacher_demos` labeled demos) runs on
   train; the cases it gets right are the bootstrapped traces.
2. Random search on val over demo sets: each candidate carries k demos
   (min_demos..max_demos), a `bootstrapped_share` of them from the passing
   traces and the rest labeled train cases, label-balanced and shuffled (or,
   with `knn_rate`, the k train cases nearest to each input); some
   state the output format, and every `rewrite_every`-th one gets an
   instruction written by the proposer from the teacher's train failures. They
   decode as the search's start does (structured or not, whichever won on val).
3. Stop when the candidates run out, the budget does, or `patience` candidates
   in a row bring no gain.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from promptlab.optimizers.base import CommonKnobs, Problem, knob
from promptlab.optimizers.strategy import SearchStrategy

if TYPE_CHECKING:
    from promptlab.models import Demo
    from promptlab.optimizers.evaluator import Candidate
    from promptlab.optimizers.search import Search


@dataclass(frozen=True)
class BootstrapKnobs(CommonKnobs):
    patience: int = knob(8, "stop after this many candidates in a row without a gain")
    candidates: int = knob(24, "demo sets to try on val")
    min_demos: int = knob(4, "fewest demos in a candidate")
    teacher_demos: int = knob(4, "labeled demos the teacher prompt gets (0: the base prompt teaches)")
    bootstrapped_share: float = knob(0.5, "share of each demo set taken from passing teacher traces")
    format_rate: float = knob(0.5, "chance a candidate also states the output format (for labels: the set, another order, or described)")
    rewrite_every: int = knob(4, "every Nth candidate gets a proposer-written instruction (0: never)")
    knn_rate: float = knob(0.25, "chance a candidate picks its demos per input (the k nearest train cases)")


async def teach(search: Search, labeled: list[Demo], teacher_demos: int,
                rng: random.Random) -> tuple[Candidate, list[Demo]]:
    """The teacher (the base with `teacher_demos` labeled demos, or the base itself) scored on
    train, and the train cases it gets right as demos: the bootstrapped traces."""
    from promptlab.optimizers import operators as ops

    base, problem = search.base, search.problem
    teacher = base
    if teacher_demos > 0:
        shots = ops.sample_demos(labeled, min(teacher_demos, search.knobs.max_demos), rng)
        teacher = search.candidate(ops.with_demos(base.content, shots), base, "labeled",
                                   f"teacher with {len(shots)} labeled demos") or base
    await search.evaluate([teacher], "train")
    passing = [ops.demo_from_case(c, problem.signature) for c in problem.train
               if teacher.scores.get(c.id, 0.0) >= 1.0]
    search.note("bootstrap", passing=len(passing), teacher=teacher.prompt.ref)
    return teacher, passing


def demo_set(passing: list[Demo], labeled: list[Demo], size: int, share: float,
             rng: random.Random) -> tuple[list[Demo], int]:
    """`size` demos, a `share` of them bootstrapped traces (as many as there are) and the rest
    labeled train cases, label-balanced and shuffled; (the demos, how many are bootstrapped)."""
    from promptlab.optimizers import operators as ops

    n_boot = min(len(passing), round(size * share))
    demos = list(ops.sample_demos(passing, n_boot, rng))
    demos += ops.sample_demos(labeled, size - len(demos), rng, exclude=demos)
    rng.shuffle(demos)
    return demos, n_boot


class Bootstrap(SearchStrategy):
    name: ClassVar[str] = "bootstrap"
    Knobs: ClassVar[type] = BootstrapKnobs

    async def _search(self, problem: Problem, search: Search, rng: random.Random) -> str:
        from promptlab.optimizers import edits
        from promptlab.optimizers import operators as ops
        from promptlab.optimizers.search import Plateau, demo_pool

        k = self.knobs
        base = search.base
        root = base.content  # what candidates are made from: decoded as the start is (it won on val)
        if search.start.content.structured != root.structured:
            root = ops.toggle_structured(root)
        labeled = demo_pool(search)
        await search.evaluate([base], "val")
        plateau = Plateau(k.patience, k.min_gain)
        plateau.update(search.start.mean(problem.val))  # the base, or naive k-shot if better

        search.next_iteration()
        teacher, passing = await teach(search, labeled, k.teacher_demos, rng)
        failures = teacher.failures(problem.train)
        if teacher is not base:
            await search.evaluate([teacher], "val")
            plateau.update(search.best().mean(problem.val))

        instruction: str | None = None
        for i in range(k.candidates):
            search.next_iteration()
            size = rng.randint(min(k.min_demos, k.max_demos), k.max_demos)
            demos, n_boot = demo_set(passing, labeled, size, k.bootstrapped_share, rng)
            content = ops.with_demos(root, demos)
            operator, note = "bootstrap", f"{n_boot} bootstrapped + {len(demos) - n_boot} labeled demos"
            if rng.random() < k.knn_rate:
                content = ops.with_knn(root, [c.id for c in problem.train], max(1, size),
                                       rng.random() < 0.5, k.embedding_model)
                operator, note = "knn", f"the {size} nearest train cases as demos"
            if k.rewrite_every and i % k.rewrite_every == k.rewrite_every - 1:
                written = await edits.rewrite(search, teacher, failures, rng)
                if written is not None:
                    instruction = written[0].system
            if instruction is not None and rng.random() < 0.5:
                content, operator = ops.with_system(content, instruction), "bootstrap+rewrite"
            if rng.random() < k.format_rate:  # for a classifier, one way of stating the labels
                verbalized = ops.verbalizer_edit(content, problem.signature, problem.train, rng)
                content = verbalized[0] if verbalized else ops.state_format(content, problem.signature) or content
            cand = search.candidate(content, base, operator, note)
            if cand is None or cand.mean(problem.val) is not None:
                continue
            await search.evaluate([cand], "val")
            plateau.update(search.best().mean(problem.val))
            if plateau.stopped:
                return f"plateau: {k.patience} candidates without a gain"
            if search.best().mean(problem.val) >= 1.0:
                return "done: perfect val score"
        return "done: every candidate tried"
