"""genetic — a population of prompts evolved on val minibatches.

The first population is the base (and the naive k-shot version, if better) plus
variants carrying random label-balanced demo sets, or (`knn_rate`) the k train
cases nearest to each input; some state the output format. Every generation scores the
population on a fresh val minibatch (fitness = mean over every val case scored
so far), keeps the `elite` best, and breeds the rest: tournament selection,
crossover (uniform over the parents' demos; the instruction from one parent,
or merged by the proposer with probability `llm_rate`) and mutation (add,
swap, drop or shuffle demos, GrIPS phrase edits, state the format, or a
proposer paraphrase with probability `llm_rate`). After the last generation the
`final_top` fittest (and then any whose estimate still beats the best full
score, while the budget lasts) are scored on the whole val split and the winner is picked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from promptlab.optimizers.base import CommonKnobs, Problem, knob
from promptlab.optimizers.strategy import SearchStrategy

if TYPE_CHECKING:
    from promptlab.optimizers.evaluator import Candidate
    from promptlab.optimizers.search import Search


@dataclass(frozen=True)
class GeneticKnobs(CommonKnobs):
    patience: int = knob(3, "stop after this many generations without a fitter best")
    population: int = knob(8, "prompts per generation")
    generations: int = knob(12, "most generations")
    elite: int = knob(2, "best prompts carried over unchanged")
    tournament: int = knob(3, "contestants per tournament selection")
    crossover_rate: float = knob(0.7, "chance a child has two parents")
    mutation_rate: float = knob(0.9, "chance a child is mutated")
    llm_rate: float = knob(0.15, "chance a crossover or mutation is written by the proposer")
    minibatch: int = knob(20, "val cases added to the fitness per generation (0: all of val)")
    final_top: int = knob(3, "fittest prompts scored on the whole val split at the end")
    knn_rate: float = knob(0.25, "chance an initial variant picks its demos per input (the k nearest train cases)")


class Genetic(SearchStrategy):
    name: ClassVar[str] = "genetic"
    Knobs: ClassVar[type] = GeneticKnobs

    async def _settle(self, problem: Problem, search: Search) -> None:
        """The fittest get a full val score: the top `final_top`, then any whose estimate
        still beats the best full score, while the budget lasts."""
        for i, cand in enumerate(search.top(len(search.candidates))):
            best = search.best()
            if i >= self.knobs.final_top and best is not None and \
                    (cand.estimate(problem.val) or 0.0) <= (best.mean(problem.val) or 0.0):
                break
            await search.evaluate([cand], "val")

    async def _search(self, problem: Problem, search: Search, rng: random.Random) -> str:
        from promptlab.optimizers import edits
        from promptlab.optimizers import operators as ops
        from promptlab.optimizers.search import Plateau, demo_pool, minibatch

        k = self.knobs
        pool = demo_pool(search)
        size = max(2, k.population)
        batch_size = k.minibatch if k.minibatch > 0 else len(problem.val)
        reserve = k.final_top * len(problem.val)
        fitness = lambda c: c.estimate(problem.val)  # noqa: E731

        population: list[Candidate] = list(dict.fromkeys([search.start, search.base]))
        tries = 0
        while len(population) < size and tries < size * 5:
            tries += 1
            shots = ops.sample_demos(pool, rng.randint(1, k.max_demos), rng)
            content = ops.with_demos(search.base.content, shots)
            if rng.random() < k.knn_rate:
                content = ops.with_knn(search.base.content, [c.id for c in problem.train], len(shots),
                                       rng.random() < 0.5, k.embedding_model)
            if rng.random() < 0.5:
                content = ops.state_format(content, problem.signature) or content
            cand = search.candidate(content, search.base, "init", f"{len(shots)} random demos")
            if cand is not None and cand not in population:
                population.append(cand)

        plateau = Plateau(k.patience, k.min_gain)
        for generation in range(k.generations):
            search.next_iteration()
            batch = minibatch(problem.val, batch_size, rng)
            cost = sum(len([c for c in p.eligible(batch) if c.id not in p.scores]) for p in population)
            if not search.ledger.fits(cost + reserve):
                return "budget: kept the rest for the final val scoring"
            await search.evaluate(population, "val", batch)
            ranked = sorted(population, key=lambda c: (fitness(c) or 0.0, search.rank_key(c)), reverse=True)
            plateau.update(fitness(ranked[0]))
            if plateau.stopped:
                return f"plateau: {k.patience} generations without a fitter best"
            if generation == k.generations - 1:
                break
            children: list[Candidate] = ranked[:max(0, min(k.elite, size))]
            attempts = 0
            while len(children) < size and attempts < size * 6:
                attempts += 1
                a = self._select(ranked, fitness, rng)
                content, op = a.content, "copy"
                if rng.random() < k.crossover_rate:
                    b = self._select([c for c in ranked if c is not a] or ranked, fitness, rng)
                    demos = ops.crossover_demos(a.content, b.content, rng, k.max_demos)
                    system = rng.choice([a.content.system, b.content.system])
                    if rng.random() < k.llm_rate:
                        system = await edits.combine(search, a, b) or system
                    content, op = ops.with_system(ops.with_demos(a.content, demos), system), "crossover"
                if rng.random() < k.mutation_rate:
                    mutated = None
                    if rng.random() < k.llm_rate:
                        written = await edits.paraphrase(search, a)
                        mutated = None if written is None else ops.with_system(content, written[0].system)
                        op = "paraphrase" if mutated is not None else op
                    if mutated is None:
                        mop = rng.choice(edits.MODEL_FREE)
                        mutated = edits.model_free(mop, content, search, rng, pool=pool)
                        op = f"{op}+{mop}" if op != "copy" and mutated is not None else (mop if mutated is not None else op)
                    content = mutated or content
                child = search.candidate(content, a, op)
                if child is not None and child not in children:
                    children.append(child)
            population = children
        return f"done: {k.generations} generations"

    def _select(self, ranked: list[Candidate], fitness, rng: random.Random) -> Candidate:
        contestants = rng.sample(ranked, min(self.knobs.tournament, len(ranked)))
        return max(contestants, key=lambda c: (fitness(c) or 0.0, -ranked.index(c)))
