"""`promptlab signature add|list|show`: DSPy-style input/output contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from promptlab.cli.common import emit_json

app = typer.Typer(help="Signatures: the inputs a prompt gets and the outputs it must give.",
                  no_args_is_help=True)


def _field(text: str) -> dict:
    """'name', 'name:type' or 'name:enum:a,b,c'."""
    name, _, rest = text.partition(":")
    kind, _, choices = rest.partition(":")
    spec: dict = {"name": name, "type": kind or "string"}
    if choices:
        spec["choices"] = [c.strip() for c in choices.split(",") if c.strip()]
    return spec


@app.command("add")
def add(ctx: typer.Context,
        name: Annotated[Optional[str], typer.Argument(help="Signature name.")] = None,
        project: Annotated[Optional[str], typer.Option(help="Project name.")] = None,
        instruction: Annotated[str, typer.Option(help="The task, in one or two sentences.")] = "",
        input: Annotated[list[str], typer.Option("--input", "-i", help="Input field: NAME[:TYPE].")] = [],
        output: Annotated[list[str], typer.Option("--output", "-o",
                                                  help="Output field: NAME[:TYPE] or NAME:enum:a,b.")] = [],
        file: Annotated[Optional[Path], typer.Option(help="A YAML/JSON file with the signature.")] = None) -> None:
    """Add or update a signature."""
    import yaml
    from pydantic import ValidationError

    from promptlab.errors import UsageError
    from promptlab.models import Signature

    data: dict = {}
    if file:
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"{file}: cannot read signature ({exc.__class__.__name__}); check the file") from None
    data.setdefault("name", name)
    if instruction:
        data["instruction"] = instruction
    if input:
        data["inputs"] = [_field(f) for f in input]
    if output:
        data["outputs"] = [_field(f) for f in output]
    try:
        signature = Signature(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"{file or 'signature'}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
    state = ctx.obj
    project_id = state.project_id(project)
    state.store.upsert_signature(project_id, signature)
    typer.echo(f"signature {signature.name}: {', '.join(signature.input_names)} -> "
               f"{', '.join(signature.output_names)}")


@app.command("list")
def list_(ctx: typer.Context, project: Annotated[Optional[str], typer.Option()] = None,
          json_: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List signatures."""
    from promptlab import display

    sigs = ctx.obj.store.signatures(ctx.obj.project_id(project))
    if json_:
        return emit_json([s.model_dump(mode="json") for s in sigs])
    display.print_table("signatures", ["name", "inputs", "outputs", "instruction"],
                        [[s.name, ", ".join(s.input_names), ", ".join(
                            f"{f.name}:{f.type}" for f in s.outputs), s.instruction] for s in sigs])


@app.command("show")
def show(ctx: typer.Context, name: str, project: Annotated[Optional[str], typer.Option()] = None) -> None:
    """Show one signature as YAML."""
    import yaml

    sig = ctx.obj.store.signature(ctx.obj.project_id(project), name)
    typer.echo(yaml.safe_dump(sig.model_dump(mode="json", exclude_none=True), sort_keys=False))
