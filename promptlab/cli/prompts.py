"""`promptlab prompt add|list|show|diff|log|label|revert|delete|try|export`: immutable prompt versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from promptlab.cli import completion
from promptlab.cli.common import Project, AsJson, Yes, confirm, emit_json, parse_pairs, read_only
from promptlab.terminal import printable

app = typer.Typer(help="Prompt versions: immutable, numbered per name, with lineage and labels.",
                  no_args_is_help=True)
Ref = Annotated[str, typer.Argument(help="A prompt version: NAME (the latest), NAME@VERSION or NAME@LABEL.",
                                     autocompletion=completion.prompts)]


def _version_json(p) -> dict:
    return {"id": p.id, "name": p.name, "version": p.version, "signature": p.signature,
            "labels": list(p.labels), "parent_id": p.parent_id, "made_by": p.made_by, "candidate": p.candidate,
            "archived": p.archived,
            "message": p.message, "content_hash": p.content_hash, "created_at": p.created_at,
            **p.content.as_json()}


@app.command("add")
def add(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The prompt's name (versions are numbered per name).")],
        project: Project = None,
        signature: Annotated[Optional[str], typer.Option(help="Signature the template fills.")] = None,
        system: Annotated[str, typer.Option(help="System text.")] = "",
        template: Annotated[Optional[str], typer.Option(help="User template (jinja2: {{ field }}).")] = None,
        template_file: Annotated[Optional[Path], typer.Option(help="Read the template from a file.")] = None,
        demos_file: Annotated[Optional[Path], typer.Option(
            help="YAML/JSON list of {inputs, outputs} few-shot demos.")] = None,
        param: Annotated[list[str], typer.Option(help="Model parameter KEY=VALUE.")] = [],
        tools_file: Annotated[Optional[Path], typer.Option(
            help="YAML/JSON list of OpenAI function tools ({type: function, function: {name, description, "
                 "parameters}}) the model may call.")] = None,
        tool_choice: Annotated[Optional[str], typer.Option(
            help="auto, none, required, or the name of one of the tools (it must call that one).")] = None,
        structured: Annotated[bool, typer.Option(
            "--structured", help="Decode replies to the signature's schema (response_format, a grammar "
                                 "on the embedded model).")] = False,
        structured_fallback: Annotated[bool, typer.Option(
            "--structured-fallback", help="With --structured: call a model that cannot constrain its "
                                          "decoding unconstrained instead of refusing it.")] = False,
        message: Annotated[str, typer.Option("--message", "-m", help="Why this version.")] = "") -> None:
    """Add a prompt version (identical content returns the existing version).

    Examples:

    \b
      promptlab prompt add classifier --signature sentiment --template "Review: {{ text }}"
      promptlab prompt add classifier --template-file prompt.j2 --demos-file demos.yaml -m "8 demos"
      promptlab prompt add classifier --template "{{ text }}" --param temperature=0
      promptlab prompt add sms --template $'SMS: {{ text }}\\nLabel:'   (a line break, in bash/zsh)
      promptlab prompt add weather --signature weather --template "{{ question }}" --tools-file tools.yaml
      promptlab prompt add classifier --signature sentiment --template "Review: {{ text }}" --structured
    """
    from pydantic import ValidationError

    from promptlab.errors import UsageError
    from promptlab.models import Demo, PromptContent
    from promptlab.prompting import images
    from promptlab.prompting.render import check_prompt

    if template_file:
        template = template_file.read_text()
    if not template:
        raise UsageError("prompt add: give --template or --template-file")
    demos = _read_list(demos_file, "demos")
    tools = _read_list(tools_file, "tools")
    choice = tool_choice if tool_choice in (None, "auto", "none", "required") else {
        "type": "function", "function": {"name": tool_choice}}
    try:
        content = PromptContent(system=system, template=template, demos=demos,
                                params=parse_pairs(param, "--param"), tools=tools, tool_choice=choice,
                                structured=structured, structured_fallback=structured_fallback)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = f"field '{'.'.join(map(str, err['loc']))}': " if err["loc"] else ""  # tools: the whole version
        raise UsageError(f"prompt {name}: {field}{err['msg'].removeprefix('Value error, ')}") from None
    state = ctx.obj
    store = state.store
    project_id = state.project_id(project)
    sig = store.signature(project_id, signature) if signature else None
    if sig is not None and demos_file is not None:  # demo images: paths relative to the demos file
        try:
            content = content.model_copy(update={"demos": tuple(
                Demo(inputs=images.resolve_inputs(d.inputs, sig.inputs, demos_file.parent), outputs=d.outputs)
                for d in content.demos)})
        except ValueError as exc:
            raise UsageError(f"{demos_file}: demo {exc}") from None
    check_prompt(content, sig, f"prompt '{name}'")
    version = store.add_prompt(project_id, name, content,
                               signature_id=store.signature_id(project_id, signature) if signature else None,
                               message=message)
    typer.echo(printable(f"{version.ref} ({version.content_hash[:12]})"))
    for flag, text in (("--template", None if template_file else template), ("--system", system)):
        if text and "\\n" in text and "\n" not in text:  # typed in a shell's double quotes
            typer.echo(f"promptlab: note: {flag} holds a backslash and an n, not a line break (a shell "
                       f"keeps \\n as typed inside \"…\"): it is stored as given; for a line break write "
                       f"$'…\\n…' in bash/zsh, or put the text in a file (--template-file)", err=True)


def _read_list(path: Path | None, what: str) -> list:
    """A YAML/JSON list from a file (none: empty)."""
    from promptlab.cases.files import load_yaml
    from promptlab.errors import UsageError

    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read {what} ({exc.__class__.__name__})") from None
    data = load_yaml(text, path) or []
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a YAML/JSON list of {what}")
    return data


@app.command("list")
@read_only
def list_(ctx: typer.Context,
          name: Annotated[Optional[str], typer.Argument(help="Only this prompt's versions (default: every prompt).")] = None,
          project: Project = None,
          candidates: Annotated[bool, typer.Option("--candidates", "--all", help=(
              "Also list optimizer candidates and archived versions (hidden by default)."))] = False,
          json_: AsJson = False) -> None:
    """List prompt versions (an optimization's candidates only with --candidates)."""
    from promptlab import display

    store = ctx.obj.store
    versions = store.prompts(ctx.obj.project_id(project), name, candidates=candidates)
    refs = {v.id: v.ref for v in versions}
    parents = {v.id: refs.get(v.parent_id) or store.prompt_by_id(v.parent_id).ref
               for v in versions if v.parent_id}
    if json_:
        return emit_json([_version_json(v) | {"parent": parents.get(v.id)} for v in versions])
    display.print_table("prompts", ["ref", "labels", "signature", "made by", "parent", "message", "created"],
                        [[v.ref + (" (candidate)" if v.candidate else "") + (" (archived)" if v.archived else ""),
                          ",".join(v.labels), v.signature,
                          v.made_by, parents.get(v.id, ""), v.message, v.created_at] for v in versions])


@app.command("show")
@read_only
def show(ctx: typer.Context, ref: Ref, project: Project = None,
         json_: AsJson = False) -> None:
    """Show a version: NAME, NAME@VERSION or NAME@LABEL."""
    version = ctx.obj.store.prompt(ctx.obj.project_id(project), ref)
    if json_:
        return emit_json(_version_json(version))
    from promptlab.prompting.diffing import prompt_text

    typer.echo(printable(f"{version.ref}  labels={','.join(version.labels) or '-'}  by={version.made_by}  "
                         f"hash={version.content_hash[:12]}"))
    typer.echo(printable(prompt_text(version)), nl=False)


@app.command("diff")
@read_only
def diff(ctx: typer.Context, a: Annotated[str, typer.Argument(help="The old version (NAME@VERSION or NAME@LABEL).",
                                                      autocompletion=completion.prompts)],
         b: Annotated[str, typer.Argument(help="The new version.", autocompletion=completion.prompts)], project: Project = None,
         json_: AsJson = False) -> None:
    """Unified diff of two versions, such as classifier@1 classifier@3."""
    from promptlab.prompting.diffing import diff_text

    store, project_id = ctx.obj.store, ctx.obj.project_id(project)
    old, new = store.prompt(project_id, a), store.prompt(project_id, b)
    if json_:
        diff = diff_text(old, new)
        return emit_json({"a": old.ref, "b": new.ref, "same": not diff, "diff": diff})
    text = printable(diff_text(old, new))
    typer.echo(text or "(no difference)", nl=not text)


@app.command("log")
@read_only
def log(ctx: typer.Context, ref: Ref, project: Project = None,
        json_: AsJson = False) -> None:
    """Lineage: the version, its parent, and so on back to the first."""

    store = ctx.obj.store
    chain = store.lineage(store.prompt(ctx.obj.project_id(project), ref))
    if json_:
        return emit_json([_version_json(v) for v in chain])
    for v in chain:
        typer.echo(printable(f"{v.ref:<24} {v.content_hash[:10]}  {v.made_by:<24} {v.created_at}  {v.message}"))


@app.command("history")
@read_only
def history(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The prompt's name.")],
            project: Project = None,
            candidates: Annotated[bool, typer.Option("--candidates", help="Also optimizer candidates.")] = False,
            all_: Annotated[bool, typer.Option("--all", help="Also optimizer runs.")] = False,
            json_: AsJson = False) -> None:
    """Every version with its runs' scores over time: first, latest and best, per model and split."""
    from promptlab.display import print_table
    from promptlab.services.history import prompt_history

    data = prompt_history(ctx.obj.store, ctx.obj.project_id(project), name.split("@")[0],
                          candidates=candidates, optimizer_runs=all_)
    if json_:
        return emit_json(data)

    def shown(point: dict | None) -> str:
        return "–" if point is None else f"{point['score']:.3f} ({point['run']})"

    rows = []
    for v in data["versions"]:
        head = [v["ref"] + "".join(f" @{label}" for label in v["labels"]), v["made_by"], v["created_at"][:16]]
        if not v["groups"]:
            rows.append([*head, "–", "–", 0, "–", "–", "–"])
        for i, g in enumerate(v["groups"]):
            rows.append([*(head if i == 0 else ["", "", ""]), g["model"], g["split"], g["runs"],
                         shown(g["first"]), shown(g["latest"]), shown(g["best"])])
    print_table(f"history of {data['prompt']}", ["version", "made by", "created", "model", "split", "runs",
                                                 "first", "latest", "best"], rows)


@app.command("label")
def label(ctx: typer.Context, ref: Ref,
          name: Annotated[str, typer.Argument(help="The label, such as production or staging.")],
          project: Project = None,
          remove: Annotated[bool, typer.Option("--remove", help="Remove the label from REF's prompt instead.")] = False,
          yes: Yes = False) -> None:
    """Point a label, such as production, at a version (or remove it with --remove)."""
    from promptlab.store import parse_ref

    store, project_id = ctx.obj.store, ctx.obj.project_id(project)
    if remove:
        prompt, _ = parse_ref(ref)
        confirm(f"Remove label '{name}' from prompt '{prompt}'?", yes)
        was = store.prompt_by_id(store.remove_label(project_id, prompt, name))
        return typer.echo(printable(f"removed {prompt}@{name} (it pointed at {was.ref})"))
    version = store.prompt(project_id, ref)
    store.set_label(version, name)
    typer.echo(printable(f"{version.name}@{name} -> {version.ref}"))


@app.command("delete")
def delete(ctx: typer.Context, ref: Ref, project: Project = None, yes: Yes = False) -> None:
    """Delete a prompt version; one that runs, optimizations or later versions use is archived instead
    (still NAME@VERSION for them, never the latest again), and so is the newest (its number stays taken)."""

    store = ctx.obj.store
    version = store.prompt(ctx.obj.project_id(project), ref)
    confirm(f"Delete prompt version {version.ref}?", yes)
    done = store.remove_prompt(version)
    typer.echo(printable(f"{done} {version.ref}"))


@app.command("revert")
def revert(ctx: typer.Context, ref: Ref, project: Project = None,
           message: Annotated[str, typer.Option("--message", "-m", help="Why (default: revert to REF).")] = "") -> None:
    """Make a new version with the content of an old one."""
    store, project_id = ctx.obj.store, ctx.obj.project_id(project)
    old = store.prompt(project_id, ref)
    latest = store.prompt(project_id, old.name)
    # the old signature version too: a revert sends exactly what the old version sent
    new = store.add_prompt(project_id, old.name, old.content, signature_id=old.signature_id,
                           parent_id=latest.id, message=message or f"revert to {old.ref}", dedupe=False)
    typer.echo(printable(f"{new.ref} (content of {old.ref})"))


@app.command("try")
@read_only
def try_(ctx: typer.Context, ref: Ref,
         input: Annotated[list[str], typer.Option("--input", "-i", help="An input FIELD=VALUE (repeatable).")] = [],
         model: Annotated[Optional[str], typer.Option(
             help="Alias from promptlab.toml or a LiteLLM model (default: the configured default).")] = None,
         dry_run: Annotated[bool, typer.Option("--dry-run", help="Render the messages only; call no model.")] = False,
         project: Project = None, json_: AsJson = False) -> None:
    """Send one input to a version: prints the rendered messages, the reply and the reply parsed
    against the signature (never cached, never stored)."""
    from promptlab.api import LoadedPrompt

    store = ctx.obj.store
    version = store.prompt(ctx.obj.project_id(project), ref)
    loaded = LoadedPrompt.from_store(store, version, ctx.obj.settings)  # embeddings pick demos even on --dry-run
    messages = loaded.messages(**_inputs(input, loaded.signature))
    data: dict = {"prompt": version.ref, "messages": messages}
    if not dry_run:
        data |= _ask(ctx.obj.settings, model, messages, loaded)
    if json_:
        return emit_json(data)
    _print_try(data)


def _inputs(pairs: list[str], signature) -> dict:
    """FIELD=VALUE pairs: a string field keeps the text as given, other fields take JSON (5, true, [1])."""
    from promptlab.errors import UsageError
    from promptlab.models import check_values

    values = parse_pairs(pairs, "--input")
    types = {f.name: f.type for f in signature.inputs} if signature else {}
    raw = dict(pair.split("=", 1) for pair in pairs)
    values = {k: raw[k] if types.get(k, "string") in ("string", "image") else v for k, v in values.items()}
    try:  # an image is a path (from the working folder), an https URL or a data: URI: read on render
        check_values(values, signature.inputs if signature else (), "--input")
    except ValueError as exc:
        raise UsageError(f"prompt try: {exc}") from None
    return values


def _ask(settings, model: str | None, messages: list[dict], loaded) -> dict:
    import asyncio

    from promptlab.errors import ProviderError
    from promptlab.providers.errors import CallError
    from promptlab.providers.gateway import Gateway, check_capabilities, check_credentials

    config = settings.resolve_model(model)
    check_credentials(config)
    check_capabilities(config, loaded.version.content, loaded.signature)
    gateway = Gateway(cache=None, retries=settings.defaults.retries, timeout=settings.defaults.timeout)
    try:
        reply = asyncio.run(gateway.complete(config, messages, loaded.params_for(config), use_cache=False))
    except CallError as exc:  # its message is already redacted
        raise ProviderError(f"{config.alias or config.model}: {exc.kind}: {exc}") from None
    try:
        parsed, parse_error = loaded.parse(reply.text), None
    except ValueError as exc:
        parsed, parse_error = None, str(exc)
    return {"model": config.alias or config.model, "reply": reply.text, "parsed": parsed,
            "parse_error": parse_error, "latency_ms": round(reply.latency_ms, 1),
            "tokens": {"prompt": reply.usage.prompt_tokens, "completion": reply.usage.completion_tokens}}


def _print_try(data: dict) -> None:
    import json

    from promptlab.prompting.conversation import text_of
    from promptlab.redact import redact

    for message in data["messages"]:
        typer.echo(printable(f"--- {message['role']}\n{text_of(message['content'])}"))
    if "reply" not in data:
        return
    tokens = data["tokens"]
    typer.echo(printable(f"=== reply from {data['model']} ({data['latency_ms']:.0f} ms, "
                         f"{tokens['prompt']}+{tokens['completion']} tokens)\n{redact(data['reply'])}"))
    if data["parsed"] is not None:
        typer.echo(printable(f"=== parsed\n{json.dumps(data['parsed'], ensure_ascii=False)}"))
    else:
        typer.echo(printable(f"promptlab: warning: {data['parse_error']}"), err=True)


@app.command("export")
@read_only
def export(ctx: typer.Context, ref: Ref,
           format: Annotated[str, typer.Option("--format", "-f", help="yaml or json.")] = "yaml",
           project: Project = None) -> None:
    """Print a version as an experiment file's `prompts:` entry; `promptlab run` on a file holding it
    recreates the same version (same content hash, given the same signature)."""
    import json
    import re

    from promptlab.api import LoadedPrompt
    from promptlab.errors import UsageError

    if format not in ("yaml", "json"):
        raise UsageError(f"prompt export: unknown --format '{format}'; use yaml or json")
    store = ctx.obj.store
    version = store.prompt(ctx.obj.project_id(project), ref)
    entry = LoadedPrompt.from_store(store, version).as_entry()
    if version.content.demo_selector is not None:
        typer.echo(printable(f"promptlab: warning: {version.ref} picks its demos from cases of this database "
                             f"(a demo selector's pool of case ids); an experiment file cannot carry it"), err=True)
    if format == "json":  # JSON escapes C0 controls itself; DEL and C1 too, so nothing reaches the terminal raw
        text = json.dumps(entry, ensure_ascii=False, indent=2)
        return typer.echo(re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text))
    typer.echo(printable(f"# {version.ref} (hash {version.content_hash[:12]}), made with signature "
                         f"{version.signature or '-'}@{version.signature_version or '-'}; paste under `prompts:`"))
    typer.echo(_yaml_entry(entry), nl=False)


def _yaml_entry(entry: dict) -> str:
    """A one-item YAML list (pastes under `prompts:`); multi-line text as blocks, read back exactly."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump([entry], Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
