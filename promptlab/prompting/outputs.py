"""Model reply → output fields, parsed and validated against the signature, field by field.

A field that does not fit keeps its reason (a scored failure, never a crash) and the other
fields keep their values, so per-field metrics still give partial credit. Enum fields are read
strictly unless the field is declared `lenient`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from promptlab import safe_json
from promptlab.models import FieldSpec, Signature
from promptlab.prompting.tools import NoCall, to_call

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


class ParseError(ValueError):
    pass


def extract_json(text: str) -> Any:
    """The JSON value in a model's reply: the whole text, a ``` fenced block, or the first {...}/[...]
    (every caller that reads JSON from a reply: output parsing, ask_json, the proposer)."""
    fenced = _FENCE.search(text)
    candidate = (fenced.group(1) if fenced else text).strip()
    try:
        return safe_json.loads(candidate)
    except safe_json.TooDeep as exc:
        raise ParseError(f"the reply is not usable JSON ({exc})") from None
    except json.JSONDecodeError:
        pass
    starts = [i for i in (candidate.find("{"), candidate.find("[")) if i >= 0]
    if not starts:
        raise ParseError("the reply holds no JSON object")
    try:
        return safe_json.raw_decode(candidate[min(starts):])
    except json.JSONDecodeError as exc:
        raise ParseError(f"the reply is not valid JSON ({exc.msg} at character {exc.pos})") from None
    except safe_json.TooDeep as exc:
        raise ParseError(f"the reply is not usable JSON ({exc})") from None


def coerce(value: Any, spec: FieldSpec) -> Any:
    """One field's value in its declared type, or ParseError."""
    if spec.type == "string":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if spec.type == "enum":
        return _choice(str(value), spec)[0]
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


_EDGES = "\"'`.,!?;:*_ \t\n()[]<>"
# Where a trailing explanation may start: a line break, a sentence stop, a dash, a bracket.
_SEPARATOR = re.compile(r"\n|[.!?;,:]\s|\s[-\u2013\u2014]+\s|\s?\(|\s?\[")


def _norm(text: str) -> str:
    return " ".join(text.strip(_EDGES).lower().split())


def _mentioned(text: str, choices: dict[str, str]) -> list[str]:
    """The choices `text` names as whole words, in the order they first appear (a longer choice
    first: "very spam" does not also name "spam")."""
    lowered, found = " ".join(text.lower().split()), []
    for key in sorted(choices, key=len, reverse=True):
        match = re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", lowered)
        if match:
            found.append((match.start(), choices[key]))
            lowered = lowered.replace(key, " " * len(key))
    return [choice for _, choice in sorted(found)]


def _choice(text: str, spec: FieldSpec) -> tuple[str, bool]:
    """The choice the reply is, and whether only the lenient rule accepted it.

    Strict: the reply is the choice, modulo case, quotes, punctuation, a `field:` prefix and a
    trailing explanation after a separator ("spam. It offers a prize") that names no other
    choice. Lenient (`lenient: true` on the field): else the first choice the first line names.
    """
    try:
        return _strict_choice(text, spec), False
    except ParseError:
        if spec.lenient:
            first_line = next((line for line in text.splitlines() if line.strip()), "")
            if named := _mentioned(first_line, {_norm(c): c for c in spec.choices or ()}):
                return named[0], True
        raise


def _strict_choice(text: str, spec: FieldSpec) -> str:
    choices = {_norm(c): c for c in spec.choices or ()}
    reply = text.strip()
    prefix = re.match(rf"\W*{re.escape(spec.name)}\W*:\s*", reply, re.I)
    body = reply[prefix.end():] if prefix else reply
    named = _mentioned(body, choices)
    head = _SEPARATOR.split(body.strip(_EDGES), maxsplit=1)[0]
    chosen = choices.get(_norm(body)) or choices.get(_norm(head))
    if chosen is not None and named == [chosen]:
        return chosen
    if len(named) > 1:
        raise ParseError(f"field '{spec.name}': '{_short(reply)}' names more than one choice "
                         f"({', '.join(named)})")
    hint = (f" (it mentions '{named[0]}' in other words; `lenient: true` on the field accepts that)"
            if named else "")
    raise ParseError(f"field '{spec.name}': '{_short(reply)}' is not one of "
                     f"{', '.join(spec.choices or ())}{hint}")


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:59] + "…"


def read_field(value: Any, spec: FieldSpec) -> tuple[Any, bool]:
    """One field's value in its declared type, and whether only its lenient rule accepted it."""
    if spec.type == "enum":
        return _choice(str(value), spec)
    return coerce(value, spec), False


@dataclass(frozen=True)
class ParsedReply:
    """A reply read field by field: the fields that fit keep their values, the others their errors."""

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)  # field -> why its value does not fit
    error: str | None = None  # why the reply as a whole could not be read (no fields at all)
    lenient: tuple[str, ...] = ()  # fields accepted only by their lenient rule

    @property
    def parsed(self) -> dict[str, Any] | None:
        """The fields that fit (None when none did)."""
        return self.values if self.values or not (self.errors or self.error) else None

    @property
    def parse_error(self) -> str | None:
        return self.error or "; ".join(self.errors.values()) or None


def parse_reply(text: str, signature: Signature | None) -> ParsedReply:
    """A model reply against the signature's outputs, field by field."""
    if signature is None:
        return ParsedReply({"output": text.strip()})
    if len(signature.outputs) == 1:
        spec = signature.outputs[0]
        raw: Any = text.strip()
        if spec.type != "json" and raw.startswith("{"):
            try:  # a model may still answer {"label": "..."}
                obj = safe_json.loads(raw)
                raw = obj.get(spec.name, raw) if isinstance(obj, dict) else raw
            except ValueError:  # not JSON, or nested too deep
                pass
        fields: dict[str, Any] = {spec.name: raw}
    else:
        try:
            fields = _fields_from(text, signature)
        except ParseError as exc:
            return ParsedReply({}, error=str(exc))
    values, errors, lenient = {}, {}, []
    for spec in signature.outputs:
        if spec.name not in fields:
            errors[spec.name] = f"reply lacks output field '{spec.name}'"
            continue
        try:
            values[spec.name], loose = read_field(fields[spec.name], spec)
        except ParseError as exc:
            errors[spec.name] = str(exc)
            continue
        if loose:
            lenient.append(spec.name)
    return ParsedReply(values, errors, None, tuple(lenient))


def parse_output(text: str, signature: Signature | None) -> tuple[dict[str, Any] | None, str | None]:
    """(the fields that fit, or None when none did; why the others did not, or None)."""
    reply = parse_reply(text, signature)
    return reply.parsed, reply.parse_error


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
