"""params — a search over the model parameters a version carries (Opik's ParameterOptimizer-style).

The base's text, demos and selector stay as they are; only its ``params`` change.

1. The space: `params` names the parameters searched with their default ranges
   (temperature 0..1.5 by 0.1, top_p 0.5..1 by 0.05, max_tokens among half, one,
   two and four times the base's), and `space` declares others or other ranges
   (`parse_space`: ``NAME:LOW..HIGH``, ``NAME:LOW..HIGH/STEP``, ``NAME:log:LOW..HIGH``,
   ``NAME:A|B|C``, ``;``-separated).
2. Optuna's TPE sampler (seeded from the search's seed) draws `trials`
   configurations, the first `startup_trials` a Latin hypercube over the space
   (each parameter's range cut in that many slices, one value from each, so a
   narrow good band is not missed by chance); each is a candidate
   version (the base with those params) scored on the whole val split. A
   configuration that samples (temperature above 0, or not set and so the
   provider's default) is scored `repeats` times per case, by the mean; so is the
   base when it samples, so one lucky draw is not taken for a lift.
3. Stop after `trials`, on the budget, or after `patience` trials without a better
   val score (counted once the spread is tried). Only a version that differs from
   the base in nothing but its params may win.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from promptlab.optimizers.base import CommonKnobs, KnobError, Problem, knob
from promptlab.optimizers.strategy import SearchStrategy

if TYPE_CHECKING:
    from promptlab.optimizers.evaluator import Candidate
    from promptlab.optimizers.search import Search

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INTEGER = re.compile(r"-?\d+\Z")
SPACE_SYNTAX = ("NAME:LOW..HIGH (a float range), NAME:LOW..HIGH/STEP (a grid; integers if all three "
                "are), NAME:log:LOW..HIGH (log-scaled), NAME:A|B|C (choices); entries separated by ';'")


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: a float or int range (maybe stepped or log-scaled), or choices."""

    name: str
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return round(trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log), 6)

    def spread(self, n: int) -> list[Any]:
        """n values covering the dimension: the middles of n equal slices of the range (on its
        grid, on a log scale if it is one), or the choices in turn."""
        from promptlab.optimizers.tpe import cycled

        if self.choices:
            return cycled(list(self.choices), n)
        out = []
        for i in range(n):
            q = (i + 0.5) / n
            value = self.low * (self.high / self.low) ** q if self.log else self.low + q * (self.high - self.low)
            if self.step:
                value = self.low + round((value - self.low) / self.step) * self.step
                value = min(value, self.low + ((self.high - self.low) // self.step) * self.step)
            out.append(int(round(value)) if self.integer else round(value, 6))
        return out


def parse_space(text: str) -> tuple[Dimension, ...]:
    """The `space` knob's entries (see SPACE_SYNTAX); KnobError naming the entry otherwise."""
    dims: dict[str, Dimension] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        name, sep, spec = (part.strip() for part in entry.partition(":"))
        if not sep or not _NAME.match(name) or not spec:
            raise KnobError(f"knob 'space': '{entry}' is not NAME:SPEC; write {SPACE_SYNTAX}")
        dims[name] = _dimension(name, spec, entry)
    return tuple(dims.values())


def _dimension(name: str, spec: str, entry: str) -> Dimension:
    def bad(why: str) -> KnobError:
        return KnobError(f"knob 'space': '{entry}': {why}; write {SPACE_SYNTAX}")

    if "|" in spec:
        choices = tuple(_scalar(c.strip()) for c in spec.split("|"))
        if any(c == "" for c in choices) or len(set(map(json.dumps, choices))) != len(choices):
            raise bad("choices must be distinct and not empty")
        return Dimension(name, choices=choices)
    log = spec.startswith("log:")
    bounds = spec[4:] if log else spec
    low_text, dots, rest = bounds.partition("..")
    high_text, slash, step_text = rest.partition("/")
    try:
        low, high = float(low_text), float(high_text)
        step = float(step_text) if slash else None
    except ValueError:
        raise bad("bounds must be numbers") from None
    if not dots or low >= high:
        raise bad("a range needs LOW..HIGH with LOW < HIGH")
    if step is not None and step <= 0:
        raise bad("the step must be above 0")
    if log and (low <= 0 or step is not None):
        raise bad("a log range needs LOW > 0 and no step")
    integer = step is not None and all(_INTEGER.match(t.strip()) for t in (low_text, high_text, step_text))
    return Dimension(name, low, high, step, log, integer)


def _scalar(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, (str, int, float, bool)) or value is None else text


def default_dimension(name: str, current: dict[str, Any]) -> Dimension | None:
    """The default space of a parameter promptlab knows (None for others)."""
    if name == "temperature":
        return Dimension(name, 0.0, 1.5, 0.1)
    if name == "top_p":
        return Dimension(name, 0.5, 1.0, 0.05)
    if name == "max_tokens":
        base = current.get("max_tokens")
        if isinstance(base, int) and not isinstance(base, bool) and base > 0:
            return Dimension(name, choices=tuple(sorted({max(1, base // 2), base, 2 * base, 4 * base})))
        return Dimension(name, choices=(64, 256, 1024))
    return None


@dataclass(frozen=True)
class ParamsKnobs(CommonKnobs):
    patience: int = knob(8, "stop after this many trials in a row without a better val score")
    trials: int = knob(24, "parameter configurations the TPE sampler draws")
    startup_trials: int = knob(8, "of them spread over the space (a Latin hypercube) before TPE models the scores")
    params: str = knob("temperature,top_p,max_tokens", "parameters searched in their default spaces, "
                       "comma-separated ('': only those declared in space)")
    space: str = knob("", "parameters declared or re-ranged: " + SPACE_SYNTAX)
    repeats: int = knob(3, "samples per val case of a configuration that samples (temperature above 0 "
                        "or unset), scored by their mean")

    def __post_init__(self) -> None:
        declared = {d.name for d in parse_space(self.space)}
        for name in self.names:
            if name not in declared and default_dimension(name, {}) is None:
                raise KnobError(f"knob 'params': '{name}' has no default space; declare it with "
                                f"--knob space='{name}:LOW..HIGH'")
        if not self.names and not declared:
            raise KnobError("knob 'params': nothing to search; name parameters or declare them in space")
        if self.repeats < 1 or self.trials < 1:
            raise KnobError("knobs 'repeats' and 'trials' must be at least 1")

    @property
    def names(self) -> list[str]:
        return [n.strip() for n in self.params.split(",") if n.strip()]


def samples(problem: Problem, params: dict[str, Any], repeats: int) -> int:
    """How many samples per case a configuration needs: `repeats` if it samples (a temperature
    above 0, or none set here nor on the model, so the provider's default), else one."""
    temperature = params.get("temperature", problem.task_model.params.get("temperature"))
    return 1 if isinstance(temperature, (int, float)) and temperature <= 0 else repeats


class Params(SearchStrategy):
    name: ClassVar[str] = "params"
    Knobs: ClassVar[type] = ParamsKnobs

    def check_ready(self) -> None:
        from promptlab.optimizers.tpe import load_optuna

        load_optuna(self.name)

    def dimensions(self, current: dict[str, Any]) -> list[Dimension]:
        declared = {d.name: d for d in parse_space(self.knobs.space)}
        named = [declared.pop(n, None) or default_dimension(n, current) for n in self.knobs.names]
        return [d for d in named if d is not None] + list(declared.values())

    async def _search(self, problem: Problem, search: Search, rng: random.Random) -> str:
        from promptlab.optimizers import tpe
        from promptlab.optimizers.search import Plateau

        k, base = self.knobs, search.base
        current = {**problem.task_model.params, **base.content.params}
        dims = self.dimensions(current)
        base.repeats = samples(problem, base.content.params, k.repeats)
        await search.evaluate([base], "val")  # a base that samples is scored as often as its rivals
        plateau = Plateau(k.patience, k.min_gain)
        plateau.update(base.mean(problem.val))
        study = tpe.make_study(self.name, rng, k.startup_trials)
        tpe.enqueue_spread(study, {d.name: d.spread(k.startup_trials) for d in dims}, k.startup_trials, rng)
        for i in range(1, k.trials + 1):
            search.next_iteration()
            trial = study.ask()
            values = {d.name: d.suggest(trial) for d in dims}
            params = {**base.content.params, **values}
            cand = search.candidate(base.content.model_copy(update={"params": params}), base, "params",
                                    ", ".join(f"{n}={v}" for n, v in values.items()))
            if cand is None:
                tpe.fail(study, trial)
                continue
            cand.repeats = samples(problem, params, k.repeats)
            await search.evaluate([cand], "val")
            score = cand.mean(problem.val)
            if score is None:  # it carries every val case as a demo (train and val, one tiny pool)
                tpe.fail(study, trial)
                continue
            study.tell(trial, score)
            plateau.update(score)
            if plateau.stopped and i > k.startup_trials:  # the spread is tried whole
                return f"plateau: {k.patience} trials without a gain"
            if score >= 1.0:
                return "done: perfect val score"
        return f"done: {k.trials} trials"

    def _eligible(self, search: Search) -> Callable[[Candidate], bool]:
        base = search.base.content
        return lambda c: c.content.model_copy(update={"params": base.params}) == base
