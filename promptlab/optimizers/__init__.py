"""Optimizers: one protocol (`base.Strategy`), shared machinery (`search.Search`), one file per strategy.

The registry maps names to classes; built-ins register the same way an
extension would. Importing this package is cheap (every start of the CLI does, for
the strategy names); `base` and the strategy modules load when a strategy or its
knobs are asked for, and their heavy imports only inside `optimize`.
"""

from __future__ import annotations

import importlib
from typing import Any

STRATEGIES: dict[str, str] = {
    "iterative": "promptlab.optimizers.iterative:Iterative",
    "bootstrap": "promptlab.optimizers.bootstrap:Bootstrap",
    "genetic": "promptlab.optimizers.genetic:Genetic",
    "mcts": "promptlab.optimizers.mcts:Mcts",
    "reflect": "promptlab.optimizers.reflect:Reflect",
    "mipro": "promptlab.optimizers.mipro:Mipro",
    "params": "promptlab.optimizers.params:Params",
}


class UnknownStrategyError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(name: str, target: str) -> None:
    """Add a strategy: name -> 'module:Class' (the class matches `base.Strategy`)."""
    STRATEGIES[name] = target


def strategy_class(name: str) -> type:
    if name not in STRATEGIES:
        raise UnknownStrategyError(f"unknown strategy '{name}' (strategies: {', '.join(STRATEGIES)})")
    module, _, attr = STRATEGIES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def get_strategy(name: str, knobs: dict[str, Any] | None = None) -> Any:
    """A strategy instance with its knobs set (KnobError / UnknownStrategyError on bad input)."""
    from promptlab.optimizers.base import make_knobs

    cls = strategy_class(name)
    return cls(make_knobs(cls.Knobs, knobs))


def knob_help() -> str:
    """Every knob with its default and what it does: the common ones once, then each strategy's own."""
    from promptlab.optimizers.base import CommonKnobs, knob_fields

    common = knob_fields(CommonKnobs)
    lines = ["every strategy:"] + [f"  {n}={d!r}: {h}" for n, _, d, h in common]
    shared = {(n, d) for n, _, d, _ in common}
    for name in STRATEGIES:
        own = [f"  {n}={d!r}: {h}" for n, _, d, h in knob_fields(strategy_class(name).Knobs)
               if (n, d) not in shared]
        lines += [f"{name}:"] + own
    return "\n".join(lines)


__all__ = ["STRATEGIES", "UnknownStrategyError", "get_strategy", "knob_help", "register",
           "strategy_class"]
