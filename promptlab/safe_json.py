"""JSON from outside (provider replies, batch output lines, what a model writes) parsed with a
depth bound: json.loads recurses once per level, so a reply of 200,000 nested `[` would raise
RecursionError where a ValueError is expected, and a value a few hundred levels deep trips
whatever walks it next. Text deeper than MAX_JSON_DEPTH is refused before it is parsed."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 64
# a JSON string (skipped whole: brackets inside it do not nest) or a bracket
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')


class TooDeep(ValueError):
    """JSON nested deeper than the bound."""


def check_depth(text: str, limit: int = MAX_JSON_DEPTH) -> None:
    """TooDeep if `text` opens more than `limit` nested arrays or objects (a scan, no parse)."""
    depth = 0
    for token in _TOKENS.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > limit:
                raise TooDeep(f"JSON nested more than {limit} levels deep")
        elif bracket in "]}":
            depth -= 1


def loads(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """json.loads with the depth bound; ValueError (TooDeep or JSONDecodeError) when refused."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    check_depth(text, limit)
    return json.loads(text)


def raw_decode(text: str, limit: int = MAX_JSON_DEPTH) -> Any:
    """The first JSON value at the start of `text` (what follows it is ignored), depth-bounded."""
    check_depth(text, limit)
    return json.JSONDecoder().raw_decode(text)[0]
