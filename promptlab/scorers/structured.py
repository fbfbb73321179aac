"""JSON metrics: json_valid, json_field_match, json_schema, field_f1.

Which JSON object is judged (`json_target` / `json_expected`):
- ``field`` given, or the signature has exactly one output: that field's
  parsed value (a string value is decoded as JSON);
- several signature outputs: the whole parsed output vs the whole expected dict;
- no signature: the raw output decoded as JSON, vs the expected dict (or its
  only value when that is an object).
JSON text may be wrapped in a Markdown code fence. Field names in ``fields``
may be dotted paths into nested objects ("address.city").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema

from promptlab import safe_json
from promptlab.scorers.base import MetricError, Score, ScoreInput
from promptlab.scorers.registry import BaseMetric, Early, parse_failure, predicted_value

_MISSING = object()


def loads_lenient(text: str) -> Any:
    """json.loads after trimming and removing one surrounding ``` fence; ValueError if invalid."""
    text = text.strip()
    if text.startswith("```"):
        first_nl = text.find("\n")
        text = text[first_nl + 1:] if first_nl != -1 else ""
        text = text.strip()
        if text.endswith("```"):
            text = text[:-3]
    return safe_json.loads(text)


def _decode(value: Any, what: str, expected: bool = False) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return loads_lenient(value)
    except ValueError as exc:
        if expected:
            raise Early(Score(None, False, {"error": f"the expected {what} is not valid JSON ({exc})"}))
        raise Early(Score(0.0, False, {"reason": f"{what} is not valid JSON ({exc})"}))


def _single_name(item: ScoreInput, field: str | None) -> str | None:
    if field is not None:
        return field
    return item.outputs[0].name if len(item.outputs) == 1 else None


def json_target(item: ScoreInput, field: str | None) -> Any:
    """The predicted JSON value (see module doc); parse failures are scored failures."""
    name = _single_name(item, field)
    if name is not None:
        if field is None and item.parsed and name not in item.parsed:
            return dict(item.parsed)  # a parser that spread the object over the top level
        return _decode(predicted_value(item, name), f"field '{name}'")
    if item.outputs:
        if item.parsed is None:
            raise Early(parse_failure(item))
        return dict(item.parsed)
    try:
        return loads_lenient(item.output)
    except ValueError as exc:
        if item.parsed is not None:
            return dict(item.parsed)
        if item.parse_error:
            raise Early(parse_failure(item))
        raise Early(Score(0.0, False, {"reason": f"the output is not valid JSON ({exc})"}))


def json_expected(item: ScoreInput, field: str | None) -> Any:
    """The expected JSON value, chosen like `json_target`; missing means unscorable."""
    name = _single_name(item, field)
    if name is not None:
        if name not in item.expected or item.expected[name] is None:
            raise Early(Score(None, False, {"error": f"the case has no expected value for '{name}'"}))
        return _decode(item.expected[name], f"'{name}'", expected=True)
    if not item.outputs and len(item.expected) == 1:
        only = next(iter(item.expected.values()))
        if isinstance(only, dict):
            return only
    if not item.expected:
        raise Early(Score(None, False, {"error": "the case has no expected output"}))
    return dict(item.expected)


def get_path(obj: Any, path: str) -> Any:
    """obj["a"]["b"] for "a.b" (exact key first); _MISSING when absent."""
    if isinstance(obj, dict) and path in obj:
        return obj[path]
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def values_equal(a: Any, b: Any, normalize: bool = True) -> bool:
    """Equality for JSON values: numbers numerically; strings trimmed, case- and
    whitespace-insensitive when normalize (and a numeric string equals its number)."""
    num = (int, float)
    a_num = isinstance(a, num) and not isinstance(a, bool)
    b_num = isinstance(b, num) and not isinstance(b, bool)
    if a_num and b_num:
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, str) and isinstance(b, str):
        if normalize:
            return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()
        return a == b
    if normalize and (a_num and isinstance(b, str) or b_num and isinstance(a, str)):
        try:
            return values_equal(float(a), float(b))
        except ValueError:
            return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k], normalize) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y, normalize) for x, y in zip(a, b))
    return a == b


def json_valid(field: str | None = None) -> BaseMetric:
    """1 if the raw output (or the given field's text) is valid JSON, else 0.

    Looks at the raw model text, so it does not depend on the signature parse;
    a Markdown code fence around the JSON is allowed.
    """

    def score(item: ScoreInput) -> Score:
        if field is not None:
            value = predicted_value(item, field)
            if not isinstance(value, str):
                return Score(1.0, True, {"type": type(value).__name__})
            text = value
        else:
            text = item.output
        try:
            loads_lenient(text)
        except ValueError as exc:
            return Score(0.0, False, {"reason": f"not valid JSON ({exc})"})
        return Score(1.0, True)

    return BaseMetric("json_valid", score)


def _check_fields(name: str, fields: list[str] | None) -> None:
    if fields is not None and (not fields or not all(isinstance(f, str) and f for f in fields)):
        raise MetricError(f"metric '{name}': argument 'fields' must be a non-empty list of field names")


def json_field_match(fields: list[str] | None = None, field: str | None = None, normalize: bool = True,
                     threshold: float = 1.0) -> BaseMetric:
    """Fraction of the listed `fields` (default: every expected key) whose output
    value equals the expected one (`values_equal`); passes at >= threshold."""
    _check_fields("json_field_match", fields)

    def score(item: ScoreInput) -> Score:
        expected = json_expected(item, field)
        if not isinstance(expected, dict):
            return Score(None, False, {"error": "the expected value is not a JSON object"})
        predicted = json_target(item, field)
        if not isinstance(predicted, dict):
            return Score(0.0, False, {"reason": f"the output is a JSON {type(predicted).__name__}, not an object"})
        names = [f for f in (fields or list(expected)) if get_path(expected, f) is not _MISSING]
        if not names:
            return Score(None, False, {"error": "none of the fields to compare is in the expected output"})
        matched, mismatched = [], {}
        for name in names:
            got = get_path(predicted, name)
            want = get_path(expected, name)
            if got is not _MISSING and values_equal(got, want, normalize):
                matched.append(name)
            else:
                mismatched[name] = {"predicted": None if got is _MISSING else got, "expected": want}
        value = len(matched) / len(names)
        detail: dict[str, Any] = {"matched": matched}
        if mismatched:
            detail["mismatched"] = mismatched
        return Score(value, value >= threshold, detail)

    return BaseMetric("json_field_match", score)


def _load_schema(schema: dict[str, Any] | None, schema_file: str | None) -> dict[str, Any]:
    if (schema is None) == (schema_file is None):
        raise MetricError("metric 'json_schema' needs exactly one of the arguments 'schema' or 'schema_file'")
    if schema_file is not None:
        path = Path(schema_file)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml
                schema = yaml.safe_load(text)
            else:
                schema = json.loads(text)
        except (OSError, ValueError, ImportError) as exc:
            raise MetricError(f"metric 'json_schema': argument 'schema_file' cannot be read ({schema_file}: {exc})") from None
        except Exception as exc:  # e.g. yaml.YAMLError
            raise MetricError(f"metric 'json_schema': argument 'schema_file' cannot be read ({schema_file}: {exc})") from None
        if not isinstance(schema, dict):
            raise MetricError(f"metric 'json_schema': argument 'schema_file' ({schema_file}) does not hold a JSON object")
    what = "schema_file" if schema_file is not None else "schema"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise MetricError(f"metric 'json_schema': argument '{what}' is not a valid JSON schema ({exc.message})") from None
    return schema


def json_schema(schema: dict[str, Any] | None = None, schema_file: str | None = None,
                field: str | None = None) -> BaseMetric:
    """1 if the output JSON validates against the schema (inline `schema` or a
    JSON/YAML `schema_file`, read once at construction), else 0."""
    loaded = _load_schema(schema, schema_file)
    validator = jsonschema.validators.validator_for(loaded)(loaded)

    def score(item: ScoreInput) -> Score:
        value = json_target(item, field)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if not errors:
            return Score(1.0, True)
        reasons = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:3]]
        return Score(0.0, False, {"reason": "; ".join(reasons), "errors": len(errors)})

    return BaseMetric("json_schema", score)


def _present(value: Any) -> bool:
    return value is not _MISSING and value is not None


def field_f1(fields: list[str] | None = None, field: str | None = None, normalize: bool = True,
             threshold: float = 1.0) -> BaseMetric:
    """Per-field extraction scoring of a JSON object output.

    Each field (the listed `fields`, else every expected and predicted key) is
    "tp" (right value), "fn" (expected, not predicted), "fp" (predicted, not
    expected) or "wrong" (both, different: one fp and one fn); null counts as
    absent. Per result: value = fraction of expected fields right (1 when none
    expected and none predicted). summarize adds per_field {field: {precision,
    recall, f1, support}}, micro_f1 and macro_f1.
    """
    _check_fields("field_f1", fields)

    def score(item: ScoreInput) -> Score:
        expected = json_expected(item, field)
        if not isinstance(expected, dict):
            return Score(None, False, {"error": "the expected value is not a JSON object"})
        failure: dict[str, Any] = {}
        try:
            predicted = json_target(item, field)
        except Early as early:
            if early.score.value is None:
                raise
            predicted, failure = {}, dict(early.score.detail)
        if not isinstance(predicted, dict):
            predicted, failure = {}, {"reason": f"the output is a JSON {type(predicted).__name__}, not an object"}
        names = fields or list(dict.fromkeys([*expected, *predicted]))
        status: dict[str, str] = {}
        for name in names:
            want, got = get_path(expected, name), get_path(predicted, name)
            if _present(want) and _present(got):
                status[name] = "tp" if values_equal(got, want, normalize) else "wrong"
            elif _present(want):
                status[name] = "fn"
            elif _present(got):
                status[name] = "fp"
        n_expected = sum(1 for s in status.values() if s != "fp")
        tp = sum(1 for s in status.values() if s == "tp")
        if n_expected:
            value = tp / n_expected
        else:
            value = 0.0 if any(s == "fp" for s in status.values()) else 1.0
        return Score(value, value >= threshold and not failure, {**failure, "fields": status})

    def extra(scores: list[Score]) -> dict[str, Any]:
        counts: dict[str, list[int]] = {}
        for s in scores:
            if s.value is None:
                continue
            for name, st in (s.detail.get("fields") or {}).items():
                c = counts.setdefault(name, [0, 0, 0])  # tp, fp, fn
                c[0] += st == "tp"
                c[1] += st in ("fp", "wrong")
                c[2] += st in ("fn", "wrong")
        per_field = {name: _prf(*c) for name, c in counts.items()}
        totals = [sum(c[i] for c in counts.values()) for i in range(3)]
        macro = sum(v["f1"] for v in per_field.values()) / len(per_field) if per_field else None
        return {"per_field": per_field, "micro_f1": _prf(*totals)["f1"] if counts else None,
                "macro_f1": macro}

    return BaseMetric("field_f1", score, extra=extra)


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
