"""Finding metrics by name, checking their arguments, and the shared metric base.

A metric spec is a name (``"exact_match"``) or a dict ``{"name": ..., **args}``.
The registry maps names to factories, either callables or lazily imported
``"module:attr"`` strings (so heavy metrics cost nothing until used). A name
that is not registered but looks like ``"package.module:function"`` is a custom
metric: ``function(item: ScoreInput, **args)`` returning a Score, a number or a
bool (sync or async). Its module is looked for first in the context's
``base_dir`` (the experiment file's folder), then on the Python path -- never
in a folder the spec names: specs are stored with runs, and a resumed run
finds its module the way a new run would.

A factory that needs more than its arguments (a model, the experiment's
folder, the project's permission to run code) declares a keyword-only
``context`` parameter and receives the `MetricContext` given to `get_metric`.

Value conventions shared by the built-in metrics (see `BaseMetric`):
- the compared field is ``field`` if given, else the signature's first output
  field, else the only key of ``item.expected``;
- a parse failure (``item.parsed is None``) scores 0 / not passed with
  ``detail["parse_error"]`` -- never an exception;
- ``Score.value is None`` only when the result could not be scored at all
  (e.g. the case has no expected value); ``detail["error"]`` says why.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from types import UnionType
from typing import Any, Callable, Literal, Union, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter, ValidationError

from promptlab.models import FieldSpec
from promptlab.scorers.base import (Metric, MetricContext, MetricError, Score, ScoreInput, ScoringError,
                                    UnknownMetricError)
from promptlab.scorers.stats import summarize_scores

# ---------------------------------------------------------------------------
# shared base


class Early(Exception):
    """Raised by helpers to end scoring early with a ready Score."""

    def __init__(self, score: Score):
        super().__init__(score)
        self.score = score


class BaseMetric:
    """A metric built from a synchronous scoring function.

    `score` never raises: `Early` yields its Score, any other exception becomes
    an unscored result (value None, ``detail["error"]``). `summarize` returns
    `summarize_scores` plus whatever `extra(scores)` adds.
    """

    def __init__(self, name: str, fn: Callable[[ScoreInput], Score], spec: dict[str, Any] | None = None,
                 extra: Callable[[list[Score]], dict[str, Any]] | None = None):
        self.name = name
        self.spec = {"name": name, **(spec or {})}
        self._fn = fn
        self._extra = extra

    async def score(self, item: ScoreInput) -> Score:
        try:
            return self._fn(item)
        except Early as early:
            return early.score
        except Exception as exc:  # a metric bug must not kill a run
            return Score(None, False, {"error": f"{self.name}: {type(exc).__name__}: {exc}"})

    def summarize(self, scores: list[Score]) -> dict[str, Any]:
        summary = summarize_scores(scores)
        if self._extra is not None:
            summary.update(self._extra(scores))
        return summary

    def __repr__(self) -> str:
        return f"<metric {self.spec}>"


def field_spec(item: ScoreInput, name: str | None) -> FieldSpec | None:
    return next((f for f in item.outputs if f.name == name), None)


def resolve_field(item: ScoreInput, field: str | None) -> str | None:
    """The field to compare: given, else first signature output, else the only expected key."""
    if field is not None:
        return field
    if item.outputs:
        return item.outputs[0].name
    if len(item.expected) == 1:
        return next(iter(item.expected))
    return None


def need_field(item: ScoreInput, field: str | None) -> str:
    name = resolve_field(item, field)
    if name is None:
        raise Early(Score(None, False, {"error": "cannot tell which field to score: give the metric a 'field' argument"}))
    return name


def parse_failure(item: ScoreInput) -> Score:
    return Score(0.0, False, {"parse_error": item.parse_error or "the output could not be parsed"})


def expected_value(item: ScoreInput, field: str) -> Any:
    if field not in item.expected or item.expected[field] is None:
        raise Early(Score(None, False, {"error": f"the case has no expected value for '{field}'"}))
    return item.expected[field]


def predicted_value(item: ScoreInput, field: str) -> Any:
    """The parsed output value; a parse failure or a missing field is a scored failure."""
    if item.parsed is None:
        raise Early(parse_failure(item))
    if field not in item.parsed:
        if item.parse_error:  # this field did not fit the signature; the others did
            raise Early(parse_failure(item))
        raise Early(Score(0.0, False, {"reason": f"the output has no field '{field}'"}))
    return item.parsed[field]


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def text_value(item: ScoreInput, field: str | None) -> str:
    """The text a raw-text metric looks at.

    The parsed value of the field (as text) when there is one; the raw output
    when no field can be resolved, or when parsing failed but the field is the
    signature's only output and a plain string (then the raw text *is* its
    value). Otherwise a parse failure is a scored failure.
    """
    name = resolve_field(item, field)
    if name is None:
        return item.output
    if item.parsed is not None:
        if name in item.parsed:
            return as_text(item.parsed[name])
        if not item.outputs and field is None:
            return item.output
        if item.parse_error:
            raise Early(parse_failure(item))
        raise Early(Score(0.0, False, {"reason": f"the output has no field '{name}'"}))
    spec = field_spec(item, name)
    only_string = (not item.outputs) or (len(item.outputs) == 1 and spec is not None and spec.type == "string")
    if only_string:
        return item.output
    raise Early(parse_failure(item))


# ---------------------------------------------------------------------------
# the registry

_BUILTIN = {
    "exact_match": "promptlab.scorers.text:exact_match",
    "contains": "promptlab.scorers.text:contains",
    "regex": "promptlab.scorers.text:regex",
    "fuzzy": "promptlab.scorers.text:fuzzy",
    "token_f1": "promptlab.scorers.text:token_f1",
    "length": "promptlab.scorers.text:length",
    "json_valid": "promptlab.scorers.structured:json_valid",
    "json_field_match": "promptlab.scorers.structured:json_field_match",
    "json_schema": "promptlab.scorers.structured:json_schema",
    "field_f1": "promptlab.scorers.structured:field_f1",
    "numeric": "promptlab.scorers.numeric:numeric",
    "classification": "promptlab.scorers.classification:classification",
    "accuracy": "promptlab.scorers.classification:classification",
    "python_tests": "promptlab.scorers.code:python_tests",
    "judge": "promptlab.scorers.judge:judge",
    "embedding_similarity": "promptlab.scorers.embedding:embedding_similarity",
    "tool_call_match": "promptlab.scorers.tool_calls:tool_call_match",
}
_REGISTRY: dict[str, Callable[..., Any] | str] = dict(_BUILTIN)


def register_metric(name: str, factory: Callable[..., Any] | str) -> None:
    """Register a factory (a callable, or a lazily imported "module:attr" string)."""
    if not isinstance(name, str) or not name:
        raise MetricError("a metric name must be a non-empty string")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise MetricError(f"metric '{name}': the factory must be a callable or a 'module:attr' string")
    _REGISTRY[name] = factory


def list_metrics() -> list[str]:
    """Registered metric names, sorted (lazy entries are listed without importing them)."""
    return sorted(_REGISTRY)


def _import(name: str, target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MetricError(f"metric '{name}' is not available: cannot import {module_name} ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise MetricError(f"metric '{name}' is not available: {module_name} has no '{attr}'") from None


def _parse_spec(spec: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        name, args = spec, {}
    elif isinstance(spec, dict):
        args = dict(spec)
        name = args.pop("name", None)
        if not isinstance(name, str):
            raise MetricError(f"a metric spec needs a 'name' string (got {spec!r})")
    else:
        raise MetricError(f"a metric spec is a name or a mapping with a 'name' (got {spec!r})")
    name = name.strip()
    if not name:
        raise MetricError("a metric name must not be empty")
    return name, args


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "a mapping", list: "a list", type(None): "null"}


def _describe(hint: Any) -> str:
    """Plain words for a type hint: "a number or null", "one of 'search', 'fullmatch'"."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list and args:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is not None:
        return _TYPE_WORDS.get(origin, str(hint))
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _check_args(name: str, factory: Callable[..., Any], args: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown, missing or ill-typed arguments; return them coerced to their types."""
    sig = inspect.signature(factory)
    params = sig.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = get_type_hints(factory)
    except Exception:
        hints = {}
    known = [p for p in params if params[p].kind in (params[p].KEYWORD_ONLY, params[p].POSITIONAL_OR_KEYWORD)
             and p != CONTEXT]
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key == CONTEXT or (key not in params and not takes_any):
            options = ", ".join(known) or "none"
            raise MetricError(f"metric '{name}' has no argument '{key}' (its arguments: {options})")
        hint = hints.get(key)
        if hint is None or hint is Any:
            out[key] = value
            continue
        try:
            out[key] = TypeAdapter(hint).validate_python(value)
        except ValidationError:
            raise MetricError(f"metric '{name}': argument '{key}' must be {_describe(hint)} (got {value!r})") from None
    for key in known:
        if params[key].default is inspect.Parameter.empty and key not in out:
            raise MetricError(f"metric '{name}' needs the argument '{key}'")
    return out


CONTEXT = "context"  # the reserved factory parameter that receives the MetricContext


def wants_context(factory: Callable[..., Any]) -> bool:
    try:
        return CONTEXT in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def get_metric(spec: str | dict[str, Any], context: MetricContext | None = None) -> Metric:
    """Build a metric from its spec; unknown names and bad arguments raise MetricError.

    `context` goes to factories that declare a ``context`` parameter (and to
    custom metrics, for the folder their module is in); without one they get
    an empty `MetricContext` (config-less model aliases, the cwd).
    """
    name, args = _parse_spec(spec)
    context = context or MetricContext()
    entry = _REGISTRY.get(name)
    if entry is None:
        if ":" in name:
            return _custom_metric(name, args, context)
        raise UnknownMetricError(f"unknown metric '{name}': known metrics are {', '.join(list_metrics())}")
    factory = _import(name, entry) if isinstance(entry, str) else entry
    args = _check_args(name, factory, args)
    try:
        metric = factory(**args, **({CONTEXT: context} if wants_context(factory) else {}))
    except MetricError:
        raise
    except (TypeError, ValueError) as exc:
        raise MetricError(f"metric '{name}': {exc}") from None
    for attr, value in (("name", name), ("spec", {"name": name, **args})):
        try:
            setattr(metric, attr, value)
        except AttributeError:
            pass
    return metric


class FunctionMetric:
    """A custom metric: ``fn(item, **args) -> Score | float | bool`` (sync or async).

    A number passes when it is >= ``threshold`` (an optional spec argument,
    default 0.5, not passed on to the function). A function that raises, or
    returns anything else (None, a string, NaN...), makes that item an error
    (`ScoringError`: kind "scorer", message kept, counted in the run's errors);
    the run goes on.
    """

    def __init__(self, name: str, fn: Callable[..., Any], args: dict[str, Any]):
        self.name, self.spec = name, {"name": name, **args}
        self._fn = fn
        self._threshold = args.get("threshold", 0.5)
        self._args = {k: v for k, v in args.items() if k not in _RESERVED}

    async def score(self, item: ScoreInput) -> Score:
        name = self.name
        try:
            result = self._fn(item, **self._args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise ScoringError(f"{name} raised {type(exc).__name__}: {exc}") from None
        if isinstance(result, Score):
            return result
        if isinstance(result, bool):
            return Score(1.0 if result else 0.0, result)
        if isinstance(result, (int, float)) and result == result:  # not NaN
            return Score(float(result), float(result) >= self._threshold)
        raise ScoringError(f"{name} returned {type(result).__name__} {str(result)[:40]!r}, "
                           f"not a Score, number or bool")

    def summarize(self, scores: list[Score]) -> dict[str, Any]:
        return summarize_scores(scores)

    def __repr__(self) -> str:
        return f"<metric {self.spec}>"


# Spec keys of a custom metric that are not passed to its function.
_RESERVED = ("threshold",)
_LOADED: dict[Path, Any] = {}


def _module_file(module_name: str, folder: Path) -> Path | None:
    parts = module_name.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    for path in (folder.joinpath(*parts).with_suffix(".py"), folder.joinpath(*parts, "__init__.py")):
        if path.is_file():
            return path.resolve()
    return None


def _load_file(name: str, module_name: str, path: Path) -> Any:
    """Import a module file under a private name, its folder on sys.path only meanwhile.

    Two experiments with a `metrics.py` each get two distinct modules; sys.path
    is left as it was (modules the file itself imports stay importable).
    """
    if path in _LOADED:
        return _LOADED[path]
    private = f"_promptlab_custom_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{module_name.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(private, path)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    sys.modules[private] = module  # dataclasses and pickling look the module up
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(private, None)
        raise MetricError(f"metric '{name}': cannot import {path} ({type(exc).__name__}: {exc})") from None
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    _LOADED[path] = module
    return module


def _custom_metric(name: str, args: dict[str, Any], context: MetricContext) -> Metric:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise MetricError(f"metric '{name}': a custom metric is named MODULE:FUNCTION")
    if "module_dir" in args:  # specs are stored with runs, and a database holds data, never code locations
        raise MetricError(f"metric '{name}': 'module_dir' is not accepted (a spec cannot say where code is "
                          f"imported from); put {module_name.replace('.', '/')}.py next to the experiment "
                          f"file, or in the working folder for eval and --resume")
    found = _module_file(module_name, context.base_dir) if context.base_dir else None
    if found is not None:
        module = _load_file(name, module_name, found)
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            where = f"in {context.base_dir} or " if context.base_dir else ""
            missing = f" (missing: {exc.name})" if exc.name and exc.name != module_name else ""
            raise MetricError(f"metric '{name}': no module '{module_name}' {where}on the Python path"
                              f"{missing}; put {module_name.replace('.', '/')}.py next to the "
                              f"experiment file or fix the name") from None
        except Exception as exc:
            raise MetricError(f"metric '{name}': cannot import {module_name} ({type(exc).__name__}: {exc})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise MetricError(f"metric '{name}': module '{module_name}' has no function '{attr}'"
                          f" (it has: {', '.join(found) or 'none'})")
    if not callable(fn):
        raise MetricError(f"metric '{name}': {name} is not a function")
    threshold = args.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise MetricError(f"metric '{name}': argument 'threshold' must be a number (got {threshold!r})")
    return FunctionMetric(name, fn, args)
