"""Reports: facts gathered once from the store (facts.py), one module per output format.

    render(facts, "html" | "md" | "json" | "junit") -> str   (secrets masked)
    render(facts, "pdf") -> bytes                              (the HTML report, printed)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FORMATS = ("html", "md", "json", "junit", "pdf")
SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json", ".xml": "junit", ".pdf": "pdf"}


def p_text(p: float | None) -> str:
    """A p-value to 4 places; one that rounds to 0 is "< 0.0001", never "0.0000" (the terminal,
    the report and the viewer all write it so)."""
    return "–" if p is None else "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def render(facts: dict[str, Any] | list[dict[str, Any]], fmt: str, gates: list[dict] | None = None) -> str | bytes:
    """One run's or optimization's facts in a format (Markdown and JUnit take a list of run facts
    and the gates too). Every known secret is masked first (error messages quote providers)."""
    from promptlab.redact import redact_all

    facts, gates = redact_all(facts), redact_all(gates)
    if fmt == "html":
        from promptlab.reports.to_html import render as html
        return html(facts)
    if fmt == "pdf":
        from promptlab.reports.to_pdf import render as pdf
        return pdf(facts)
    if fmt == "md":
        from promptlab.reports.to_markdown import render as md
        return md(facts, gates=gates)
    if fmt == "json":
        from promptlab.reports.to_json import render as js
        return js(facts)
    if fmt == "junit":
        from promptlab.reports.to_junit import render as junit
        return junit(facts if isinstance(facts, list) else [facts], gates=gates)
    raise ValueError(f"unknown report format '{fmt}' (formats: {', '.join(FORMATS)})")


def write_report(path: Path, text: str | bytes) -> None:
    """Write a report file whole (a temporary file renamed into place)."""
    import os

    from promptlab.errors import UsageError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the report ({exc.strerror or exc}); check the path") from None
