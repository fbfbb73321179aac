"""`promptlab report NAME`: a run or an optimization as HTML, Markdown, JSON, JUnit XML or PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from promptlab.cli import completion
from promptlab.cli.common import Project, read_only


def register(app: typer.Typer) -> None:
    @app.command("report")
    @read_only
    def report(ctx: typer.Context,
               name: Annotated[str, typer.Argument(help="A run name, else an optimization name.",
                                                    autocompletion=completion.reports)],
               format: Annotated[Optional[str], typer.Option(
                   "--format", "-f", help="html, md, json, junit or pdf (default: from the -o suffix, else md).")] = None,
               output: Annotated[Optional[Path], typer.Option(
                   "--output", "-o", help="File to write (default: stdout).")] = None,
               project: Project = None) -> None:
        """Write a report: a self-contained HTML page, a Markdown summary, JSON facts, JUnit XML or
        the HTML page printed to PDF (the pdf extra)."""
        from promptlab.errors import UsageError
        from promptlab.reports import FORMATS, SUFFIXES, chunks, write_report
        from promptlab.reports.facts import build_facts

        fmt = format or (SUFFIXES.get(output.suffix.lower()) if output else None) or "md"
        if fmt not in FORMATS:
            raise UsageError(f"report: unknown --format '{fmt}'; use one of {', '.join(FORMATS)}")
        if fmt == "pdf" and (output is None or str(output) == "-"):  # before the report is built
            raise UsageError("report: a PDF is written to a file; add -o FILE.pdf")
        state = ctx.obj
        facts = build_facts(state.store, state.project_id(project), name)
        pieces = chunks(facts, fmt)
        if output is None or str(output) == "-":
            from promptlab.terminal import printable

            for piece in pieces:  # model text may carry terminal escapes
                typer.echo(printable(piece), nl=False)
            return
        size = write_report(output, pieces)
        typer.echo(f"wrote {output} ({fmt}, {size:,} bytes)", err=True)
