"""Prompt versions as text, and the unified diff of two of them (CLI, compare and reports share it)."""

from __future__ import annotations

import difflib
import json

from promptlab.models import PromptVersion
from promptlab.prompting.images import shorten


def prompt_text(p: PromptVersion) -> str:
    """A version as readable text (what `prompt show` prints and `diff_text` compares)."""
    lines = [f"# system\n{p.content.system}", f"# template\n{p.content.template}"]
    for i, demo in enumerate(p.content.demos, 1):
        lines.append(f"# demo {i}\n{json.dumps(shorten(demo.inputs), ensure_ascii=False)} -> "
                     f"{json.dumps(demo.outputs, ensure_ascii=False)}")
    if p.content.demo_selector:  # per-input demos: the settings and the pool's case ids
        selector = p.content.demo_selector.model_dump(mode="json", exclude={"pool"}, exclude_none=True)
        lines.append(f"# demo selector\n{json.dumps(selector, sort_keys=True)}\n"
                     f"pool: {len(p.content.demo_selector.pool)} cases "
                     f"{json.dumps(list(p.content.demo_selector.pool))}")
    if p.content.structured:  # the signature drives the decoder
        lines.append("# structured\ntrue" + ("\nfallback: unconstrained on a model that cannot"
                                             if p.content.structured_fallback else ""))
    if p.content.params:
        lines.append(f"# params\n{json.dumps(p.content.params, sort_keys=True)}")
    for tool in p.content.tools:  # one line each: a changed description or schema shows as that tool's line
        lines.append(f"# tool {tool['function']['name']}\n{json.dumps(tool, sort_keys=True, ensure_ascii=False)}")
    if p.content.tool_choice is not None:
        lines.append(f"# tool_choice\n{json.dumps(p.content.tool_choice, sort_keys=True)}")
    return "\n".join(lines) + "\n"


def diff_text(a: PromptVersion, b: PromptVersion) -> str:
    """Unified diff from version a to version b ('' when their text is the same)."""
    return "".join(difflib.unified_diff(prompt_text(a).splitlines(True), prompt_text(b).splitlines(True),
                                        fromfile=a.ref, tofile=b.ref))
