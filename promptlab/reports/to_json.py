"""Facts → JSON (everything the other formats show, for machines), written as it is read: a run's
result lists are streamed item by item, so the JSON of a run of any size takes a page of memory.

    chunks(facts) -> pieces of the same text as json.dumps(facts, ensure_ascii=False, indent=2)
"""

from __future__ import annotations

import json
from typing import Any, Iterator

_INDENT = 2


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=_INDENT, default=str)


def render(facts: Any) -> str:
    return "".join(chunks(facts))


def chunks(facts: Any) -> Iterator[str]:
    """The report in pieces: the facts with each streamed list (a value of the top-level dict that
    is not a list) left as a marker, then each marker replaced by its items as they are read."""
    if not isinstance(facts, dict):
        yield _dumps(facts) + "\n"
        return
    streamed = {key: value for key, value in facts.items()
                if not isinstance(value, (dict, list, tuple, str, int, float, bool, type(None)))}
    marker = "\x00streamed:{}\x00"
    text = _dumps({k: marker.format(k) if k in streamed else v for k, v in facts.items()})
    for key, items in streamed.items():
        head, _, text = text.partition(_dumps(marker.format(key)))
        yield head
        yield from _items(items, depth=1)
    yield text + "\n"


def _items(items: Any, depth: int) -> Iterator[str]:
    """A list at `depth` as json.dumps(indent=2) writes it, one item at a time."""
    inner = "\n" + " " * (_INDENT * (depth + 1))
    first = True
    for item in items:
        yield ("[" if first else ",") + inner + _dumps(item).replace("\n", inner)
        first = False
    yield "[]" if first else "\n" + " " * (_INDENT * depth) + "]"
