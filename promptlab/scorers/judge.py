"""LLM-as-judge: a model grades each output against a rubric (and the expected output).

    {"name": "judge", "rubric": "Is the answer correct and concise?", "model": "gpt-mini"}

The judge model is the ``model`` argument (an alias from promptlab.toml or a
LiteLLM model), else ``[defaults] judge_model`` (default ``local``). The judge
replies with JSON, ``{"reason": "...", "score": N}`` with N on the stated
scale (``min_score``..``max_score``, default 1..5); the reply is validated
(pydantic) and, when invalid, asked again (``attempts`` replies at most, each
a distinct cached sample; see `promptlab.providers.ask`).

Per result: value = (N - min_score) / (max_score - min_score), in 0..1;
passed = value >= ``threshold`` (default 0.75: 4 or 5 of 5);
``detail["reason"]`` is the judge's reason, ``detail["judge_score"]`` N.

When the judge never gives a valid reply, or its model call fails, the item is
an error (`ScoringError`: kind "scorer", the reason kept, counted in the run's
errors) -- never a crash, never a silent 0. Judge calls go through the run's
gateway: cached in the store (a re-run makes no judge call), retried, rate
limited. They always use the cache, even with ``--no-cache`` (which is about
the model under test): the same output gets the same verdict.

`judge_pair` compares two outputs for `runs compare`: it asks in both orders
and combines the verdicts, so a judge's preference for the first (or second)
position cancels out.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from promptlab.providers.ask import InvalidReply, ask_json
from promptlab.scorers.base import MetricContext, MetricError, Score, ScoreInput, ScoringError
from promptlab.scorers.registry import Early, as_text, text_value
from promptlab.scorers.stats import summarize_scores

if TYPE_CHECKING:
    from promptlab.config import ModelConfig
    from promptlab.providers.gateway import Gateway

DEFAULT_PARAMS = {"temperature": 0, "max_tokens": 256}
SYSTEM = ("You are a careful, impartial evaluator. You grade a response against a rubric "
          "and reply with a single JSON object and nothing else.")


class Verdict(BaseModel):
    """One graded response: a short reason first (so the score follows from it), then the score."""

    model_config = ConfigDict(extra="ignore")
    reason: str
    score: float

    @field_validator("score")
    @classmethod
    def _on_scale(cls, value: float, info: ValidationInfo) -> float:
        low, high = (info.context or {}).get("scale", (1, 5))
        if not low <= value <= high:
            raise ValueError(f"the score must be between {low} and {high} (got {value:g})")
        return value


class PairChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reason: str
    winner: Literal["1", "2", "tie"]

    @field_validator("winner", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        text = str(value).strip().lower().removeprefix("response").strip()
        return {"first": "1", "second": "2", "a": "1", "b": "2", "draw": "tie"}.get(text, text)


def _section(title: str, body: str) -> str:
    return f"## {title}\n{body.strip() or '(empty)'}\n"


def _inputs_text(inputs: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {as_text(v)}" for k, v in inputs.items())


def judge_messages(rubric: str, output: str, *, inputs: dict[str, Any] | None = None,
                   reference: str | None = None, scale: tuple[int, int] = (1, 5)) -> list[dict]:
    low, high = scale
    parts = [_section("Rubric", rubric)]
    if inputs:
        parts.append(_section("Task input", _inputs_text(inputs)))
    if reference is not None:
        parts.append(_section("Reference answer (correct; use it to judge the response)", reference))
    parts.append(_section("Response to grade", output))
    parts.append(f"Grade the response against the rubric on a scale from {low} (fails it) to {high} "
                 f"(fully meets it). Reply with JSON only, in this form:\n"
                 f'{{"reason": "<one or two sentences>", "score": <a number from {low} to {high}>}}')
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


class JudgeMetric:
    """Built by `judge`; `bind(gateway)` before scoring (`promptlab.evaluation.evaluate.execute` does)."""

    def __init__(self, spec: dict[str, Any], model: "ModelConfig", rubric: str, scale: tuple[int, int],
                 threshold: float, field: str | None, reference: bool, attempts: int, params: dict):
        self.name, self.spec = "judge", spec
        self.model, self.rubric, self.scale = model, rubric, scale
        self._threshold, self._field, self._reference = threshold, field, reference
        self._attempts, self._params = attempts, params
        self._gateway: Gateway | None = None

    def bind(self, gateway: "Gateway") -> None:
        self._gateway = gateway

    def _reference_text(self, item: ScoreInput) -> str | None:
        if not self._reference or not item.expected:
            return None
        if self._field is not None:
            value = item.expected.get(self._field)
            return None if value is None else as_text(value)
        if len(item.expected) == 1:
            return as_text(next(iter(item.expected.values())))
        return json.dumps(item.expected, ensure_ascii=False, indent=1)

    async def score(self, item: ScoreInput) -> Score:
        if self._gateway is None:
            raise ScoringError("judge: no model gateway bound (score through promptlab.evaluation.evaluate.execute)")
        if self._field is None:
            output = item.output
        else:
            try:
                output = text_value(item, self._field)
            except Early as early:  # a parse failure scores 0 without asking the judge
                return early.score
        messages = judge_messages(self.rubric, output, inputs=item.inputs,
                                  reference=self._reference_text(item), scale=self.scale)
        answer = await _ask(self._gateway, self.model, messages, Verdict, self._attempts, self._params,
                            {"scale": self.scale}, example='{"reason": "...", "score": N}')
        low, high = self.scale
        value = (answer.value.score - low) / (high - low)
        return Score(value, value >= self._threshold,
                     {"reason": answer.value.reason, "judge_score": answer.value.score,
                      "scale": list(self.scale), "attempts": answer.attempts})

    def summarize(self, scores: list[Score]) -> dict[str, Any]:
        summary = summarize_scores(scores)
        counts: dict[str, int] = {}
        for s in scores:
            if s.value is not None and "judge_score" in s.detail:
                key = f"{s.detail['judge_score']:g}"
                counts[key] = counts.get(key, 0) + 1
        summary["judge_scores"] = dict(sorted(counts.items(), key=lambda kv: float(kv[0])))
        summary["judge_model"] = self.model.alias or self.model.model
        return summary

    def __repr__(self) -> str:
        return f"<metric {self.spec}>"


async def _ask(gateway: "Gateway", model: "ModelConfig", messages: list[dict], schema: type[BaseModel],
               attempts: int, params: dict, context: dict | None, example: str):
    from promptlab.providers.gateway import CallError

    try:
        return await ask_json(gateway, model, messages, schema, attempts=attempts, params=params,
                              context=context, example=example)
    except InvalidReply as exc:
        raise ScoringError(f"judge: {exc}", {"reply": exc.reply[:500], "attempts": exc.attempts}) from None
    except CallError as exc:
        raise ScoringError(f"judge: the judge model call failed ({exc.kind}: {exc})") from None


def judge(rubric: str, model: str | None = None, min_score: int = 1, max_score: int = 5,
          threshold: float = 0.75, field: str | None = None, reference: bool = True,
          attempts: int = 3, params: dict[str, Any] | None = None, *,
          context: MetricContext) -> JudgeMetric:
    """Grade each output with a judge model against `rubric` (see the module doc).

    reference: show the judge the case's expected output (when it has one).
    field: grade this output field instead of the whole raw output.
    params: sampling parameters for the judge (default temperature 0, max_tokens 256).
    """
    if not rubric.strip():
        raise MetricError("metric 'judge': argument 'rubric' must not be empty")
    if min_score >= max_score:
        raise MetricError(f"metric 'judge': min_score ({min_score}) must be below max_score ({max_score})")
    if not 0 <= threshold <= 1:
        raise MetricError(f"metric 'judge': argument 'threshold' must be between 0 and 1 (got {threshold})")
    if not 1 <= attempts <= 10:
        raise MetricError(f"metric 'judge': argument 'attempts' must be between 1 and 10 (got {attempts})")
    resolved = context.model(model, "judge")
    spec = {"name": "judge", "rubric": rubric, "model": model, "min_score": min_score,
            "max_score": max_score, "threshold": threshold, "field": field, "reference": reference,
            "attempts": attempts, "params": params}
    return JudgeMetric(spec, resolved, rubric, (min_score, max_score), threshold, field, reference,
                       attempts, {**DEFAULT_PARAMS, **(params or {})})


# ---------------------------------------------------------------------------
# pairwise


@dataclass(frozen=True)
class PairVerdict:
    """Which of two outputs is better, judged in both orders.

    winner: "a", "b" or "tie"; score: B's share of the two verdicts (1 = B won
    both, 0.5 = a tie or the orders disagreed, 0 = A won both); consistent:
    both orders named the same winner (False is the judge's position bias).
    """

    winner: Literal["a", "b", "tie"]
    score: float
    consistent: bool
    reasons: tuple[str, str]  # (A shown first, B shown first)


def pair_messages(rubric: str, first: str, second: str, *, inputs: dict[str, Any] | None = None,
                  reference: str | None = None) -> list[dict]:
    parts = [_section("Rubric", rubric)]
    if inputs:
        parts.append(_section("Task input", _inputs_text(inputs)))
    if reference is not None:
        parts.append(_section("Reference answer (correct; use it to judge the responses)", reference))
    parts.append(_section("Response 1", first))
    parts.append(_section("Response 2", second))
    parts.append('Which response meets the rubric better? Judge content, not position or length. '
                 'Reply with JSON only, in this form:\n'
                 '{"reason": "<one or two sentences>", "winner": "1" or "2" or "tie"}')
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


async def judge_pair(gateway: "Gateway", model: "ModelConfig", rubric: str, a: str, b: str, *,
                     inputs: dict[str, Any] | None = None, reference: str | None = None,
                     attempts: int = 3, params: dict[str, Any] | None = None) -> PairVerdict:
    """Compare outputs `a` and `b` for the same case, asking in both orders (concurrently).

    Raises `ScoringError` when either order gets no valid verdict or its call
    fails; `AuthError` propagates.
    """
    merged = {**DEFAULT_PARAMS, **(params or {})}
    example = '{"reason": "...", "winner": "1" or "2" or "tie"}'
    ab, ba = await asyncio.gather(
        _ask(gateway, model, pair_messages(rubric, a, b, inputs=inputs, reference=reference),
             PairChoice, attempts, merged, None, example),
        _ask(gateway, model, pair_messages(rubric, b, a, inputs=inputs, reference=reference),
             PairChoice, attempts, merged, None, example))
    first = {"1": "a", "2": "b", "tie": "tie"}[ab.value.winner]
    second = {"1": "b", "2": "a", "tie": "tie"}[ba.value.winner]
    points = {"a": 0.0, "tie": 0.5, "b": 1.0}
    score = (points[first] + points[second]) / 2
    winner = "b" if score > 0.5 else "a" if score < 0.5 else "tie"
    return PairVerdict(winner=winner, score=score, consistent=first == second,
                       reasons=(ab.value.reason, ba.value.reason))
