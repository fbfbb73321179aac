"""Generate new test cases with a model, from a signature and a few seed cases.

    result = await generate_cases(gateway, model, signature, n=20, seeds=seeds, existing=cases)
    result.cases     # new, validated, deduplicated, golden=False

The model is asked for a JSON object ``{"cases": [{"inputs": {...},
"expected": {...}}, ...]}``, a few cases per request. A reply is validated
(pydantic, every input and output field of the signature present and of its
type) and asked again when it is not JSON of that shape (`promptlab.providers.ask`);
single cases that do not fit the signature are dropped and counted as invalid.

Duplicates are dropped against the existing cases and each other:
- exact: the same content hash as a stored case (inputs and expected);
- near: input text at least ``near_threshold`` similar (rapidfuzz ratio,
  0..100, on the inputs casefolded with whitespace collapsed) to another case's.

Every request shows the seed cases and the most recent inputs to avoid, so
each round (and each later `case generate`) asks a new question. Generated
cases are non-golden: evaluations skip them until a person reviews them and
marks them with `promptlab case golden IDS` (or passes ``--include-generated``).
No database here: the CLI stores what this returns.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator
from rapidfuzz import fuzz, process

from promptlab.providers.ask import InvalidReply, ask_json
from promptlab.models import Case, Signature
from promptlab.prompting.outputs import ParseError, coerce

if TYPE_CHECKING:
    from promptlab.config import ModelConfig
    from promptlab.providers.gateway import Gateway

DEFAULT_PARAMS = {"temperature": 0.8, "max_tokens": 2000}
AVOID_SHOWN = 20  # recent inputs listed as "do not repeat" in each request


class _Draft(BaseModel):
    model_config = ConfigDict(extra="ignore")
    inputs: dict[str, Any]
    expected: dict[str, Any] = {}


class Batch(BaseModel):
    """A reply: its cases that fit the signature, and why the others did not."""

    model_config = ConfigDict(extra="ignore")
    cases: list[_Draft]
    rejected: list[str] = []

    @model_validator(mode="after")
    def _fit_signature(self, info: ValidationInfo) -> "Batch":
        signature: Signature | None = (info.context or {}).get("signature")
        if signature is None:
            return self
        kept, rejected = [], []
        for i, draft in enumerate(self.cases, start=1):
            try:
                kept.append(_Draft(inputs=_fields(draft.inputs, signature.inputs, "input"),
                                   expected=_fields(draft.expected, signature.outputs, "output")))
            except ValueError as exc:
                rejected.append(f"case {i}: {exc}")
        if not kept:
            raise ValueError(rejected[0] if rejected else "the 'cases' list is empty")
        self.cases, self.rejected = kept, rejected
        return self


def _fields(values: dict[str, Any], specs: tuple, what: str) -> dict[str, Any]:
    out = {}
    for spec in specs:
        value = values.get(spec.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"{what} field '{spec.name}' is missing")
        try:
            out[spec.name] = coerce(value, spec)
        except ParseError as exc:
            raise ValueError(str(exc)) from None
    return out


@dataclass
class Generated:
    cases: list[Case] = field(default_factory=list)
    exact: int = 0        # dropped: same content as an existing (or just generated) case
    near: int = 0         # dropped: input text too similar to another case's
    invalid: int = 0      # dropped: did not fit the signature
    requests: int = 0     # questions asked (each may have taken several replies)
    calls: int = 0        # replies that reached the provider (0 when all came from the cache)
    stopped: str = ""     # why generation stopped early: a question no reply answered usably


def input_text(inputs: dict[str, Any], signature: Signature | None = None) -> str:
    """The text near-duplicates are judged on: the inputs, casefolded, whitespace collapsed."""
    names = signature.input_names if signature else sorted(inputs)
    parts = [v if isinstance(v := inputs.get(n, ""), str) else json.dumps(v, sort_keys=True) for n in names]
    return " ".join(" | ".join(parts).casefold().split())


class Deduper:
    """Exact (content hash) and near (rapidfuzz ratio of input text) duplicate checks."""

    def __init__(self, existing: list[Case], signature: Signature | None, near_threshold: float):
        self.signature, self.threshold = signature, near_threshold
        self.hashes = {c.hash() for c in existing}
        self.texts = [input_text(c.inputs, signature) for c in existing]

    def check(self, case: Case) -> str | None:
        """"exact", "near" or None (new); a new case is remembered."""
        if case.hash() in self.hashes:
            return "exact"
        text = input_text(case.inputs, self.signature)
        if self.texts and process.extractOne(text, self.texts, scorer=fuzz.ratio, processor=None,
                                             score_cutoff=self.threshold) is not None:
            return "near"
        self.hashes.add(case.hash())
        self.texts.append(text)
        return None


def _field_lines(specs: tuple) -> str:
    lines = []
    for f in specs:
        kind = f"one of {', '.join(f.choices)}" if f.type == "enum" and f.choices else f.type
        lines.append(f"- {f.name} ({kind}){': ' + f.description if f.description else ''}")
    return "\n".join(lines)


def generation_messages(signature: Signature, seeds: list[Case], want: int, avoid: list[str]) -> list[dict]:
    parts = [f"We are writing test cases for this task:\n{signature.instruction or signature.name}",
             f"Input fields:\n{_field_lines(signature.inputs)}",
             f"Output fields (the expected, correct answer):\n{_field_lines(signature.outputs)}"]
    if seeds:
        examples = "\n".join(json.dumps({"inputs": c.inputs, "expected": c.expected}, ensure_ascii=False)
                             for c in seeds)
        parts.append(f"Example cases:\n{examples}")
    if avoid:
        parts.append("Inputs we already have (do not repeat or paraphrase them):\n"
                     + "\n".join(f"- {a[:200]}" for a in avoid))
    parts.append(f"Write {want} new, varied, realistic test case{'s' if want > 1 else ''}, each with its "
                 f"correct expected output. Reply with JSON only, in this form:\n"
                 '{"cases": [{"inputs": {...}, "expected": {...}}]}')
    return [{"role": "system", "content": "You write test cases for evaluating language-model prompts. "
                                          "You reply with a single JSON object and nothing else."},
            {"role": "user", "content": "\n\n".join(parts)}]


async def generate_cases(gateway: "Gateway", model: "ModelConfig", signature: Signature, *, n: int,
                         seeds: list[Case] = (), existing: list[Case] = (), near_threshold: float = 90.0,
                         per_request: int = 5, attempts: int = 3, params: dict | None = None,
                         max_requests: int | None = None, tags: tuple[str, ...] = (),
                         split: str | None = None) -> Generated:
    """Up to `n` new cases (fewer when the model keeps repeating itself; see `Generated`).

    Asks at most `max_requests` questions (default: 3 x the rounds `n` needs),
    and stops at the first question that `attempts` replies in a row failed to
    answer usably: a model that cannot follow the format costs a few calls, not
    minutes. Raises `CallError` when a call fails (after the gateway's retries)
    and `InvalidReply` when it stopped so with no new case.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    result = Generated()
    dedupe = Deduper(list(existing), signature, near_threshold)
    recent = [input_text(c.inputs, signature) for c in existing][-AVOID_SHOWN:]
    limit = max_requests or max(3, 3 * math.ceil(n / per_request))
    merged = {**DEFAULT_PARAMS, **(params or {})}
    while len(result.cases) < n and result.requests < limit:
        want = min(per_request, n - len(result.cases))
        messages = generation_messages(signature, list(seeds), want, recent[-AVOID_SHOWN:])
        sample = result.requests * attempts
        result.requests += 1
        try:
            answer = await ask_json(gateway, model, messages, Batch, attempts=attempts, params=merged,
                                    context={"signature": signature}, sample=sample,
                                    example='{"cases": [{"inputs": {...}, "expected": {...}}]}')
        except InvalidReply as exc:
            result.calls += exc.calls
            result.stopped = str(exc)  # "no valid reply in 3 attempts (last: <validation error>)"
            break
        result.calls += answer.calls
        result.invalid += len(answer.value.rejected)
        for draft in answer.value.cases:
            if len(result.cases) >= n:
                break
            case = Case(inputs=draft.inputs, expected=draft.expected, golden=False, tags=tags, split=split)
            kind = dedupe.check(case)
            if kind == "exact":
                result.exact += 1
            elif kind == "near":
                result.near += 1
            else:
                result.cases.append(case)
                recent.append(input_text(case.inputs, signature))
    if not result.cases and result.stopped:
        raise InvalidReply(f"the model gave no usable cases: {result.stopped}", "", result.requests,
                           result.calls)
    return result


def pick_seeds(cases: list[Case], k: int, seed: int = 0) -> list[Case]:
    """Up to k seed cases, golden ones first, chosen reproducibly."""
    rng = random.Random(seed)
    golden = [c for c in cases if c.golden]
    pool = golden if len(golden) >= k else golden + [c for c in cases if not c.golden]
    return rng.sample(pool, min(k, len(pool)))
