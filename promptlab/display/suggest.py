"""`promptlab suggest`'s terminal view: the counts, the model's reading, the edits, the applied one."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from promptlab.display import out, p_text, print_diff, print_table, safe


def print_suggestions(data: dict[str, Any], console: Console = out) -> None:
    console.print(safe(f"run {data['run']} ({data['version']}): {data['failed']} of {data['n']} items failed",
                       "bold"))
    cls = data["classification"]
    if cls and cls["confusions"]:
        print_table("top confusions", ["labels", "count", "a read as b", "b read as a"],
                    [[" ↔ ".join(c["labels"]), c["count"], c["a_as_b"], c["b_as_a"]]
                     for c in cls["confusions"][:8]], console)
    if data["categories"]:
        print_table("work on first", ["category", "name", "items", "failed"],
                    [[c["kind"], c["name"], c["n"], c["failed"]] for c in data["categories"][:8]], console)
    for kind in ("errors", "parse_failures"):
        if data[kind]:
            print_table(kind.replace("_", " "), ["kind", "count", "first message"],
                        [[k["kind"], k["count"], k["message"]] for k in data[kind]], console)
    for pattern in [*data["patterns"], *data["model_patterns"]]:
        console.print(safe(f"- {pattern}"))
    if data["model_analysis"]:
        console.print(safe(f"{data['model']}: {data['model_analysis']}"))
    if data["model_note"]:
        console.print(safe(f"note: {data['model_note']}", "yellow"))
    if not data["edits"]:
        console.print("[dim]no edit to suggest[/]")
    for edit in data["edits"]:
        console.print(safe(f"\nedit {edit['number']} ({edit['source']}): {edit['title']}", "bold"))
        console.print(safe(edit["rationale"], "dim"))
        print_diff(edit["diff"], console)
    applied = data["applied"]
    if applied:
        claim = "significant" if applied["significant"] else "not significant"
        console.print(safe(
            f"\napplied edit {applied['edit']} as {applied['version']} (run {applied['run']}): "
            f"{applied['metric']} {applied['base']:.3f} → {applied['candidate']:.3f} "
            f"(delta {applied['delta']:+.3f}, p {p_text(applied['p_value'])}, {claim}; "
            f"{'promoted' if applied['promoted'] else 'not promoted: --promote makes it the latest version'})",
            "bold"))
        console.print(safe(applied["note"], "dim"))
