"""`promptlab signature add|list|show`: DSPy-style input/output contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from promptlab.cli.common import AsJson, Project, emit_json, read_only

app = typer.Typer(help="Signatures: the inputs a prompt gets and the outputs it must give.",
                  no_args_is_help=True)


def _field(text: str) -> dict:
    """'name', 'name:type', 'name:enum:a,b,c' or 'name:enum:a,b,c:lenient'."""
    name, _, rest = text.partition(":")
    kind, _, choices = rest.partition(":")
    spec: dict = {"name": name, "type": kind or "string"}
    if choices.endswith(":lenient"):
        choices, spec["lenient"] = choices.removesuffix(":lenient"), True
    if choices:
        spec["choices"] = [c.strip() for c in choices.split(",") if c.strip()]
    return spec


@app.command("add")
def add(ctx: typer.Context,
        name: Annotated[Optional[str], typer.Argument(help="Signature name.")] = None,
        project: Project = None,
        instruction: Annotated[str, typer.Option(help="The task, in one or two sentences.")] = "",
        input: Annotated[list[str], typer.Option("--input", "-i", help="Input field: NAME[:TYPE].")] = [],
        output: Annotated[list[str], typer.Option("--output", "-o",
                                                  help="Output field: NAME[:TYPE] or NAME:enum:a,b; NAME:enum:a,b:lenient "
                                                       "also accepts a reply that merely mentions a choice.")] = [],
        file: Annotated[Optional[Path], typer.Option(help="A YAML/JSON file with the signature.")] = None) -> None:
    """Add a signature, or a new version of one (identical content keeps the latest version)."""
    from pydantic import ValidationError

    from promptlab.cases.files import load_yaml
    from promptlab.errors import NotFoundError, UsageError
    from promptlab.models import Signature

    data: dict = {}
    if file:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{file}: cannot read signature ({exc.__class__.__name__}); check the file") from None
        data = load_yaml(text, file) or {}
        if not isinstance(data, dict):
            raise UsageError(f"{file}: expected a mapping with name, instruction, inputs, outputs")
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
    store, project_id = state.store, state.project_id(project)
    try:
        before = store.signature_version(project_id, signature.name)
    except NotFoundError:
        before = None
    with store.db.atomic():
        store.upsert_signature(project_id, signature)
        after = store.signature_version(project_id, signature.name)
    fields = f"{', '.join(signature.input_names)} -> {', '.join(signature.output_names)}"
    if before is None:
        typer.echo(f"signature {after.ref}: {fields}")
    elif before.id == after.id:
        typer.echo(f"signature {after.ref} unchanged: {fields}")
    else:
        changed = [k for k in ("instruction", "inputs", "outputs")
                   if getattr(before.signature, k) != getattr(signature, k)]
        typer.echo(f"signature '{signature.name}' is now version {after.version} ({', '.join(changed)} "
                   f"changed): existing prompt versions keep the signature version they were made with; "
                   f"prompt versions added from now on use version {after.version}")


@app.command("list")
@read_only
def list_(ctx: typer.Context,
          project: Project = None,
          json_: AsJson = False) -> None:
    """List every version of every signature."""
    from promptlab import display

    versions = ctx.obj.store.signature_versions(ctx.obj.project_id(project))
    if json_:
        return emit_json([_json(v) for v in versions])
    display.print_table("signatures", ["ref", "inputs", "outputs", "instruction", "created"],
                        [[v.ref, ", ".join(v.signature.input_names), ", ".join(
                            f"{f.name}:{f.type}" for f in v.signature.outputs), v.signature.instruction,
                          v.created_at] for v in versions])


@app.command("show")
@read_only
def show(ctx: typer.Context,
         ref: Annotated[str, typer.Argument(help="NAME (the latest version) or NAME@VERSION.")],
         project: Project = None,
         json_: AsJson = False) -> None:
    """Show one signature version as YAML (or JSON)."""
    import yaml

    from promptlab.errors import UsageError

    name, _, version = ref.partition("@")
    if version and not version.isdigit():
        raise UsageError(f"signature show: bad reference '{ref}': use NAME or NAME@VERSION")
    found = ctx.obj.store.signature_version(ctx.obj.project_id(project), name, int(version) if version else None)
    if json_:
        return emit_json(_json(found))
    typer.echo(yaml.safe_dump(_json(found), sort_keys=False))


def _json(version) -> dict:
    return {"name": version.signature.name, "version": version.version, "id": version.id,
            "created_at": version.created_at,
            **version.signature.model_dump(mode="json", exclude_none=True, exclude={"name"})}
