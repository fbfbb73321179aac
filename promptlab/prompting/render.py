"""Prompt version + case inputs (+ demos or a demo selector) → chat messages.

The signature's instruction opens the system message and the prompt's system
text follows it; each demo is a user turn (the template filled with the demo's
inputs) and an assistant turn (the demo's outputs as the model should write them).
Earlier conversation turns (`messages` inputs) come before their user turn, and
image inputs ride in it as content parts (`promptlab.prompting.conversation`).

A version with a demo selector picks its demos per input (`select_demos`): the
k pool cases nearest to the input by a lexical similarity or by the cosine of
their embeddings, the input's own case never among them. The caller passes a
resolver that fetches the pool's cases (and, for embeddings, the vectors of the
texts, from the gateway's cache), so this module never reads the database or
calls a model; the choice depends only on the input, the pool and the selector,
so the same input renders the same messages every time.

Templates are untrusted (experiment files, databases, optimizer proposals): they
are checked statically before they are stored or rendered, and render in jinja2's
immutable sandbox with no globals but `range`, so a template can never run code.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import jinja2
from jinja2 import meta, nodes
from jinja2.defaults import DEFAULT_NAMESPACE
from jinja2.sandbox import SecurityError

from promptlab.errors import UsageError
from promptlab.models import Case, Demo, DemoSelector, PromptContent, Signature, check_values
from promptlab.prompting import conversation
from promptlab.prompting.template_sandbox import make_environment, render_bounded, static_refusal


class RenderError(UsageError):
    """A template that failed for one input (a limit, a division by zero…): that item's error
    (kind `render`), not the run's end."""

_env = make_environment()
_DROPPED_GLOBALS = set(DEFAULT_NAMESPACE) - set(_env.globals)
# str.format/format_map reach attributes from inside the format string; mro reaches classes.
_FORBIDDEN_ATTRIBUTES = {"format", "format_map", "mro"}
_TAGS = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from",
         nodes.Extends: "extends"}


def _refusal(node: nodes.Node) -> str | None:
    """Why a template node reaches beyond the values it is given, if it does."""
    if type(node) in _TAGS:
        return f"{{% {_TAGS[type(node)]} %}} is not supported (a prompt is a single template)"
    if isinstance(node, nodes.Getattr) and (node.attr.startswith("_") or node.attr in _FORBIDDEN_ATTRIBUTES):
        return f"'.{node.attr}' reaches beyond the template's values"
    if isinstance(node, nodes.Const) and isinstance(node.value, str) and "__" in node.value:
        return f"the string '{node.value[:40]}' names a private attribute"
    if (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str) and node.arg.value.startswith("_")):
        return f"'[{node.arg.value!r}]' reaches beyond the template's values"
    if isinstance(node, nodes.Filter) and node.name == "attr" and not (
            node.args and isinstance(node.args[0], nodes.Const)):
        return "the attr filter needs a constant attribute name"
    return None


@lru_cache(maxsize=256)
def _checked(template: str) -> tuple[jinja2.Template, frozenset[str]]:
    """The compiled template and the variables it reads; ValueError if it is refused."""
    ast = _env.parse(template)
    for node in ast.find_all(nodes.Node):
        reason = _refusal(node)
        if reason:
            raise ValueError(f"{reason}; templates may only use the signature's inputs, filters "
                             f"and tests")
        too_much = static_refusal(node)
        if too_much:
            raise ValueError(f"{too_much}; a template builds at most what a prompt needs")
    return _env.from_string(template), frozenset(meta.find_undeclared_variables(ast))


def _compile(template: str, where: str) -> tuple[jinja2.Template, frozenset[str]]:
    try:
        return _checked(template)
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"{where}: template syntax error on line {exc.lineno}: {exc.message}") from None
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def check_prompt(content: PromptContent, signature: Signature | None, where: str = "prompt") -> None:
    """Fail before any call if a template reaches beyond its inputs (a variable the signature
    lacks, a private attribute, a jinja2 global) or a demo does not fit the signature, or it is
    structured with no signature to build the schema from."""
    if content.structured and signature is None:
        raise UsageError(f"{where}: structured decoding needs a signature (the schema is built from its "
                         f"outputs); give the prompt a signature or drop structured")
    for field in ("template", "system"):
        variables = _compile(getattr(content, field), f"{where}.{field}")[1]
        if signature is not None:
            pictures = sorted(variables & set(signature.fields_of("image")))
            if pictures:
                raise UsageError(f"{where}.{field}: input '{pictures[0]}' is an image, sent as an image "
                                 f"part of the user message; the template cannot write it as text")
            unknown = sorted(variables - set(signature.input_names))
            if unknown:
                raise UsageError(
                    f"{where}.{field}: template variable '{unknown[0]}' is not an input of signature "
                    f"'{signature.name}' (inputs: {', '.join(signature.input_names)}); fix the template "
                    f"or add the input to the signature")
        elif variables & _DROPPED_GLOBALS:
            raise UsageError(f"{where}.{field}: '{sorted(variables & _DROPPED_GLOBALS)[0]}' is a jinja2 "
                             f"global that promptlab templates do not have; use the prompt's inputs")
    for i, demo in enumerate(content.demos, start=1):
        missing = [n for n in signature.input_names if n not in demo.inputs] if signature else []
        if missing:
            raise UsageError(f"{where}: demo {i} lacks input '{missing[0]}' (signature "
                             f"'{signature.name}' needs {', '.join(signature.input_names)})")
        try:
            check_values(demo.inputs, signature.inputs if signature else (), "input")
            check_values(demo.outputs, signature.outputs if signature else (), "output")
        except ValueError as exc:
            raise UsageError(f"{where}: demo {i}: {exc}") from None


def check_cases(cases: list[Case], signature: Signature, where: str = "cases") -> None:
    for case in cases:
        missing = [n for n in signature.input_names if n not in case.inputs]
        if missing:
            shown = json.dumps(case.inputs, ensure_ascii=False)[:80]
            raise UsageError(f"{where}: case {case.id or shown} lacks input field '{missing[0]}' "
                             f"required by signature '{signature.name}'; add it to every case")


def format_output(outputs: dict[str, Any], signature: Signature | None) -> str:
    """How a demo's outputs are written as the assistant's reply."""
    names = signature.output_names if signature else list(outputs)
    if len(names) == 1:
        value = outputs.get(names[0], "")
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return json.dumps({n: outputs.get(n) for n in names}, ensure_ascii=False)


def _render(template: str, values: dict[str, Any], where: str) -> str:
    compiled = _compile(template, where)[0]
    try:
        return render_bounded(compiled, values)
    except SecurityError as exc:  # a limit, or a template stored before these checks existed
        raise RenderError(f"{where}: the sandbox refused the template ({exc}); fix the template") from None
    except Exception as exc:  # noqa: BLE001 — whatever one input makes a template raise is that item's error
        raise RenderError(f"{where}: the template failed to render ({type(exc).__name__}: {exc}); "
                          f"fix the template") from None


# ids -> the stored cases (those that exist); passed in by whoever renders a selector version
PoolResolver = Callable[[Sequence[int]], Sequence[Case]]


def render_messages(content: PromptContent, signature: Signature | None, inputs: dict[str, Any], *,
                    case_id: int | None = None, resolve: PoolResolver | None = None,
                    vectors: Mapping[str, Sequence[float]] | None = None) -> list[dict[str, Any]]:
    """The messages for one input: system, demos (each after its own earlier turns), the
    input's earlier turns (`messages` inputs), then its user turn (with any image parts). A version with a demo selector needs `resolve` (its pool's
    cases), `vectors` if it compares embeddings (`demo_text` -> vector), and the case's id so
    that case is never its own demo."""
    demos = content.demos
    if content.demo_selector is not None:
        if resolve is None:
            raise ValueError("a prompt with a demo selector renders only with a pool resolver")
        demos = select_demos(content.demo_selector, _pool(content.demo_selector, resolve), inputs,
                             signature, case_id=case_id, vectors=vectors)
    own = _render(content.system, inputs, "prompt system text") if content.system else ""
    system = "\n".join(p for p in (signature.instruction if signature else "", own) if p).strip()
    messages = [{"role": "system", "content": system}] if system else []
    for demo in demos:  # each demo's own earlier turns, its question, its answer
        messages += conversation.turns(demo.inputs, signature)
        messages.append(conversation.user_turn(_render(content.template, demo.inputs, "prompt template"),
                                               demo.inputs, signature))
        messages.append({"role": "assistant", "content": format_output(demo.outputs, signature)})
    messages += conversation.turns(inputs, signature)
    messages.append(conversation.user_turn(_render(content.template, inputs, "prompt template"),
                                           inputs, signature))
    return messages


def _pool(selector: DemoSelector, resolve: PoolResolver) -> list[Case]:
    cases = list(resolve(selector.pool))
    missing = sorted(set(selector.pool) - {c.id for c in cases})
    if missing:  # a version must render as it did: its pool cannot shrink silently
        raise UsageError(f"demo_selector: pool case {missing[0]} is gone ({len(missing)} of "
                         f"{len(selector.pool)} missing); make a new version with a pool that exists")
    return sorted(cases, key=lambda c: c.id or 0)


def demo_text(inputs: dict[str, Any], signature: Signature | None) -> str:
    """The input fields as one text to compare (strings as they are, other values as JSON)."""
    names = [f.name for f in signature.inputs if f.type != "image"] if signature else sorted(inputs)
    return "\n".join(v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)
                     for v in (inputs.get(n) for n in names) if v is not None)


def select_demos(selector: DemoSelector, pool: Sequence[Case], inputs: dict[str, Any],
                 signature: Signature | None, *, case_id: int | None = None,
                 vectors: Mapping[str, Sequence[float]] | None = None) -> tuple[Demo, ...]:
    """The k pool cases nearest to the input (rapidfuzz token-set ratio over the input fields,
    or the cosine of their embeddings in `vectors`; ties by case id), the most similar last —
    next to the question. Never the input's own case (same id or same inputs: leave-one-out).
    `balance`: take the nearest of each label in turn."""
    names = signature.input_names if signature else sorted(inputs)
    key = json.dumps(inputs, sort_keys=True, ensure_ascii=False)
    others = [c for c in pool if c.id != case_id and json.dumps(c.inputs, sort_keys=True,
                                                                ensure_ascii=False) != key]
    if not others:
        return ()
    query, texts = demo_text(inputs, signature), [demo_text(c.inputs, signature) for c in others]
    if selector.similarity == "embedding":
        missing = [t for t in [query, *texts] if t not in (vectors or {})]
        if missing:
            raise ValueError(f"an embedding demo selector renders only with the vectors of its texts "
                             f"({len(missing)} missing)")
        scores = [_cosine(vectors[query], vectors[t]) for t in texts]
    else:
        from rapidfuzz import fuzz, process

        scores = process.cdist([query], texts, scorer=fuzz.token_set_ratio)[0]
    ranked = [c for _, c in sorted(zip(scores, others), key=lambda p: (-float(p[0]), p[1].id or 0))]
    if selector.balance:
        ranked = _interleave_labels(ranked, signature)
    chosen = ranked[:selector.k]
    outputs = signature.output_names if signature else None
    return tuple(Demo(inputs={n: c.inputs[n] for n in names if n in c.inputs},
                      outputs={n: v for n, v in c.expected.items() if outputs is None or n in outputs})
                 for c in reversed(chosen))


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return round(sum(x * y for x, y in zip(a, b)) / norm, 9) if norm else 0.0  # rounded: ties stay ties


def _interleave_labels(ranked: list[Case], signature: Signature | None) -> list[Case]:
    """Round-robin over labels (in order of each label's nearest case), nearest first within each."""
    outputs = signature.output_names if signature else None
    groups: dict[str, list[Case]] = {}
    for case in ranked:
        label = json.dumps({n: v for n, v in case.expected.items() if outputs is None or n in outputs},
                           sort_keys=True, ensure_ascii=False)
        groups.setdefault(label, []).append(case)
    order, lists = [], list(groups.values())
    for i in range(max(len(g) for g in lists)):
        order += [g[i] for g in lists if i < len(g)]
    return order


def prompt_tokens_estimate(content: PromptContent) -> int:
    """A cheap size measure used to break ties (fewer tokens wins); a selector counts as its k
    demos at the template's size."""
    text = content.system + content.template + "".join(
        json.dumps(d.inputs) + json.dumps(d.outputs) for d in content.demos)
    selector = content.demo_selector
    return len(text.split()) + (selector.k * (len(content.template.split()) + 2) if selector else 0)
