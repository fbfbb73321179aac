"""mipro — instructions and demos searched jointly with a TPE surrogate (DSPy's MIPROv2-style).

1. Instruction candidates: the base's own; model-free variants (the output format
   stated, for a classifier each verbalizer statement of the labels); and up to
   `instructions` written by the proposer, each grounded in a summary of the
   train data, the signature, the base instruction, `examples_shown` train
   examples and a tip (DSPy's "grounded proposer"). A weak proposer's unusable
   replies only cost their calls: the model-free variants carry the search.
2. Demo candidates: the base's demos (none, for a zero-shot base); fixed demo
   sets — the naive k-shot draw, and `demo_sets` more of `min_demos`..`max_demos`
   demos mixing traces bootstrapped by a teacher on train with labeled train cases
   (the shares vary from all-bootstrapped to all-labeled); and per-input kNN
   selectors over train (k = half and all of `max_demos`, plain and
   label-balanced).
3. The joint search: Optuna's TPE sampler (seeded from the search's seed) picks an
   instruction, a demo set and a selector (``fixed``: the demo set; a kNN selector
   replaces it) per trial, the first `startup_trials` taking each dimension's
   options in turn (shuffled per dimension, so they mix); the configuration
   is a candidate scored on a fresh val minibatch of `minibatch` cases and the
   sampler is told its mean over every val case scored so far.
4. Every `confirm_every` trials, and at the end, the `confirm` best configurations
   by that estimate are scored on the whole val split (calls for the last round are
   kept back from the trials). Stop after `trials`, on the budget, or after
   `patience` rounds of confirmation without a better val score.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

from promptlab.optimizers.base import CommonKnobs, KnobError, Problem, knob
from promptlab.optimizers.strategy import SearchStrategy

if TYPE_CHECKING:
    from promptlab.models import PromptContent
    from promptlab.optimizers.search import Search

FIXED = "fixed"


@dataclass(frozen=True)
class MiproKnobs(CommonKnobs):
    patience: int = knob(3, "stop after this many rounds of confirmation without a better val score")
    instructions: int = knob(4, "instructions the proposer is asked to write")
    examples_shown: int = knob(3, "train examples shown to the proposer with each request")
    demo_sets: int = knob(6, "fixed demo sets bootstrapped and labeled (besides the naive k-shot draw)")
    min_demos: int = knob(4, "fewest demos in a demo set")
    teacher_demos: int = knob(4, "labeled demos the bootstrapping teacher gets (0: the base teaches)")
    knn: bool = knob(True, "offer per-input kNN demo selectors over train")
    trials: int = knob(30, "configurations the TPE sampler draws")
    startup_trials: int = knob(8, "of them taking each option in turn before TPE models the scores")
    minibatch: int = knob(10, "val cases a trial scores its configuration on (0: all of val)")
    confirm: int = knob(3, "best configurations scored on the whole val split per round")
    confirm_every: int = knob(10, "trials between rounds of confirmation (and one at the end)")

    def __post_init__(self) -> None:
        if self.trials < 1 or self.confirm < 1 or self.confirm_every < 1:
            raise KnobError("knobs 'trials', 'confirm' and 'confirm_every' must be at least 1")


@dataclass(frozen=True)
class Option:
    """One value of a search dimension: what it does to the content, and its name in notes."""

    label: str
    apply: Callable[[PromptContent], PromptContent]


class Mipro(SearchStrategy):
    name: ClassVar[str] = "mipro"
    Knobs: ClassVar[type] = MiproKnobs

    def check_ready(self) -> None:
        from promptlab.optimizers.tpe import load_optuna

        load_optuna(self.name)

    async def _search(self, problem: Problem, search: Search, rng: random.Random) -> str:
        from promptlab.optimizers import tpe
        from promptlab.optimizers.search import Plateau, minibatch

        k, base = self.knobs, search.base
        instructions = await self._instructions(problem, search, rng)
        demo_sets = await self._demo_sets(problem, search, rng)
        selectors = self._selectors(problem)
        search.note("mipro_space", instructions=len(instructions), demo_sets=len(demo_sets),
                    selectors=len(selectors))
        study = tpe.make_study(self.name, rng, k.startup_trials)
        n = min(k.startup_trials, k.trials)  # the first trials take every option of each dimension in turn
        tpe.enqueue_spread(study, {"instruction": tpe.cycled(list(range(len(instructions))), n),
                                   "selector": tpe.cycled(list(selectors), n),
                                   "demo_set": tpe.cycled(list(range(len(demo_sets))), n)}, n, rng)
        plateau = Plateau(k.patience, k.min_gain)
        plateau.update(search.best().mean(problem.val))
        # calls the last round of confirmation may need (its finalists have a minibatch scored)
        keep = k.confirm * max(0, len(problem.val) - k.minibatch) if k.minibatch > 0 else 0
        for i in range(1, k.trials + 1):
            search.next_iteration()
            if search.ledger.remaining is not None and search.ledger.remaining <= keep:
                return "budget: the rest is kept for confirming the best configurations"
            trial = study.ask()
            instruction = instructions[trial.suggest_categorical("instruction", list(range(len(instructions))))]
            selector = selectors[trial.suggest_categorical("selector", list(selectors))]
            demos = demo_sets[trial.suggest_categorical("demo_set", list(range(len(demo_sets))))]
            content = (selector or demos).apply(instruction.apply(base.content))
            parts = [instruction.label, selector.label if selector else demos.label]
            cand = search.candidate(content, base, "mipro", "; ".join(parts))
            if cand is None:
                tpe.fail(study, trial)
                continue
            await search.evaluate([cand], "val", minibatch(problem.val, k.minibatch, rng))
            estimate = cand.estimate(problem.val)
            if estimate is None:  # it carries every case drawn as a demo (train and val, one tiny pool)
                tpe.fail(study, trial)
            else:
                study.tell(trial, estimate)
            if i % k.confirm_every == 0:
                await self._settle(problem, search)
                plateau.update(search.best().mean(problem.val))
                if plateau.stopped:
                    return f"plateau: {k.patience} rounds of confirmation without a gain"
                if search.best().mean(problem.val) >= 1.0:
                    return "done: perfect val score"
        return f"done: {k.trials} trials"

    async def _settle(self, problem: Problem, search: Search) -> None:
        """The best configurations by their minibatch estimate, scored on the whole val split."""
        finalists = [c for c in search.top(self.knobs.confirm) if c.mean(problem.val) is None]
        if finalists:
            await search.evaluate(finalists, "val")

    async def _instructions(self, problem: Problem, search: Search, rng: random.Random) -> list[Option]:
        """The base's instruction, its model-free variants and the proposer's grounded proposals."""
        from promptlab.optimizers import operators as ops

        k, base = self.knobs, search.base.content
        systems = [(base.system, "base instruction")]
        stated = ops.state_format(base, problem.signature)
        if stated is not None:
            systems.append((stated.system, "format stated"))
        systems += [(c.system, f"labels: {name}")
                    for c, name, _ in ops.verbalizer_variants(base, problem.signature, problem.train)]
        summary = ops.dataset_summary(problem.train, problem.signature)
        for n in range(k.instructions if k.use_proposer else 0):
            examples = rng.sample(list(problem.train), min(k.examples_shown, len(problem.train)))
            tip = ops.PROPOSAL_TIPS[n % len(ops.PROPOSAL_TIPS)]
            obj = await search.propose("propose", ops.propose_messages(problem.signature, summary, base.system,
                                                                       examples, tip),
                                       lambda o: ops.validate_instruction(o, base.system))
            if obj is not None:
                systems.append((obj["instruction"].strip(), f"proposed ({tip.rstrip('.').lower()})"))
        unique: dict[str, str] = {}
        for system, label in systems:  # a text twice is one option, under its first label
            unique.setdefault(system, label)
        return [Option(label, lambda c, s=system: ops.with_system(c, s)) for system, label in unique.items()]

    async def _demo_sets(self, problem: Problem, search: Search, rng: random.Random) -> list[Option]:
        """The base's demos, the naive k-shot draw and bootstrapped/labeled sets of demos."""
        from promptlab.optimizers import operators as ops
        from promptlab.optimizers.bootstrap import demo_set, teach
        from promptlab.optimizers.search import demo_pool

        k = self.knobs
        options = [Option("base demos", lambda c: c)]
        if search.naive is not None:
            naive = search.naive.content.demos
            options.append(Option(f"naive {len(naive)}-shot", lambda c: ops.with_demos(c, naive)))
        if k.demo_sets <= 0 or k.max_demos <= 0 or not problem.train:
            return options
        labeled = demo_pool(search)
        _, passing = await teach(search, labeled, k.teacher_demos, rng)
        for n in range(k.demo_sets):
            share = 1.0 - n / max(1, k.demo_sets - 1)  # from all bootstrapped to all labeled
            size = rng.randint(min(k.min_demos, k.max_demos), k.max_demos)
            demos, n_boot = demo_set(passing, labeled, size, share, rng)
            if demos:
                options.append(Option(f"{n_boot} bootstrapped + {len(demos) - n_boot} labeled demos",
                                      lambda c, d=tuple(demos): ops.with_demos(c, d)))
        return options

    def _selectors(self, problem: Problem) -> dict[str, Option | None]:
        """`fixed` (the demo set decides) and per-input kNN selectors over train."""
        from promptlab.optimizers import operators as ops

        k = self.knobs
        out: dict[str, Option | None] = {FIXED: None}
        pool = [c.id for c in problem.train]
        if not k.knn or not pool or k.max_demos < 1:
            return out
        for size in sorted({max(1, k.max_demos // 2), k.max_demos}):
            for balance in (False, True):
                label = f"knn k={size}" + (" balanced" if balance else "")
                out[label] = Option(f"the {size} nearest train cases" + (", label-balanced" if balance else ""),
                                    lambda c, n=size, b=balance: ops.with_knn(c, pool, min(n, len(pool)), b,
                                                                              k.embedding_model))
        return out
