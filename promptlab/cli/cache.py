"""`promptlab cache stats|clear`: the content-addressed response cache."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from promptlab.cli.common import AsJson, emit_json, read_only

app = typer.Typer(help="The response cache (replies and embeddings, keyed by their full request).",
                  no_args_is_help=True)


@app.command("stats")
@read_only
def stats(ctx: typer.Context, json_: AsJson = False) -> None:
    """Entries and size, by model and kind (chat replies, embeddings)."""
    from promptlab import display

    data = ctx.obj.store.cache_stats()
    if json_:
        return emit_json(data)
    rows = [[g["model"], g["kind"], g["entries"], f"{g['bytes'] / 1024:.1f}"] for g in data["by_model"]]
    display.print_table("response cache", ["model", "kind", "entries", "KiB"],
                        [*rows, ["all", "", data["entries"], f"{data['bytes'] / 1024:.1f}"]])


@app.command("clear")
@read_only
def clear(ctx: typer.Context,
          model: Annotated[Optional[str], typer.Option(help="Only this LiteLLM model's entries.")] = None) -> None:
    """Delete cached replies."""
    removed = ctx.obj.store.cache_clear(model)
    typer.echo(f"removed {removed} entries")
