"""Model reply → output fields, parsed and validated against the signature.

A reply that does not parse gives (None, reason): a scored failure, never a crash.
"""

from __future__ import annotations

import json
import re
from typing import Any

from promptlab.models import FieldSpec, Signature
from promptlab.prompting.tools import NoCall, to_call

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_WORD = re.compile(r"[\w-]+")


class ParseError(ValueError):
    pass


def extract_json(text: str) -> Any:
    """The JSON value in a model's reply: the whole text, a ``` fenced block, or the first {...}/[...]
    (every caller that reads JSON from a reply: output parsing, ask_json, the proposer)."""
    fenced = _FENCE.search(text)
    candidate = (fenced.group(1) if fenced else text).strip()
    try:
        return json.loads(candidate)
    except json.JSONDecodeError:
        pass
    starts = [i for i in (candidate.find("{"), candidate.find("[")) if i >= 0]
    if not starts:
        raise ParseError("the reply holds no JSON object")
    try:
        return json.JSONDecoder().raw_decode(candidate[min(starts):])[0]
    except json.JSONDecodeError as exc:
        raise ParseError(f"the reply is not valid JSON ({exc.msg} at character {exc.pos})") from None


def coerce(value: Any, spec: FieldSpec) -> Any:
    """One field's value in its declared type, or ParseError."""
    if spec.type == "string":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if spec.type == "enum":
        return _choice(str(value), spec)
    if spec.type in ("int", "float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            match = _NUMBER.search(str(value))
            if not match:
                raise ParseError(f"field '{spec.name}': no number in '{str(value)[:40]}'")
            number = float(match.group().replace(",", ""))
        if spec.type == "int":
            if not number.is_integer():
                raise ParseError(f"field '{spec.name}': {number} is not a whole number")
            return int(number)
        return number
    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower().split()[0:1]
        if word and word[0].strip(".,!") in ("true", "yes", "1"):
            return True
        if word and word[0].strip(".,!") in ("false", "no", "0"):
            return False
        raise ParseError(f"field '{spec.name}': '{str(value)[:40]}' is not true/false")
    if spec.type == "list":
        if isinstance(value, list):
            return value
        text = str(value).strip()
        if text.startswith("["):
            parsed = extract_json(text)
            if isinstance(parsed, list):
                return parsed
        return [p.strip(" -*\t") for p in re.split(r"[,\n]", text) if p.strip(" -*\t")]
    if spec.type == "json":
        return extract_json(value) if isinstance(value, str) else value
    if spec.type == "tool_call":
        try:
            return to_call(extract_json(value) if isinstance(value, str) else value)
        except (NoCall, ParseError) as exc:
            raise ParseError(f"field '{spec.name}': no tool call ({exc})") from None
    raise ParseError(f"field '{spec.name}': unsupported type {spec.type}")


def _choice(text: str, spec: FieldSpec) -> str:
    """The choice the reply names: an exact match, else the first choice mentioned."""
    choices = {c.lower(): c for c in spec.choices or ()}
    cleaned = text.strip().strip("\"'`.,!*").lower()
    if cleaned in choices:
        return choices[cleaned]
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    for word in _WORD.findall(first_line.lower()):
        if word in choices:
            return choices[word]
    raise ParseError(f"field '{spec.name}': '{text.strip()[:40]}' is not one of "
                     f"{', '.join(spec.choices or ())}")


def parse_output(text: str, signature: Signature | None) -> tuple[dict[str, Any] | None, str | None]:
    if signature is None:
        return {"output": text.strip()}, None
    try:
        if len(signature.outputs) == 1:
            spec = signature.outputs[0]
            raw: Any = text.strip()
            if spec.type != "json" and raw.startswith("{"):
                try:  # a model may still answer {"label": "..."}
                    obj = json.loads(raw)
                    raw = obj.get(spec.name, raw) if isinstance(obj, dict) else raw
                except json.JSONDecodeError:
                    pass
            return {spec.name: coerce(raw, spec)}, None
        obj = _fields_from(text, signature)
        missing = [s.name for s in signature.outputs if s.name not in obj]
        if missing:
            raise ParseError(f"reply lacks output field '{missing[0]}'")
        return {s.name: coerce(obj[s.name], s) for s in signature.outputs}, None
    except ParseError as exc:
        return None, str(exc)


def _fields_from(text: str, signature: Signature) -> dict[str, Any]:
    """A JSON object, or 'field: value' lines."""
    try:
        obj = extract_json(text)
        if isinstance(obj, dict):
            return obj
    except ParseError:
        pass
    names = {s.name.lower(): s.name for s in signature.outputs}
    found: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip(" *-#").lower()
        if sep and key in names and names[key] not in found:
            found[names[key]] = value.strip()
    if not found:
        raise ParseError("reply is neither a JSON object nor 'field: value' lines")
    return found
