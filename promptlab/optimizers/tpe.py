"""Optuna's TPE sampler as the joint searches (`mipro`, `params`) use it: one seeded study that
the strategy asks for a configuration and tells its score. The evaluations stay the search's
(cached, budgeted, resumable): the same seed and the same scores replay the same draws.

The first trials, before TPE models the scores, are a space-filling design rather than
random draws (`enqueue_spread`: a Latin hypercube over the dimensions), so a narrow good
region of one parameter, or one option of a few, is not missed by chance.

Optuna is an optional dependency (``pip install 'promptlab[optuna]'``), imported only when
such a strategy is checked or run.
"""

from __future__ import annotations

import random
from typing import Any

from promptlab.errors import UsageError

INSTALL_HINT = "pip install 'promptlab[optuna]'"


def load_optuna(strategy: str) -> Any:
    """The optuna module, quiet; a one-line UsageError naming the extra when it is missing."""
    try:
        import optuna
    except ImportError:
        raise UsageError(f"strategy '{strategy}' needs Optuna, which is not installed: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_study(strategy: str, rng: random.Random, startup_trials: int) -> Any:
    """A maximizing study whose TPE sampler is seeded from the search's rng."""
    optuna = load_optuna(strategy)
    sampler = optuna.samplers.TPESampler(seed=rng.randrange(2**31), n_startup_trials=max(1, startup_trials))
    return optuna.create_study(direction="maximize", sampler=sampler)


def enqueue_spread(study: Any, values: dict[str, list[Any]], n: int, rng: random.Random) -> None:
    """Queue n first trials: each dimension's n `values` (spread over its range, or its options in
    turn) in an order shuffled per dimension, so every pair of dimensions mixes."""
    columns = {}
    for name, column in values.items():
        column = list(column)[:n]
        rng.shuffle(column)
        columns[name] = column
    for i in range(n):
        study.enqueue_trial({name: column[i] for name, column in columns.items() if i < len(column)})


def cycled(options: list[Any], n: int) -> list[Any]:
    """n values taking the options in turn (each appears n / len(options) times, give or take one)."""
    return [options[i % len(options)] for i in range(n)] if options else []


def fail(study: Any, trial: Any) -> None:
    """Tell the study a trial gave no admissible candidate (the sampler then ignores it)."""
    study.tell(trial, state=load_optuna("").trial.TrialState.FAIL)
