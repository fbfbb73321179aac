"""The shape the built-in strategies share over the search machinery (light: `--help` lists their
knobs without importing the machinery, which imports the evaluation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

from promptlab.optimizers.base import BudgetExhausted, OptimizationResult, Problem

if TYPE_CHECKING:
    import random

    from promptlab.optimizers.evaluator import Candidate
    from promptlab.optimizers.search import Search


class SearchStrategy:
    """The shape the built-in strategies share: search until a stop or the end of the
    budget, let the finalists settle (full val scores), then finish the search."""

    name: ClassVar[str]
    Knobs: ClassVar[type]

    def __init__(self, knobs: Any = None):
        self.knobs = knobs or self.Knobs()

    def check_ready(self) -> None:
        """Raise UsageError if something this strategy needs is missing (before anything is written)."""

    async def optimize(self, problem: Problem, search: Search, rng: random.Random) -> OptimizationResult:
        if (search.start.mean(problem.val) or 0.0) >= 1.0:  # nothing left to gain on val
            return await search.finish("done: perfect val score", self._eligible(search))
        try:
            stopped = await self._search(problem, search, rng)
        except BudgetExhausted as exc:
            stopped = f"budget: {exc}"
        try:
            await self._settle(problem, search)
        except BudgetExhausted:
            pass
        return await search.finish(stopped, self._eligible(search))

    def _eligible(self, search: Search) -> Callable[[Candidate], bool] | None:
        """Which candidates may win (None: any)."""
        return None

    async def _search(self, problem: Problem, search: Search, rng: random.Random) -> str:
        """Run the strategy; return why it stopped."""
        raise NotImplementedError

    async def _settle(self, problem: Problem, search: Search) -> None:
        """Give the most promising candidates a full val score (nothing by default)."""
