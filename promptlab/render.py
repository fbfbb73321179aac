"""Prompt version + case inputs (+ demos) → chat messages.

The signature's instruction opens the system message and the prompt's system
text follows it; each demo is a user turn (the template filled with the demo's
inputs) and an assistant turn (the demo's outputs as the model should write them).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta

from promptlab.errors import UsageError
from promptlab.models import Case, PromptContent, Signature

_env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                          keep_trailing_newline=False)


@lru_cache(maxsize=256)
def _compile(template: str) -> jinja2.Template:
    return _env.from_string(template)


def template_variables(template: str, where: str = "template") -> set[str]:
    try:
        return meta.find_undeclared_variables(_env.parse(template))
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"{where}: template syntax error on line {exc.lineno}: {exc.message}") from None


def check_prompt(content: PromptContent, signature: Signature | None, where: str = "prompt") -> None:
    """Fail before any call if the template names a variable the signature lacks."""
    variables = template_variables(content.template, f"{where}.template")
    variables |= template_variables(content.system, f"{where}.system")
    if signature is None:
        return
    unknown = sorted(variables - set(signature.input_names))
    if unknown:
        raise UsageError(
            f"{where}: template variable '{unknown[0]}' is not an input of signature "
            f"'{signature.name}' (inputs: {', '.join(signature.input_names)}); fix the template "
            f"or add the input to the signature")


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


def render_messages(content: PromptContent, signature: Signature | None,
                    inputs: dict[str, Any]) -> list[dict[str, str]]:
    own = _compile(content.system).render(**inputs) if content.system else ""
    system = "\n".join(p for p in (signature.instruction if signature else "", own) if p).strip()
    messages = [{"role": "system", "content": system}] if system else []
    template = _compile(content.template)
    for demo in content.demos:
        messages.append({"role": "user", "content": template.render(**demo.inputs)})
        messages.append({"role": "assistant", "content": format_output(demo.outputs, signature)})
    messages.append({"role": "user", "content": template.render(**inputs)})
    return messages


def prompt_tokens_estimate(content: PromptContent) -> int:
    """A cheap size measure used to break ties (fewer tokens wins)."""
    text = content.system + content.template + "".join(
        json.dumps(d.inputs) + json.dumps(d.outputs) for d in content.demos)
    return len(text.split())
