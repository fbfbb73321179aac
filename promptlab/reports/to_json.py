"""Facts → JSON (everything the other formats show, for machines)."""

from __future__ import annotations

import json
from typing import Any


def render(facts: Any) -> str:
    return json.dumps(facts, ensure_ascii=False, indent=2, default=str) + "\n"
