"""Reports: facts gathered once from the store (facts.py), one module per output format.

    render(facts, "html" | "md" | "json" | "junit") -> str   (secrets masked)
    render(facts, "pdf") -> bytes                              (the HTML report, printed)
    chunks(facts, fmt)  -> the same in pieces (JSON and JUnit stream a run's results)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

FORMATS = ("html", "md", "json", "junit", "pdf")
SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json", ".xml": "junit", ".pdf": "pdf"}


def render(facts: dict[str, Any] | list[dict[str, Any]], fmt: str, gates: list[dict] | None = None) -> str | bytes:
    """One run's or optimization's facts in a format (Markdown and JUnit take a list of run facts
    and the gates too). Every known secret is masked first (error messages quote providers)."""
    pieces = list(chunks(facts, fmt, gates))
    return pieces[0] if fmt == "pdf" else "".join(pieces)


def chunks(facts: dict[str, Any] | list[dict[str, Any]], fmt: str,
           gates: list[dict] | None = None) -> Iterator[str | bytes]:
    """`render` in pieces: JSON and JUnit write a run's results as they read them."""
    from promptlab.redact import redact_all

    if fmt not in FORMATS:
        raise ValueError(f"unknown report format '{fmt}' (formats: {', '.join(FORMATS)})")
    facts, gates = redact_all(facts), redact_all(gates)  # a run's result rows mask themselves
    if fmt == "html":
        from promptlab.reports.to_html import render as html
        yield html(facts)
    elif fmt == "pdf":
        from promptlab.reports.to_pdf import render as pdf
        yield pdf(facts)
    elif fmt == "md":
        from promptlab.reports.to_markdown import render as md
        yield md(facts, gates=gates)
    elif fmt == "json":
        from promptlab.reports.to_json import chunks as js
        yield from js(facts)
    else:
        from promptlab.reports.to_junit import chunks as junit
        yield from junit(facts if isinstance(facts, list) else [facts], gates=gates)


def write_report(path: Path, text: str | bytes | Iterable[str | bytes]) -> int:
    """Write a report file whole (a temporary file renamed into place), from its text or its pieces;
    returns its size in bytes."""
    import os

    from promptlab.errors import UsageError

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            for piece in [text] if isinstance(text, (str, bytes)) else text:
                f.write(piece if isinstance(piece, bytes) else piece.encode("utf-8"))
        size = tmp.stat().st_size
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write the report ({exc.strerror or exc}); check the path") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size
