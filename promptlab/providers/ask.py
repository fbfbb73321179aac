"""Ask a model for a structured (JSON) reply: validated with pydantic, retried when invalid.

    answer = await ask_json(gateway, model, messages, Verdict, attempts=3)
    answer.value      # a validated Verdict
    answer.attempts   # replies it took

Attempt i (from 0) is the cached sample i (`Gateway.complete(sample=i)`) of a
conversation that, from the second attempt on, also holds the previous invalid
reply and what was wrong with it. So a retry is never answered from the cache
with the same bad reply, and a re-run replays every attempt from the cache
(no new calls). When no attempt is valid, `InvalidReply` says why (the last
validation error) and keeps the last reply. Call failures stay `CallError`
(the gateway has already retried the transient ones); 401/403 stay `AuthError`.

Used by the LLM judge, case generation and the optimizers' proposer (which checks
replies with a function of its own and re-asks in a conversation that keeps every
attempt: `Retry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from promptlab.models import Usage
from promptlab.prompting.outputs import extract_json

if TYPE_CHECKING:
    from promptlab.config import ModelConfig
    from promptlab.providers.gateway import Gateway

T = TypeVar("T")


class InvalidReply(Exception):
    """No attempt gave a valid structured reply."""

    def __init__(self, message: str, reply: str, attempts: int, calls: int = 0, reason: str = ""):
        super().__init__(message)
        self.reply, self.attempts, self.calls, self.reason = reply, attempts, calls, reason


@dataclass(frozen=True)
class Answer(Generic[T]):
    value: T
    text: str           # the valid reply as the model wrote it
    attempts: int       # replies asked for (1 = the first was valid)
    calls: int          # of those, how many reached the provider (0 = all cached)
    usage: Usage        # tokens and cost of the provider calls made


@dataclass(frozen=True)
class Retry:
    """How an invalid reply is answered. `note` ({reason}, {example}) follows the reply. With
    `keep_all` the conversation keeps every invalid attempt, so no two attempts are alike and all
    ask for the same cached sample; else it keeps the last one and attempt i asks for sample + i
    (two alike would otherwise get the same bad reply from the cache)."""

    note: str = "That reply was not usable: {reason}. Reply again with the JSON object only{example}"
    keep_all: bool = False


def describe(exc: ValidationError) -> str:
    """The first validation error in one line: "field 'score': Input should be ..."."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"field '{loc}': {err['msg']}" if loc else err["msg"]


def validate(text: str, schema: type[T] | Callable[[Any], T], context: dict[str, Any] | None = None) -> T:
    """Parse and validate one reply; ValueError with a one-line reason when invalid. `schema` is a
    pydantic model, or a function of the JSON value that returns it checked (ValueError: why not)."""
    data = extract_json(text)
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return schema(data)
    try:
        return schema.model_validate(data, context=context)
    except ValidationError as exc:
        raise ValueError(describe(exc)) from None


async def ask_json(gateway: "Gateway", model: "ModelConfig", messages: list[dict],
                   schema: type[T] | Callable[[Any], T], *, attempts: int = 3, params: dict | None = None,
                   context: dict[str, Any] | None = None, example: str = "", use_cache: bool = True,
                   sample: int = 0, retry: Retry = Retry()) -> Answer[T]:
    """Ask until a reply validates against `schema` (at most `attempts` replies).

    `context` is passed to pydantic validators (e.g. a score's allowed range);
    `example` (the JSON shape wanted) is repeated in the retry message;
    `sample`: the cached sample of the first attempt, for callers that ask the
    same question more than once; `retry`: how an invalid reply is answered.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    calls, prompt_tokens, completion_tokens, cost = 0, 0, 0, 0.0
    unknown_cost = False
    convo, last_reply, reason = list(messages), "", ""
    for attempt in range(attempts):
        if attempt:
            note = retry.note.format(reason=reason, example=f": {example}" if example else "")
            convo = [*(convo if retry.keep_all else messages), {"role": "assistant", "content": last_reply},
                     {"role": "user", "content": note}]
        reply = await gateway.complete(model, convo, params, use_cache=use_cache,
                                       sample=sample + (0 if retry.keep_all else attempt))
        if not reply.cached:
            calls += 1
            prompt_tokens += reply.usage.prompt_tokens
            completion_tokens += reply.usage.completion_tokens
            if reply.usage.cost is None:
                unknown_cost = True
            else:
                cost += reply.usage.cost
        last_reply = reply.text
        try:
            value = validate(reply.text, schema, context)
        except ValueError as exc:
            reason = str(exc)
            continue
        return Answer(value=value, text=reply.text, attempts=attempt + 1, calls=calls,
                      usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                  cost=None if unknown_cost else cost))
    raise InvalidReply(f"no valid reply in {attempts} attempt{'s' if attempts > 1 else ''} "
                       f"(last: {reason})", last_reply, attempts, calls, reason)
