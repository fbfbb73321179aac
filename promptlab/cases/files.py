"""Read and write test cases as CSV, JSON, JSONL or YAML.

A row either has the explicit shape {inputs: {...}, expected: {...}} or is
flat, its keys named after the signature's input and output fields. Optional
keys: split, tags, golden. A CSV cell of a messages, tool_call, list or json
field holds JSON; an image field holds a path (relative to the case file), an
https:// URL or a data: URI, and a file is stored as a data URI.

Case files are untrusted: YAML aliases, NaN/Infinity, non-JSON values and deep
nesting are refused, and with a signature every value must have its field's
declared type (CSV cells, being text, are converted to it first).

JSONL and CSV files are read row by row (`iter_cases`), so an import of any
size holds one batch of cases at a time; a JSON or YAML file is one document,
parsed whole.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

import yaml
from pydantic import ValidationError

from promptlab.errors import UsageError
from promptlab.terminal import printable
from promptlab.models import MAX_DEPTH, Case, FieldSpec, Signature, check_values
from promptlab.prompting import images

FORMATS = ("csv", "json", "jsonl", "yaml")
_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_CELL_EXAMPLES = {"int": "3", "float": "0.5", "list": '["a", "b"]', "json": '{"a": 1}',
                  "messages": '[{"role": "user", "content": "Hi"}]',
                  "tool_call": '{"name": "get_weather", "arguments": {"city": "Paris"}}'}


def detect_format(path: Path, fmt: str | None = None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    fmt = {"yml": "yaml", "ndjson": "jsonl"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise UsageError(f"{path}: unknown case format '{fmt}'; use one of {', '.join(FORMATS)} "
                         f"(or pass --format)")
    return fmt


def read_cases(path: Path, fmt: str | None, signature: Signature | None, *, golden: bool = True,
               split: str | None = None) -> list[Case]:
    """A cases file → checked cases (image paths relative to the file's folder)."""
    return list(iter_cases(path, fmt, signature, golden=golden, split=split))


def iter_cases(path: Path, fmt: str | None, signature: Signature | None, *, golden: bool = True,
               split: str | None = None) -> Iterator[Case]:
    """A cases file → checked cases, one at a time: JSONL and CSV are read row by row (memory
    stays bounded at any size); JSON and YAML are one document, parsed whole."""
    fmt = detect_format(path, fmt)
    yield from iter_rows_to_cases(iter_rows(path, fmt), signature, str(path), golden=golden,
                                  split=split, text_cells=fmt == "csv", base_dir=path.parent)


def iter_rows(path: Path, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    fmt = detect_format(path, fmt)
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a BOM
        with open(path, encoding="utf-8-sig", newline="" if fmt == "csv" else None) as lines:
            if fmt == "csv":
                yield from _csv_rows(lines, path)
            elif fmt == "jsonl":
                yield from _jsonl_rows(lines, path)
            else:
                text = lines.read()
                if fmt == "yaml":
                    yield from _case_list(load_yaml(text, path), path,
                                          "a YAML list of cases (or a 'cases:' list)")
                else:
                    yield from _case_list(_json(text, path), path,
                                          'a JSON list of cases (or {"cases": [...]})')
    except FileNotFoundError:
        raise UsageError(f"{path}: cases file not found; check the path") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; re-save it as UTF-8") from None


def _json(text: str, path: Path, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: line {line or exc.lineno}: invalid JSON ({exc.msg}); fix that line") from None
    except RecursionError:
        raise UsageError(_too_deep(path)) from None


def _jsonl_rows(lines: Iterable[str], path: Path) -> Iterator[dict]:
    case = 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            case += 1
            yield _check_object(_json(line, path, number), path, case)


def _too_deep(path: Path | str) -> str:
    return f"{path}: nested more than {MAX_DEPTH} levels deep; flatten the data"


def _csv_rows(lines: Iterable[str], path: Path) -> Iterator[dict[str, str]]:
    reader = csv.DictReader(lines, strict=True)
    try:
        header = reader.fieldnames or []
        duplicate = next((h for h, n in Counter(header).items() if n > 1), None)  # linear: 10^6 columns happen
        if duplicate is not None:  # DictReader would silently keep only the last such column
            raise UsageError(f"{path}: the header has column '{printable(duplicate)[:80]}' twice; rename or "
                             f"remove one")
        _check_cells(header, path, 1)
        for number, row in enumerate(reader, start=2):
            if None in row or any(v is None for v in row.values()):
                raise UsageError(f"{path}: line {number} has a different number of columns "
                                 f"than the header; fix that row")
            _check_cells(row.values(), path, number)
            yield row
    except csv.Error as exc:
        raise UsageError(f"{path}: malformed CSV ({exc}); fix the quoting") from None


MAX_ALIAS_NODES = 100_000  # values that aliases may add to a YAML document, expanded


def _check_cells(cells: Iterable[str], path: Path, number: int) -> None:
    """What JSONL refuses raw, CSV refuses too: a NUL byte, or a byte order mark past the file's start
    (two files pasted together)."""
    for cell in cells:
        if "\x00" in cell or "\ufeff" in cell:
            what = "a NUL byte" if "\x00" in cell else "a stray byte order mark (U+FEFF)"
            raise UsageError(f"{path}: line {number} holds {what}; remove it (re-save the file as plain UTF-8)")


class _AliasRefused(yaml.MarkedYAMLError):
    pass


class _BoundedAliasLoader(yaml.SafeLoader):
    """A safe loader that takes anchors and aliases (`&p` … `*p`, `<<: *base`) but counts what
    they expand to: a few hundred bytes of nested aliases (a "billion laughs" file) would be
    gigabytes as soon as anything walks the data, so a document whose aliases add more than
    MAX_ALIAS_NODES values is refused as soon as it gets there."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> values in it, aliases expanded
        self._real = 0                     # nodes written out in the document

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:  # an alias to a node still being composed
                raise _AliasRefused(problem="a recursive alias", problem_mark=mark)
            return node
        node = super().compose_node(parent, index)
        self._real += 1
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(child)] for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        else:
            size = 1
        if size > self._real + MAX_ALIAS_NODES:
            raise _AliasRefused(problem="alias bomb", problem_mark=node.start_mark)
        self._sizes[id(node)] = size
        return node


def load_yaml(text: str, path: Path | str) -> Any:
    """An untrusted YAML document → plain data (aliases bounded, no recursion blow-up)."""
    try:
        return yaml.load(text, Loader=_BoundedAliasLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}: line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        if isinstance(exc, _AliasRefused):
            raise UsageError(f"{where}: YAML aliases here expand past {MAX_ALIAS_NODES:,} values, or refer to "
                             f"themselves ({exc.problem}); write the values out") from None
        raise UsageError(f"{where}: malformed YAML ({getattr(exc, 'problem', None) or exc}); "
                         f"fix the syntax") from None
    except RecursionError:
        raise UsageError(_too_deep(path)) from None


def read_experiment_file(path: Path) -> Any:
    """An experiment file's YAML document (`promptlab run` reads it before anything heavy is
    imported, so an alias bomb or a typo fails at once)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: experiment file not found; check the path") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; re-save it as UTF-8") from None
    return load_yaml(text, path)


def _case_list(data: Any, path: Path, expected: str) -> list[dict]:
    """A parsed JSON/YAML document → its list of case rows (bare, or under 'cases')."""
    if isinstance(data, dict) and isinstance(data.get("cases"), list):
        data = data["cases"]
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected {expected}")
    return [_check_object(row, path, i) for i, row in enumerate(data, start=1)]


def _check_object(row: Any, path: Path | str, number: int) -> dict:
    if not isinstance(row, dict):
        raise UsageError(f"{path}: case {number} is not an object with named fields")
    return row


def _from_cells(values: dict[str, Any], fields: Iterable[FieldSpec], kind: str) -> dict[str, Any]:
    """CSV cells (text) in their fields' declared types; export writes non-text values as JSON."""
    out = dict(values)
    for spec in fields:
        text = out.get(spec.name)
        if not isinstance(text, str) or spec.type in ("string", "enum", "image"):
            continue
        if spec.type == "bool":
            if text.strip().lower() not in _BOOL_WORDS:
                raise ValueError(f"{kind} '{spec.name}': '{text[:40]}' is not true or false")
            out[spec.name] = _BOOL_WORDS[text.strip().lower()]
            continue
        try:
            out[spec.name] = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError(f"{kind} '{spec.name}': '{text[:40]}' is not "
                             f"{'JSON' if spec.type in ('json', 'messages', 'tool_call') else 'a ' + spec.type}; write it as "
                             f"JSON, e.g. {_CELL_EXAMPLES[spec.type]}") from None
    return out


def rows_to_cases(rows: Iterable[dict[str, Any]], signature: Signature | None, where: str, *,
                  golden: bool = True, split: str | None = None,
                  text_cells: bool = False, base_dir: Path | None = None) -> list[Case]:
    """Map rows to cases by field name; every input field must be present.

    text_cells: the values are CSV text, converted to the signature's types first.
    base_dir: where image paths are relative to (the case file's folder; default the working one);
    each image input becomes a data URI (`promptlab.prompting.images`)."""
    return list(iter_rows_to_cases(rows, signature, where, golden=golden, split=split,
                                   text_cells=text_cells, base_dir=base_dir))


def iter_rows_to_cases(rows: Iterable[dict[str, Any]], signature: Signature | None, where: str, *,
                       golden: bool = True, split: str | None = None,
                       text_cells: bool = False, base_dir: Path | None = None) -> Iterator[Case]:
    """`rows_to_cases`, one case at a time."""
    for i, row in enumerate(rows, start=1):
        try:
            yield _row_to_case(row, signature, golden=golden, split=split, text_cells=text_cells,
                               base_dir=base_dir)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise UsageError(f"{where}: case {i}: field '{'.'.join(map(str, err['loc']))}': "
                             f"{err['msg']}") from None
        except ValueError as exc:
            raise UsageError(f"{where}: case {i}: {exc}") from None


def _row_to_case(row: dict[str, Any], signature: Signature | None, *, golden: bool,
                 split: str | None, text_cells: bool, base_dir: Path | None) -> Case:
    if "inputs" in row and isinstance(row["inputs"], dict):
        inputs, expected = row["inputs"], row.get("expected") or {}
    elif signature is None:
        raise ValueError("is flat but there is no signature; use {inputs: ..., expected: ...} "
                         "or give a signature")
    else:
        inputs = {n: row[n] for n in signature.input_names if n in row}
        expected = {n: row[n] for n in signature.output_names if n in row and row[n] not in ("", None)}
    in_fields, out_fields = (signature.inputs, signature.outputs) if signature else ((), ())
    if signature is not None:
        missing = [n for n in signature.input_names if n not in inputs]
        if missing:
            raise ValueError(f"lacks input field '{missing[0]}' (signature '{signature.name}' "
                             f"needs {', '.join(signature.input_names)})")
        if text_cells:
            inputs = _from_cells(inputs, in_fields, "input")
            expected = _from_cells(expected, out_fields, "expected")
    if not isinstance(expected, dict):
        raise ValueError("'expected' must be an object of output fields")
    check_values(inputs, in_fields, "input")
    check_values(expected, out_fields, "expected")
    inputs = images.resolve_inputs(inputs, in_fields, base_dir)
    tags = row.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    row_golden = row.get("golden", golden)
    if isinstance(row_golden, str):
        row_golden = row_golden.strip().lower() in ("1", "true", "yes")
    return Case(inputs=inputs, expected=expected, tags=tuple(tags), split=row.get("split") or split,
                golden=bool(row_golden))


def edited_expected(case: Case, signature: Signature | None, given: dict[str, Any], *,
                    replace: bool = False, where: str = "case edit") -> dict[str, Any]:
    """A case's expected output after an edit, checked as `case import` checks a row: `given` is
    merged into it (`replace`: becomes it). A field the signature does not declare, and leaving
    out (or nulling) a declared output the case had, are refused: both are slips, not edits."""
    if signature is not None:
        unknown = [n for n in given if n not in signature.output_names]
        if unknown:
            raise UsageError(f"{where}: '{unknown[0]}' is not an output of signature '{signature.name}' "
                             f"(outputs: {', '.join(signature.output_names)})")
    expected = dict(given) if replace else {**case.expected, **given}
    dropped = [n for n in (signature.output_names if signature else case.expected)
               if n in case.expected and expected.get(n) is None]
    if dropped:
        raise UsageError(f"{where}: that would drop the expected '{dropped[0]}' of case {case.id}; "
                         f"give it too (-e {dropped[0]}=…)" + ("" if replace else " instead of null"))
    row = {"inputs": case.inputs, "expected": expected}
    return rows_to_cases([row], signature, f"{where} {case.id}")[0].expected


def write_cases(cases: Iterable[Case], fmt: str, out: TextIO, signature: Signature | None = None,
                columns: tuple[list[str], list[str]] | None = None) -> int:
    """Write cases to `out` in `fmt`; returns how many. JSONL and CSV go one case at a time (any
    number, in bounded memory); JSON and YAML are one document, built whole. CSV's header takes
    `columns`, the input and the expected field names (Store.case_fields), else those of `cases`.
    With a signature, CSV writes its json fields as JSON even when they hold text (so that
    importing reads them back as the same values)."""
    rows = ({"id": c.id, "inputs": c.inputs, "expected": c.expected, "split": c.split,
             "tags": list(c.tags), "golden": c.golden} for c in cases)
    if fmt == "json":
        rows = list(rows)
        out.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return len(rows)
    if fmt == "yaml":
        rows = list(rows)
        out.write(yaml.safe_dump(rows, allow_unicode=True, sort_keys=False))
        return len(rows)
    count = 0
    if fmt == "jsonl":
        for count, row in enumerate(rows, start=1):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return count
    if columns is None:
        cases = list(cases)
        columns = ([k for c in cases for k in c.inputs], [k for c in cases for k in c.expected])
    inputs = sorted(set(columns[0]))
    outputs = sorted(set(columns[1]) - set(inputs))
    as_json = {f.name for f in (*signature.inputs, *signature.outputs) if f.type == "json"} if signature else set()
    writer = csv.DictWriter(out, fieldnames=[*inputs, *outputs, "split", "tags", "golden"])
    writer.writeheader()
    for count, c in enumerate(cases, start=1):
        writer.writerow({**{k: _cell(v, k in as_json) for k, v in c.inputs.items()},
                         **{k: _cell(v, k in as_json) for k, v in c.expected.items()},
                         "split": c.split or "", "tags": ",".join(c.tags), "golden": int(c.golden)})
    return count


def _cell(value: Any, as_json: bool) -> str:
    return value if isinstance(value, str) and not as_json else json.dumps(value, ensure_ascii=False)
