"""Shared set-up for the compare, gates and report tests: a sentiment project on the fake server.

Cases are "case-NN good item" (positive) and "case-NN bad item" (negative).
Prompt p@1 is "Review: {{ text }}" and p@2 is "Rate: {{ text }}"; `rules`
builds fake-server rules under which p@1 gets everything right and p@2 gets
wrong exactly the cases listed in `broken` (and returns special replies for
`replies`).
"""

from __future__ import annotations

import json

V1 = "Review: {{ text }}"
V2 = "Rate: {{ text }}"


def text(i: int) -> str:
    return f"case-{i:02d} {'good' if i % 2 else 'bad'} item"


def label(i: int) -> str:
    return "positive" if i % 2 else "negative"


def rules(broken=(), replies: dict[int, str] | None = None, prefix: str = "Rate: ") -> list[list[str]]:
    out = [[f"{prefix}{text(i)}", reply] for i, reply in (replies or {}).items()]
    out += [[f"{prefix}{text(i)}", label(i + 1)] for i in broken]  # the wrong label
    return out + [["good", "positive"], ["bad", "negative"]]


def setup_project(ws, n: int = 30, *, second: bool = True) -> dict[int, int]:
    """Project demo, signature, n cases, p@1 (and p@2); returns case number -> case id."""
    ws.write("cases.jsonl", "".join(json.dumps({"text": text(i), "label": label(i)}) + "\n" for i in range(n)))
    for args in (("project", "add", "demo"),
                 ("signature", "add", "sentiment", "-i", "text", "-o", "label:enum:positive,negative"),
                 ("case", "import", "cases.jsonl"),
                 ("prompt", "add", "p", "--signature", "sentiment", "--template", V1),
                 *((("prompt", "add", "p", "--signature", "sentiment", "--template", V2),) if second else ())):
        result = ws.cli(*args)
        assert result.code == 0, (args, result.stderr)
    ids = {json.loads(inputs)["text"]: case_id for case_id, inputs in ws.rows("select id, inputs from cases")}
    return {i: ids[text(i)] for i in range(n)}


def evaluate(ws, prompt: str, name: str, *extra: str, code: int = 0) -> dict:
    result = ws.cli("eval", "--prompt", prompt, "--name", name, "--metric", "classification",
                    "--metric", "exact_match", "--json", *extra)
    assert result.code == code, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}
