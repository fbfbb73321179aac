"""Tool calls: the specs a version offers, the calls a reply makes, and how two calls compare.

A version's `tools` and `tool_choice` go into the request as OpenAI's parameters of those
names (only when the version has them, so other requests and their cache keys are unchanged).

A reply's native tool calls are recorded as its output text, one JSON object
`{"tool_calls": [{"name": …, "arguments": {…}}], "content": …}` ("content" only when the
reply also had text), so that the cache, batch results, stored outputs and reports keep one
text per reply. A `tool_call` output is parsed from that object or from JSON the model wrote
itself (models without native tools): `{"name", "arguments"}`, OpenAI's
`{"function": {"name", "arguments"}}` shape, or `{"name", "parameters"}`; the first call counts.
"""

from __future__ import annotations

import json
import math
from typing import Any

from promptlab.models import PromptContent


class NoCall(ValueError):
    """The reply holds no tool call (a scored failure where one was expected)."""


def request_params(content: PromptContent, params: dict[str, Any]) -> dict[str, Any]:
    """The call's parameters plus the version's tools and tool_choice, when it has them."""
    extra: dict[str, Any] = {}
    if content.tools:
        extra["tools"] = [dict(t) for t in content.tools]
    if content.tool_choice is not None:
        extra["tool_choice"] = content.tool_choice
    return {**params, **extra} if extra else params


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _arguments(raw: Any) -> Any:
    """Arguments as data: OpenAI sends them as a JSON string; one that does not parse stays text."""
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return raw
    return {} if raw is None else raw


def reply_text(content: str | None, tool_calls: Any) -> str | None:
    """A reply's output text: its content, or its native tool calls as one JSON object (see
    module doc). None when it has neither (not an empty answer)."""
    calls = []
    for call in tool_calls or ():
        function = _field(call, "function")
        name = _field(function, "name")
        if isinstance(name, str):
            calls.append({"name": name, "arguments": _arguments(_field(function, "arguments"))})
    if not calls:
        return content
    return json.dumps({"tool_calls": calls, **({"content": content} if content else {})}, ensure_ascii=False)


def to_call(value: Any) -> dict[str, Any]:
    """The first tool call in a parsed reply value, as {name, arguments}; NoCall when there is none."""
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        value = value["tool_calls"]
    if isinstance(value, list):
        if not value:
            raise NoCall("the reply calls no tool")
        value = value[0]
    if not isinstance(value, dict):
        raise NoCall("the reply holds no tool call")
    if isinstance(value.get("function"), dict):  # OpenAI's {type: function, function: {...}}
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise NoCall("the reply holds no tool call (no 'name')")
    arguments = _arguments(value.get("arguments", value.get("parameters")))
    if not isinstance(arguments, dict):
        raise NoCall(f"tool call '{name}': its arguments are not a JSON object")
    return {"name": name, "arguments": arguments}


def same_value(a: Any, b: Any) -> bool:
    """Equality by JSON type: numbers by value (1 == 1.0), but a bool is never a number and a
    numeric string never a number; strings exactly; objects and arrays item by item."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def match(predicted: dict[str, Any], expected: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """tool_call_match's rule: 0 for another tool; for the right one, the share of argument
    names (those of either call) whose values are the same (`same_value`); 1 when neither call
    has arguments. get_weather(city=Paris) against get_weather(city=Paris, unit=celsius): 1/2."""
    if predicted["name"] != expected["name"]:
        return 0.0, {"reason": f"called '{predicted['name']}', expected '{expected['name']}'"}
    given, wanted = predicted.get("arguments") or {}, expected.get("arguments") or {}
    names = sorted(set(given) | set(wanted))
    if not names:
        return 1.0, {}
    wrong = [n for n in names if n not in given or n not in wanted or not same_value(given[n], wanted[n])]
    detail = {"arguments_matched": len(names) - len(wrong), "arguments": len(names)}
    if wrong:
        detail["mismatched"] = wrong
    return (len(names) - len(wrong)) / len(names), detail
