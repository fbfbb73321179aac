"""Structured outputs: the signature drives the decoder.

A prompt version with `structured: true` sends its signature's outputs as a JSON
schema (`response_format`, type `json_schema`, strict when every field has a
closed type), so a provider that enforces it can only answer what the parser
reads. Each provider has its own mechanism (`providers.gateway.structured_mode` picks it per
model); this module builds what each one sends:

- `response_format`: the schema as OpenAI takes it, through LiteLLM (which turns
  it into Anthropic's tool use, Gemini's response schema…) and the direct path;
- `grammar`: the same `response_format` to the embedded llama.cpp model, which
  compiles it into a grammar (`providers.local_grammar.grammar_for`): a one-field enum as
  its bare choices, so few-shot demos written as bare labels keep working;
- `vllm` / `vllm_guided`: a one-field enum as vLLM's choice list
  (`structured_outputs.choice`, or `guided_choice` before vLLM 0.12), several
  fields as the JSON schema (`response_format`, or `guided_json`);
- `none`: the model cannot constrain its decoding: refused before any call
  unless the version allows `structured_fallback`, then sent unconstrained.

Replies are parsed by `outputs.parse_output` either way, bare or JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from promptlab.errors import UsageError
from promptlab.models import FieldSpec, PromptContent, Signature

MECHANISMS = ("response_format", "grammar", "vllm", "vllm_guided", "none")
_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
    "bool": {"type": "boolean"}, "list": {"type": "array", "items": {"type": "string"}},
    "json": {},  # any JSON value: an open type, so the schema cannot be strict
}


def field_schema(spec: FieldSpec) -> dict[str, Any]:
    """One output field as JSON schema: its type (an enum's choices), its description."""
    schema = {"type": "string", "enum": list(spec.choices or ())} if spec.type == "enum" \
        else dict(_TYPES[spec.type])
    if spec.description:
        schema["description"] = spec.description
    return schema


def output_schema(signature: Signature) -> dict[str, Any]:
    """The signature's outputs as one JSON object schema: every field required, no other keys."""
    return {"type": "object",
            "properties": {spec.name: field_schema(spec) for spec in signature.outputs},
            "required": signature.output_names, "additionalProperties": False}


def response_format(signature: Signature) -> dict[str, Any]:
    """OpenAI's `response_format` for the signature. Strict (the provider guarantees the schema)
    unless a `json` field leaves a value open, which strict mode does not take."""
    strict = all(spec.type != "json" for spec in signature.outputs)
    name = re.sub(r"[^A-Za-z0-9_-]", "_", signature.name)[:64] or "outputs"
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": output_schema(signature), "strict": strict}}


def single_enum(signature: Signature) -> FieldSpec | None:
    """The enum field of a one-field enum signature (decoded as its bare choices), else None."""
    only = signature.outputs[0] if len(signature.outputs) == 1 else None
    return only if only is not None and only.type == "enum" else None


@dataclass(frozen=True)
class Decoding:
    """How a run's replies are decoded: `mechanism` None means unconstrained; `params` are the
    request parameters that carry the constraint (merged into every request of the run)."""

    structured: bool = False
    mechanism: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # why a structured version is decoded unconstrained

    @property
    def constrained(self) -> bool:
        return self.mechanism is not None

    def as_json(self) -> dict[str, Any]:
        return {"structured": self.structured, "constrained": self.constrained,
                "mechanism": self.mechanism, **({"note": self.note} if self.note else {})}


def decoding(content: PromptContent, signature: Signature | None, mode: str | None, *,
             model: str, ref: str) -> Decoding:
    """What a run of version `ref` on `model` sends to constrain its replies (`mode`: the model's
    mechanism, `providers.gateway.structured_mode`; only asked for a structured version). UsageError (exit 2,
    before any call) for a structured version without a signature, or on a model that cannot
    constrain its decoding unless the version allows the fallback."""
    if not content.structured:
        return Decoding()
    if signature is None:
        raise UsageError(f"prompt '{ref}' is structured but has no signature to build a schema from; "
                         f"give it one (--signature) or drop structured")
    if mode == "none":
        if not content.structured_fallback:
            raise UsageError(
                f"model '{model}' cannot constrain its decoding to a schema, and prompt '{ref}' is "
                f"structured; use a model that can, set structured_outputs for '{model}' in "
                f"promptlab.toml if it does, or allow structured_fallback: true in the prompt")
        return Decoding(True, None, {}, f"model '{model}' cannot constrain its decoding: sent "
                                        f"unconstrained (structured_fallback)")
    if mode not in MECHANISMS:
        raise UsageError(f"model '{model}': structured_outputs '{mode}' is not one of "
                         f"{', '.join(MECHANISMS)}")
    enum = single_enum(signature)
    if mode in ("vllm", "vllm_guided") and enum is not None:
        choices = list(enum.choices or ())
        extra = {"structured_outputs": {"choice": choices}} if mode == "vllm" else {"guided_choice": choices}
        return Decoding(True, mode, {"extra_body": extra})
    if mode == "vllm_guided":
        return Decoding(True, mode, {"extra_body": {"guided_json": output_schema(signature)}})
    return Decoding(True, mode, {"response_format": response_format(signature)})


def with_decoding(params: dict[str, Any], decoding: Decoding, where: str) -> dict[str, Any]:
    """A request's parameters with the decoding's merged in (`extra_body` key by key); a version
    whose own params already set what structured decoding sends is refused, never overridden."""
    merged = dict(params)
    for key, value in decoding.params.items():
        if key == "extra_body":
            own = merged.get("extra_body") or {}
            clash = sorted(set(own) & set(value))
            if clash:
                raise UsageError(f"{where}: params.extra_body.{clash[0]} clashes with structured "
                                 f"decoding; drop one of them")
            merged["extra_body"] = {**own, **value}
        elif key in merged:
            raise UsageError(f"{where}: params.{key} clashes with structured decoding, which sends "
                             f"its own; drop params.{key} or structured")
        else:
            merged[key] = value
    return merged
