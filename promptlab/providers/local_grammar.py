"""The embedded model's structured outputs: a ``response_format`` as a llama.cpp grammar.

An object whose single property is an enum becomes its bare choices (`` positive``
or ``negative``: few-shot demos are written that way); any other schema becomes
JSON through ``LlamaGrammar.from_json_schema``, with a ``maxLength`` on each free
string so that the object closes within ``max_tokens``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from promptlab.providers.llama import LocalModelError, import_llama


def _string_caps(schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """The schema with a maxLength on each top-level string (and list of strings) that has none:
    what the object's keys and other values leave of `max_tokens`, shared out, at about two
    characters a token (a free string otherwise runs until the tokens are spent, and the JSON
    never closes)."""
    props = schema.get("properties")
    if not isinstance(props, dict):
        return schema
    free = [name for name, p in props.items() if isinstance(p, dict) and "enum" not in p
            and p.get("type") in ("string", "array") and "maxLength" not in p]
    if not free:
        return schema
    skeleton = len(json.dumps({name: [""] * 4 if props[name].get("type") == "array" else "" for name in props})) // 2
    numbers = sum(8 for p in props.values() if isinstance(p, dict) and p.get("type") in ("number", "integer"))
    cap = max(8, 2 * (max_tokens - skeleton - numbers) // len(free))
    capped = dict(props)
    for name in free:
        if props[name].get("type") == "string":
            capped[name] = {**props[name], "maxLength": cap}
        elif props[name].get("items", {}).get("type") == "string":
            capped[name] = {**props[name], "maxItems": 4, "items": {**props[name]["items"], "maxLength": cap // 4}}
    return {**schema, "properties": capped}


# llama-cpp-python's JSON string character takes raw control characters (a newline inside a
# string), which JSON does not: they must be escaped, as llama.cpp's own converter now says
_JSON_CHAR = re.compile(r'^char ::= \[\^"\\\\\]', re.M)
_STRICT_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F]'
_GRAMMARS: dict[str, Any] = {}  # the grammar text -> its LlamaGrammar (reusable: llama.cpp parses it per call)


def grammar_for(response_format: Any, max_tokens: int) -> Any:
    """A ``response_format`` as a llama.cpp grammar (None for type text); see the module doc."""
    if not isinstance(response_format, dict) or response_format.get("type") in (None, "text"):
        return None
    kind = response_format.get("type")
    schema = (response_format.get("json_schema") or {}).get("schema") if kind == "json_schema" else \
        {"type": "object"} if kind == "json_object" else None
    if not isinstance(schema, dict):
        raise LocalModelError(f"response_format of type {kind!r} with no schema: the local model takes "
                              f"json_schema (with a schema) or json_object")
    llama_cpp = import_llama()
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    only = next(iter(props.values())) if len(props) == 1 else None
    if isinstance(only, dict) and only.get("enum") and all(isinstance(c, str) for c in only["enum"]):
        # json.dumps writes a GBNF literal: its escapes (\" \\ \uXXXX) are GBNF's
        text = 'root ::= " "? (' + " | ".join(json.dumps(c) for c in only["enum"]) + ")"
    else:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        try:
            text = json_schema_to_gbnf(json.dumps(_string_caps(schema, max_tokens)))
            text = _JSON_CHAR.sub(lambda _: _STRICT_JSON_CHAR, text)
        except Exception as exc:  # the converter's own errors: an unsupported schema construct
            raise LocalModelError(f"the local model cannot turn this response_format into a grammar: "
                                  f"{type(exc).__name__}: {exc}") from None
    if text not in _GRAMMARS:
        _GRAMMARS[text] = llama_cpp.LlamaGrammar.from_string(text, verbose=False)
    return _GRAMMARS[text]
