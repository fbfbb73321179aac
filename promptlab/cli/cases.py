"""`promptlab case add|import|export|list|golden`: golden test cases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from promptlab.cli.common import Project, AsJson, Yes, confirm, emit_json, parse_pairs, read_only
from promptlab.terminal import printable

app = typer.Typer(help="Test cases: inputs, expected outputs, split, tags, golden flag.",
                  no_args_is_help=True)
SPLITS = ("train", "val", "test")
Signature = Annotated[Optional[str], typer.Option(
    help="Signature whose fields name the row's inputs and outputs (default: the only one).")]


def _signature(state, project_id: int, name: str | None):
    if name:
        return state.store.signature(project_id, name)
    sigs = state.store.signatures(project_id)
    return sigs[0] if len(sigs) == 1 else None


def _case_signature(state, project_id: int, name: str | None, case):
    """The signature a case's values are checked against: the named one, the only one, or the only
    one whose outputs name every field the case expects."""
    if name or len(sigs := state.store.signatures(project_id)) <= 1:
        return _signature(state, project_id, name)
    fitting = [s for s in sigs if set(case.expected) <= set(s.output_names)]
    return fitting[0] if len(fitting) == 1 else None


@app.command("add")
def add(ctx: typer.Context, project: Project = None,
        input: Annotated[list[str], typer.Option("--input", "-i", help="Input KEY=VALUE.")] = [],
        expected: Annotated[list[str], typer.Option("--expected", "-e", help="Expected KEY=VALUE.")] = [],
        split: Annotated[Optional[str], typer.Option(help="train, val or test.")] = None,
        tag: Annotated[list[str], typer.Option(help="A tag (repeatable).")] = [],
        signature: Signature = None) -> None:
    """Add one case."""
    from promptlab.cases.files import rows_to_cases

    state = ctx.obj
    project_id = state.project_id(project)
    row = {"inputs": parse_pairs(input, "--input"), "expected": parse_pairs(expected, "--expected"),
           "split": split, "tags": tag}
    cases = rows_to_cases([row], _signature(state, project_id, signature), "case add")
    added, _ = state.store.add_cases(project_id, cases, source="cli")
    typer.echo("added 1 case" if added else "case already present")


@app.command("import")
def import_(ctx: typer.Context,
            file: Annotated[Path, typer.Argument(help="A CSV, JSON, JSONL or YAML file of cases.")],
            project: Project = None, signature: Signature = None,
            format: Annotated[Optional[str], typer.Option(help="csv, json, jsonl or yaml.")] = None,
            split: Annotated[Optional[str], typer.Option(help="Split for rows that lack one.")] = None,
            not_golden: Annotated[bool, typer.Option("--not-golden", help="Import as non-golden.")] = False) -> None:
    """Import cases (re-importing the same rows adds nothing).

    Examples:

    \b
      promptlab case import cases.jsonl
      promptlab case import reviews.csv --split test
      promptlab case import generated.yaml --not-golden
    """
    from promptlab.cases.files import iter_cases

    state = ctx.obj
    project_id = state.project_id(project)
    cases = iter_cases(file, format, _signature(state, project_id, signature), golden=not not_golden,
                       split=split)  # read as they are stored: JSONL and CSV files of any size
    added, skipped = state.store.add_cases(project_id, cases, source=str(file))
    typer.echo(f"imported {added} cases ({skipped} already present)")


@app.command("export")
@read_only
def export(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="Output file, or - for stdout.")],
           project: Project = None, signature: Signature = None,
           format: Annotated[Optional[str], typer.Option(help="csv, json, jsonl or yaml.")] = None,
           split: Annotated[Optional[str], typer.Option(help="Only cases of this split.")] = None) -> None:
    """Export cases (`case import` reads every format back to the same cases)."""
    import sys

    from promptlab.cases.files import detect_format, write_cases
    from promptlab.files import replaced

    state = ctx.obj
    store, project_id = state.store, state.project_id(project)
    fmt = detect_format(file, format or ("jsonl" if str(file) == "-" else None))
    sig = _signature(state, project_id, signature)
    columns = store.case_fields(project_id, split=split) if fmt == "csv" else None
    cases = store.iter_cases(project_id, split=split)  # JSONL and CSV: written as they are read
    if str(file) == "-":
        write_cases(cases, fmt, sys.stdout, sig, columns)
        return
    with replaced(file, "cases", newline="" if fmt == "csv" else None) as out:  # whole, or the old file kept
        count = write_cases(cases, fmt, out, sig, columns)
    typer.echo(f"exported {count} cases to {file}")


@app.command("list")
@read_only
def list_(ctx: typer.Context, project: Project = None,
          split: Annotated[Optional[str], typer.Option(help="Only cases of this split.")] = None,
          tag: Annotated[list[str], typer.Option(help="Only cases with this tag (repeatable).")] = [],
          golden: Annotated[Optional[bool], typer.Option(
              "--golden/--not-golden", help="Only golden, or only non-golden, cases (default: both).")] = None,
          limit: Annotated[int, typer.Option(help="Rows to show.")] = 50,
          json_: AsJson = False) -> None:
    """List cases."""
    import json

    from promptlab import display
    from promptlab.prompting.images import shorten

    state = ctx.obj
    project_id, chosen = state.project_id(project), {"split": split, "tags": tag, "golden": golden}
    cases = state.store.cases(project_id, **chosen, limit=limit)  # only the rows shown are read
    if json_:
        return emit_json([c.model_dump(mode="json") for c in cases])
    display.print_table(f"cases ({state.store.count_cases(project_id, **chosen)})",
                        ["id", "inputs", "expected", "split", "tags", "golden"],
                        [[c.id, json.dumps(shorten(c.inputs), ensure_ascii=False)[:80],
                          json.dumps(c.expected, ensure_ascii=False)[:40], c.split, ",".join(c.tags),
                          "yes" if c.golden else "no"] for c in cases])


@app.command("golden")
def golden(ctx: typer.Context, ids: Annotated[list[int], typer.Argument(help="Case ids.")],
           project: Project = None,
           unset: Annotated[bool, typer.Option(help="Mark as non-golden instead.")] = False) -> None:
    """Mark cases golden (after reviewing generated ones)."""
    state = ctx.obj
    count = state.store.set_golden(state.project_id(project), ids, not unset)
    typer.echo(f"marked {count} cases {'non-golden' if unset else 'golden'}")


@app.command("delete")
def delete(ctx: typer.Context, ids: Annotated[list[int], typer.Argument(help="Case ids (see `case list`).")],
           project: Project = None, yes: Yes = False) -> None:
    """Delete cases; a case that a run used is archived instead (kept for that run, never selected again)."""
    state = ctx.obj
    store, project_id = state.store, state.project_id(project)
    used = {case_id: [f"run {name}" for name in runs] for case_id, runs in store.case_runs(project_id, ids).items()}
    for case_id, refs in store.case_demo_prompts(project_id, ids).items():
        used.setdefault(case_id, []).extend(f"the demo pool of {ref}" for ref in refs)
    note = f" ({len(used)} in use are archived instead)" if used else ""
    confirm(f"Delete {len(set(ids))} cases{note}?", yes)
    deleted, archived = store.remove_cases(project_id, ids)
    if deleted:
        typer.echo(f"deleted cases {', '.join(map(str, deleted))}")
    for case_id in archived:
        users = used[case_id]
        shown = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
        typer.echo(printable(f"archived case {case_id}: used by {shown} (excluded from new selections)"))


@app.command("edit")
def edit(ctx: typer.Context, case_id: Annotated[int, typer.Argument(metavar="ID", help="The case's id.")],
         project: Project = None,
         expected: Annotated[list[str], typer.Option(
             "--expected", "-e", help="Expected KEY=VALUE (repeatable; merged into the expected output).")] = [],
         replace: Annotated[bool, typer.Option(
             "--replace", help="The -e values become the whole expected output (a declared output the "
                               "case has must still be given).")] = False,
         signature: Signature = None,
         split: Annotated[Optional[str], typer.Option(help="New split: train, val or test.")] = None,
         tag: Annotated[Optional[list[str]], typer.Option(help="New tags (repeatable; replace the old).")] = None
         ) -> None:
    """Change a case's expected output, split or tags.

    The values are checked as `case import` checks a row (types, enum choices, field names); runs
    that used the case keep the expected output they were scored against.

    Examples:

    \b
      promptlab case edit 12 -e label=negative
      promptlab case edit 12 -e name=Ann -e age=31 --replace
      promptlab case edit 12 --split test --tag hard
    """
    import json

    from promptlab.cases.files import edited_expected
    from promptlab.errors import UsageError

    if split is not None and split not in SPLITS:
        raise UsageError(f"--split: unknown split '{split}' (one of {', '.join(SPLITS)})")
    if not (expected or split or tag is not None):
        raise UsageError("case edit: give --expected, --split or --tag")
    if replace and not expected:
        raise UsageError("case edit: --replace replaces the expected output with the -e values; give them")
    state = ctx.obj
    store, project_id = state.store, state.project_id(project)
    new_expected = None
    if expected:
        case = store.case(project_id, case_id)
        new_expected = edited_expected(case, _case_signature(state, project_id, signature, case),
                                       parse_pairs(expected, "--expected"), replace=replace)
    case = store.edit_case(project_id, case_id, split=split, tags=tag, expected=new_expected)
    typer.echo(printable(f"case {case_id}: expected {json.dumps(case.expected, ensure_ascii=False)}, "
                         f"split {case.split or '-'}, tags {','.join(case.tags) or '-'}"))
    if expected and (used := store.case_runs(project_id, [case_id]).get(case_id)):
        typer.echo(printable(f"promptlab: note: case {case_id} was used by {len(used)} runs; they keep the "
                             f"expected output they were scored against"), err=True)


@app.command("generate")
def generate(ctx: typer.Context, project: Project = None, signature: Signature = None,
             n: Annotated[int, typer.Option("--n", min=1, help="How many new cases to add.")] = 10,
             model: Annotated[Optional[str], typer.Option(
                 help="Alias or LiteLLM model (default: the project's, else [defaults] model).")] = None,
             seed_cases: Annotated[int, typer.Option(min=0, help="Existing cases shown as examples "
                                                                 "(golden first).")] = 3,
             near_threshold: Annotated[float, typer.Option(
                 min=0, max=100, help="Drop a case whose input is at least this similar (0-100) to "
                                      "another case's.")] = 90.0,
             per_request: Annotated[int, typer.Option(min=1, max=50, help="Cases asked for per call.")] = 5,
             split: Annotated[Optional[str], typer.Option(help="Split for the new cases.")] = None,
             tag: Annotated[list[str], typer.Option(help="A tag for the new cases (repeatable).")] = [],
             seed: Annotated[int, typer.Option(help="Seed for picking the example cases.")] = 0,
             json_: AsJson = False) -> None:
    """Generate new cases with a model (stored non-golden until `case golden`)."""
    import asyncio
    import sys

    from promptlab.providers.ask import InvalidReply
    from promptlab.errors import ProviderError, UsageError
    from promptlab.evaluation.sink import make_gateway
    from promptlab.cases.generate import generate_cases, pick_seeds
    from promptlab.providers.errors import CallError

    state = ctx.obj
    store, settings = state.store, state.settings
    project_id = state.project_id(project)
    sig = _signature(state, project_id, signature)
    if sig is None:
        names = ", ".join(s.name for s in store.signatures(project_id)) or "none yet"
        raise UsageError(f"case generate: give --signature (signatures: {names})")
    if split not in (None, *SPLITS):
        raise UsageError(f"case generate: --split must be train, val or test (got '{split}')")
    default = next((p["default_model"] for p in store.projects() if p["id"] == project_id), None)
    resolved = settings.resolve_model(model or default or None)
    resolved.api_key()  # a missing key is bad input, found before any call
    if resolved.route == "local":
        print("promptlab: warning: case generate needs a capable instruction-following model; the embedded "
              "270M model rarely writes usable cases (it stops after 3 unusable replies): pass --model",
              file=sys.stderr)
    existing = store.cases(project_id)
    seeds = pick_seeds(existing, seed_cases, seed)
    gateway = make_gateway(store, settings)
    try:
        result = asyncio.run(generate_cases(gateway, resolved, sig, n=n, seeds=seeds, existing=existing,
                                            near_threshold=near_threshold, per_request=per_request,
                                            tags=tuple(tag), split=split))
    except CallError as exc:
        raise ProviderError(f"case generate: the call to {resolved.alias or resolved.model} failed "
                            f"({exc.kind}: {exc})") from None
    except InvalidReply as exc:
        raise ProviderError(f"case generate: {resolved.alias or resolved.model}: {exc}; it needs a capable "
                            f"instruction-following model: try a stronger --model") from None
    finally:
        gateway.cache.flush()  # the replies it cached
    with store.db.atomic():
        store.add_cases(project_id, result.cases, source="generated")
    ids = [c.id for c in store.cases_by_hash(project_id, [c.hash() for c in result.cases])]
    data = {"added": len(ids), "ids": ids, "asked": n, "exact_duplicates": result.exact,
            "near_duplicates": result.near, "invalid": result.invalid, "requests": result.requests,
            "provider_calls": result.calls, "model": resolved.alias or resolved.model,
            "stopped": result.stopped or None}
    if len(ids) < n:
        why = f"stopped: {result.stopped}" if result.stopped else "the model repeated existing cases"
        print(f"promptlab: warning: only {len(ids)} of {n} new cases after {result.requests} requests "
              f"({why})", file=sys.stderr)
    if json_:
        return emit_json(data)
    shown = ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
    typer.echo(f"generated {len(ids)} cases{f' (ids {shown})' if ids else ''}; dropped {result.exact} "
               f"exact and {result.near} near duplicates, {result.invalid} invalid")
    if ids:
        typer.echo("they are not golden: review them with `promptlab case list --not-golden`, then "
                   "mark the good ones with `promptlab case golden IDS`")
