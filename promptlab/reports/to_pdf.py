"""Facts → PDF: the HTML report laid out and printed by WeasyPrint (the `pdf` extra).

    render(facts) -> bytes

The page is the HTML report itself, so the PDF says exactly what the HTML says. WeasyPrint
runs no script, and its URL fetcher here allows only `data:` URIs: a report is
made from model output and case text, and printing it must not reach the network or read
a file (the HTML is autoescaped already; this is the second wall).
"""

from __future__ import annotations

import logging
from typing import Any

from promptlab.errors import UsageError

EXTRA_HINT = "report -f pdf needs the pdf extra: pip install 'promptlab[pdf]'"


def render(facts: Any) -> bytes:
    try:
        from weasyprint import HTML
        from weasyprint.urls import URLFetcher
    except ImportError:  # an optional extra: say which
        raise UsageError(EXTRA_HINT) from None
    from promptlab.reports.to_html import render as html

    # WeasyPrint warns (through logging) about CSS it does not support; that is not the user's problem
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    return HTML(string=html(facts), url_fetcher=URLFetcher(allowed_protocols={"data"})).write_pdf()
