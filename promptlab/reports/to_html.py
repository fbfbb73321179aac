"""Facts → one self-contained HTML page, rendered from the jinja2 templates in templates/.

    render(facts) -> str
    environment(*loaders) -> the Environment the report and `promptlab view` share

templates/report.html is the page: inline CSS (report.css), inline SVG charts, a tiny
filter script (report.js). Its pieces are macros that the viewer's pages import too:

    charts.html               a score's interval, a histogram, every candidate's scores (SVG)
    parts.html                a result's fields, one result, a prompt diff, a prompt's text
    run_parts.html            a run's header, overview (cards, gates, P/R/F1 tables, heat map,
                              distributions, slowest and costliest) and failed cases
    optimization_parts.html   an optimization's body and its chart

The templates only present: facts.py gathers the facts. Nothing is fetched (no CDN, no font,
no image); autoescaping escapes all text that came from a model, a case or a prompt, and a
Content-Security-Policy allows only the page's own script (by hash) and no network at all, so
even a mistake in escaping could not run a script from a model's output or load anything.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from typing import Any, Callable

from jinja2 import BaseLoader, ChoiceLoader, Environment, PackageLoader, StrictUndefined

from promptlab.reports.notes import p_text

MAX_TEXT = 4000     # characters shown per input/expected/output field
MAX_FAILED = 500    # failed cases listed


def render(facts: Any) -> str:
    return _report_environment().get_template("report.html").render(facts=facts)


def environment(*loaders: BaseLoader) -> Environment:
    """Templates from `loaders` first (the viewer's pages), then the report's: autoescaped, an
    undefined name an error, None shown as nothing."""
    env = Environment(loader=ChoiceLoader([*loaders, PackageLoader("promptlab.reports", "templates")]),
                      autoescape=True, undefined=StrictUndefined, finalize=lambda v: "" if v is None else v,
                      trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.do"])
    env.filters.update(num=num, pct=pct, thousands="{:,}".format, short_num=short_num, short=short,
                       field_text=field_text, as_json=as_json, sha256=sha256, p_value=p_text)
    env.globals.update(MAX_TEXT=MAX_TEXT, MAX_FAILED=MAX_FAILED, scale=scale, zip=zip)
    return env


@functools.cache
def _report_environment() -> Environment:
    return environment()


# ---- filters: how a value is written (the templates decide where) -----------

def num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


def short_num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if value else "0"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def short(value: Any, width: int = 90) -> str:
    """One line: a dict's values joined, cut at `width` characters."""
    if isinstance(value, dict):
        value = " · ".join(str(v) for v in value.values())
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def field_text(value: Any) -> str:
    """Inputs or expected outputs: one field as its text, several as 'name: value' lines."""
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    elif isinstance(value, dict):
        return "\n".join(f"{k}: {v if isinstance(v, str) else as_json(v)}" for k, v in value.items())
    return value if isinstance(value, str) else as_json(value)


def as_json(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False)


def sha256(text: str) -> str:
    """The base64 SHA-256 a Content-Security-Policy names a script by."""
    return base64.b64encode(hashlib.sha256(str(text).encode()).digest()).decode()


def scale(low: float, high: float, start: float, end: float) -> Callable[[float], float]:
    """Map [low, high] onto [start, end] (a chart's axis); a single value sits in the middle."""
    def position(value: float) -> float:
        return start + ((value - low) / (high - low) if high != low else 0.5) * (end - start)
    return position
