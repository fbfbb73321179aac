"""`promptlab report RUN -f pdf`: the HTML report printed to a real PDF by WeasyPrint."""

import http.server
import sys
import threading

import pypdf
import pytest

from tests.seeing import evaluate, setup_project, rules


def _run(ws, name="r1"):
    setup_project(ws, n=8, second=False)
    ws.fake.configure(rules=rules(replies={3: "<b>bold</b> & <script>x()</script>"}, prefix="Review: "))
    evaluate(ws, "p@1", name)


def test_report_pdf_is_a_pdf_that_says_what_the_html_says(workspace, tmp_path):
    _run(workspace)
    out = tmp_path / "out" / "r.pdf"
    result = workspace.cli("report", "r1", "-f", "pdf", "-o", str(out))
    assert result.code == 0, result.stderr
    assert "wrote" in result.stderr and "pdf" in result.stderr
    reader = pypdf.PdfReader(out)  # a real parser: raises on a file that is not a PDF
    assert len(reader.pages) >= 1
    text = " ".join(page.extract_text() for page in reader.pages)
    assert "r1" in text and "exact_match" in text
    assert "<script>x()</script>" in text  # a model's markup is printed as text, not interpreted
    # the suffix alone chooses the format
    assert workspace.cli("report", "r1", "-o", str(tmp_path / "s.pdf")).code == 0
    assert (tmp_path / "s.pdf").read_bytes().startswith(b"%PDF-")


def test_report_pdf_needs_a_file(workspace):
    _run(workspace)
    result = workspace.cli("report", "r1", "-f", "pdf")
    assert result.code == 2
    assert "-o FILE.pdf" in result.stderr


def test_report_pdf_without_the_extra_names_it(workspace, tmp_path, monkeypatch):
    _run(workspace)
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # as if the extra were not installed
    result = workspace.cli("report", "r1", "-f", "pdf", "-o", str(tmp_path / "r.pdf"))
    assert result.code == 2
    assert "promptlab[pdf]" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r.pdf").exists()


def test_printing_a_report_fetches_nothing(workspace, tmp_path, monkeypatch):
    """Were markup ever to slip through the HTML's escaping, the PDF engine still loads nothing:
    its fetcher takes only data: URIs (no http, no file)."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = tmp_path / "secret.css"
    secret.write_text("body { background: red }")
    page = (f'<html><head><link rel="stylesheet" href="file://{secret}"></head><body>'
            f'<img src="http://127.0.0.1:{server.server_port}/x.png">'
            f'<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">hello</body></html>')
    _run(workspace)
    monkeypatch.setattr("promptlab.reports.to_html.render", lambda facts: page)
    try:
        result = workspace.cli("report", "r1", "-f", "pdf", "-o", str(tmp_path / "r.pdf"))
    finally:
        server.shutdown()
    assert result.code == 0, result.stderr
    assert hits == []
    assert "hello" in pypdf.PdfReader(tmp_path / "r.pdf").pages[0].extract_text()
