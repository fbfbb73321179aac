"""The viewer's pages laid out in a real browser (headless Chromium): no two controls or table
headers overlap, at a desktop and a narrow width. Element boxes are compared, so a style that
collapses a form (the filter bar once shared the report's 8-px score-bar class and drew its
controls over the runs table) fails here whatever the page's text says."""

from __future__ import annotations

import pytest

from tests.seeing import evaluate, rules, setup_project
from tests.test_reports import chromium, insert_optimization, joined, scored  # noqa: F401
from tests.test_view import origin, viewer

OVERLAPS = """(() => {
    const boxes = [...document.querySelectorAll('input:not([type=hidden]), select, button, textarea, label, th')]
        .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; });
    const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.name ? '[' + e.name + ']' : '')
        + ' "' + (e.innerText || e.value || '').trim().slice(0, 24) + '"';
    const found = [];
    for (let i = 0; i < boxes.length; i++) {
        for (let j = i + 1; j < boxes.length; j++) {
            const a = boxes[i], b = boxes[j];
            if (a.contains(b) || b.contains(a)) { continue; }  // a label holds its select
            const p = a.getBoundingClientRect(), q = b.getBoundingClientRect();
            const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
            const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
            if (w > 1 && h > 1) { found.push(name(a) + ' over ' + name(b)); }
        }
    }
    return {checked: boxes.length, overlaps: found};
})()"""


@pytest.mark.slow  # a browser and a viewer process
def test_no_two_controls_or_table_headers_overlap_on_any_page(workspace, chromium):  # noqa: F811
    ws = workspace
    ids = setup_project(ws, n=8)
    ws.fake.configure(rules=rules(broken=[1, 2]))
    evaluate(ws, "p@1", "r1")
    evaluate(ws, "p@2", "r2")
    prompts = dict(ws.rows("select version, id from prompts"))
    insert_optimization(ws, "opt", prompts[1], prompts[2], [
        joined(0, prompts[1], "p@1", "base"), scored(0, "p@1", 0.5, 0.55),
        joined(1, prompts[2], "p@2", "rewrite", prompts[1]), scored(1, "p@2", 0.7, 0.8)])
    run_id = ws.rows("select id from runs where name = 'r2'")[0][0]
    pages = ["/", "/projects/1", "/projects/1?sort=score&order=asc", f"/runs/{run_id}",
             f"/runs/{run_id}/results/{ids[1]}/0", "/projects/1/compare?run=r1&run=r2",
             "/projects/1/prompts/p?a=1&b=2", "/optimizations/1"]
    checked = {}
    with viewer(ws) as url:
        base = origin(url)
        for width in (1280, 720):
            for path in pages:
                page = chromium.open(base + path, {"layout": OVERLAPS}, width=width)
                assert page.console_errors == [], (path, page.console_errors)
                layout = page.values["layout"]
                assert layout["overlaps"] == [], (width, path, layout["overlaps"])
                checked[path] = layout["checked"]
    assert checked["/projects/1"] >= 15 and checked["/projects/1/prompts/p?a=1&b=2"] >= 8  # the forms were seen


@pytest.mark.slow
def test_the_run_page_counts_what_its_live_card_counts(workspace, chromium):  # noqa: F811
    ws = workspace
    setup_project(ws, n=6, second=False)
    evaluate(ws, "p@1", "r1")
    with ws_running(ws, "r1"):  # as a run still writing its results: 3 of 6 stored so far
        with viewer(ws) as url:
            page = chromium.open(origin(url) + "/runs/1", {
                "header": "document.querySelector('header .result-count').textContent",
                "card": "document.getElementById('live-done').textContent + '/' + "
                        "document.getElementById('live-total').textContent"})
    assert page.values["card"] == "3/6"
    assert page.values["header"] == "3"


class ws_running:
    """A completed run made to look half done (running, half its results, no summary yet)."""

    def __init__(self, ws, name: str):
        self.ws, self.name = ws, name

    def __enter__(self) -> None:
        import sqlite3

        with sqlite3.connect(self.ws.db_path) as conn:
            run_id = conn.execute("select id from runs where name = ?", [self.name]).fetchone()[0]
            keep = [r[0] for r in conn.execute("select id from results where run_id = ? order by id limit 3", [run_id])]
            conn.execute(f"delete from results where run_id = ? and id not in ({','.join('?' * len(keep))})",
                         [run_id, *keep])
            conn.execute("update runs set status = 'running', summary = null, n_results = 0 where id = ?", [run_id])

    def __exit__(self, *exc) -> None:
        pass


def test_p_values_that_round_to_zero_read_as_the_cli_writes_them():
    from promptlab.reports.to_html import environment

    template = environment().from_string("{{ a|p_value }} {{ b|p_value }} {{ c|p_value }}")
    assert template.render(a=3e-7, b=0.01234, c=None) == "&lt; 0.0001 0.0123 –"  # escaped HTML for "< 0.0001"
    from promptlab.display import p_text
    assert p_text(3e-7) == "< 0.0001"  # the CLI's words
