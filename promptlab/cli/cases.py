"""`promptlab case add|import|export|list|golden`: golden test cases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from promptlab.cli.common import emit_json, parse_pairs

app = typer.Typer(help="Test cases: inputs, expected outputs, split, tags, golden flag.",
                  no_args_is_help=True)
Project = Annotated[Optional[str], typer.Option(help="Project name (optional when there is one).")]
Signature = Annotated[Optional[str], typer.Option(
    help="Signature whose fields name the row's inputs and outputs (default: the only one).")]


def _signature(state, project_id: int, name: str | None):
    if name:
        return state.store.signature(project_id, name)
    sigs = state.store.signatures(project_id)
    return sigs[0] if len(sigs) == 1 else None


@app.command("add")
def add(ctx: typer.Context, project: Project = None,
        input: Annotated[list[str], typer.Option("--input", "-i", help="Input KEY=VALUE.")] = [],
        expected: Annotated[list[str], typer.Option("--expected", "-e", help="Expected KEY=VALUE.")] = [],
        split: Annotated[Optional[str], typer.Option(help="train, val or test.")] = None,
        tag: Annotated[list[str], typer.Option(help="A tag (repeatable).")] = [],
        signature: Signature = None) -> None:
    """Add one case."""
    from promptlab.caseio import rows_to_cases

    state = ctx.obj
    project_id = state.project_id(project)
    row = {"inputs": parse_pairs(input, "--input"), "expected": parse_pairs(expected, "--expected"),
           "split": split, "tags": tag}
    cases = rows_to_cases([row], _signature(state, project_id, signature), "case add")
    added, _ = state.store.add_cases(project_id, cases, source="cli")
    typer.echo("added 1 case" if added else "case already present")


@app.command("import")
def import_(ctx: typer.Context, file: Path, project: Project = None, signature: Signature = None,
            format: Annotated[Optional[str], typer.Option(help="csv, json, jsonl or yaml.")] = None,
            split: Annotated[Optional[str], typer.Option(help="Split for rows that lack one.")] = None,
            not_golden: Annotated[bool, typer.Option(help="Import as non-golden.")] = False) -> None:
    """Import cases (re-importing the same rows adds nothing)."""
    from promptlab.caseio import load_rows, rows_to_cases

    state = ctx.obj
    project_id = state.project_id(project)
    cases = rows_to_cases(load_rows(file, format), _signature(state, project_id, signature), str(file),
                          golden=not not_golden, split=split)
    with state.store.db.atomic():
        added, skipped = state.store.add_cases(project_id, cases, source=str(file))
    typer.echo(f"imported {added} cases ({skipped} already present)")


@app.command("export")
def export(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="Output file, or - for stdout.")],
           project: Project = None,
           format: Annotated[Optional[str], typer.Option(help="csv, json, jsonl or yaml.")] = None,
           split: Annotated[Optional[str], typer.Option()] = None) -> None:
    """Export cases."""
    from promptlab.caseio import detect_format, dump_cases

    state = ctx.obj
    cases = state.store.cases(state.project_id(project), split=split)
    fmt = detect_format(file, format or ("jsonl" if str(file) == "-" else None))
    text = dump_cases(cases, fmt)
    if str(file) == "-":
        typer.echo(text, nl=False)
    else:
        file.write_text(text)
        typer.echo(f"exported {len(cases)} cases to {file}")


@app.command("list")
def list_(ctx: typer.Context, project: Project = None,
          split: Annotated[Optional[str], typer.Option()] = None,
          tag: Annotated[list[str], typer.Option()] = [],
          golden: Annotated[Optional[bool], typer.Option("--golden/--not-golden")] = None,
          limit: Annotated[int, typer.Option(help="Rows to show.")] = 50,
          json_: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List cases."""
    import json

    from promptlab import display

    state = ctx.obj
    cases = state.store.cases(state.project_id(project), split=split, tags=tag, golden=golden)
    if json_:
        return emit_json([c.model_dump(mode="json") for c in cases[:limit]])
    display.print_table(f"cases ({len(cases)})", ["id", "inputs", "expected", "split", "tags", "golden"],
                        [[c.id, json.dumps(c.inputs, ensure_ascii=False)[:80],
                          json.dumps(c.expected, ensure_ascii=False)[:40], c.split, ",".join(c.tags),
                          "yes" if c.golden else "no"] for c in cases[:limit]])


@app.command("golden")
def golden(ctx: typer.Context, ids: Annotated[list[int], typer.Argument(help="Case ids.")],
           project: Project = None,
           unset: Annotated[bool, typer.Option(help="Mark as non-golden instead.")] = False) -> None:
    """Mark cases golden (after reviewing generated ones)."""
    state = ctx.obj
    count = state.store.set_golden(state.project_id(project), ids, not unset)
    typer.echo(f"marked {count} cases {'non-golden' if unset else 'golden'}")
