"""Read and write test cases as CSV, JSON, JSONL or YAML.

A row either has the explicit shape {inputs: {...}, expected: {...}} or is
flat, its keys named after the signature's input and output fields. Optional
keys: split, tags, golden.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from promptlab.errors import UsageError
from promptlab.models import Case, Signature

FORMATS = ("csv", "json", "jsonl", "yaml")
_META = ("split", "tags", "golden", "id")


def detect_format(path: Path, fmt: str | None = None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    fmt = {"yml": "yaml", "ndjson": "jsonl"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise UsageError(f"{path}: unknown case format '{fmt}'; use one of {', '.join(FORMATS)} "
                         f"(or pass --format)")
    return fmt


def load_rows(path: Path, fmt: str | None = None) -> list[dict[str, Any]]:
    fmt = detect_format(path, fmt)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: cases file not found; check the path") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; re-save it as UTF-8") from None
    if fmt == "csv":
        try:
            rows = list(csv.DictReader(io.StringIO(text), strict=True))
        except csv.Error as exc:
            raise UsageError(f"{path}: malformed CSV ({exc}); fix the quoting") from None
        for number, row in enumerate(rows, start=2):
            if None in row or any(v is None for v in row.values()):
                raise UsageError(f"{path}: line {number} has a different number of columns "
                                 f"than the header; fix that row")
        return rows
    if fmt == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{path}: line {number}: invalid JSON ({exc.msg}); fix that line") from None
        return _check_objects(rows, path)
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
        return _case_list(data, path, 'a JSON list of cases (or {"cases": [...]})')
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise UsageError(f"{path}: {where}malformed YAML ({getattr(exc, 'problem', exc)})") from None
    return _case_list(data, path, "a YAML list of cases (or a 'cases:' list)")


def _case_list(data: Any, path: Path, expected: str) -> list[dict]:
    """A parsed JSON/YAML document → its list of case rows (bare, or under 'cases')."""
    if isinstance(data, dict) and isinstance(data.get("cases"), list):
        data = data["cases"]
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected {expected}")
    return _check_objects(data, path)


def _check_objects(rows: list, path: Path | str) -> list[dict]:
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise UsageError(f"{path}: case {i} is not an object with named fields")
    return rows


def rows_to_cases(rows: Iterable[dict[str, Any]], signature: Signature | None,
                  where: str, *, golden: bool = True, split: str | None = None) -> list[Case]:
    """Map rows to cases by field name; every input field must be present."""
    cases = []
    for i, row in enumerate(rows, start=1):
        if "inputs" in row and isinstance(row["inputs"], dict):
            inputs, expected = row["inputs"], row.get("expected") or {}
        elif signature is None:
            raise UsageError(f"{where}: case {i} is flat but the prompt has no signature; "
                             f"use {{inputs: ..., expected: ...}} or give a signature")
        else:
            inputs = {n: row[n] for n in signature.input_names if n in row}
            expected = {n: row[n] for n in signature.output_names if n in row and row[n] not in ("", None)}
        if signature is not None:
            missing = [n for n in signature.input_names if n not in inputs]
            if missing:
                raise UsageError(f"{where}: case {i} lacks input field '{missing[0]}' "
                                 f"(signature '{signature.name}' needs {', '.join(signature.input_names)})")
        tags = row.get("tags") or []
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        row_golden = row.get("golden", golden)
        if isinstance(row_golden, str):
            row_golden = row_golden.strip().lower() in ("1", "true", "yes")
        try:
            cases.append(Case(inputs=inputs, expected=expected, tags=tuple(tags),
                              split=row.get("split") or split, golden=bool(row_golden)))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise UsageError(f"{where}: case {i}: field '{'.'.join(map(str, err['loc']))}': "
                             f"{err['msg']}") from None
    return cases


def dump_cases(cases: list[Case], fmt: str) -> str:
    rows = [{"id": c.id, "inputs": c.inputs, "expected": c.expected, "split": c.split,
             "tags": list(c.tags), "golden": c.golden} for c in cases]
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(rows, allow_unicode=True, sort_keys=False)
    out = io.StringIO()
    inputs = sorted({k for c in cases for k in c.inputs})
    outputs = sorted({k for c in cases for k in c.expected} - set(inputs))
    writer = csv.DictWriter(out, fieldnames=[*inputs, *outputs, "split", "tags", "golden"])
    writer.writeheader()
    for c in cases:
        writer.writerow({**{k: _cell(v) for k, v in c.inputs.items()},
                         **{k: _cell(v) for k, v in c.expected.items()},
                         "split": c.split or "", "tags": ",".join(c.tags), "golden": int(c.golden)})
    return out.getvalue()


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
