"""Showing a big run reads a page at a time: reports stream, the viewer pages and filters in SQL
and fetches one result by its key, and the memory of `runs show` and every report stays flat."""

from __future__ import annotations

import json
import re

import pytest

from tests.big_run import TEMPLATE_CASES, grow_run
from tests.seeing import evaluate
from tests.test_scale import peak_rss_mb

MAX_RSS_MB = 150


def big_run(workspace, n: int) -> None:
    workspace.sentiment_project(TEMPLATE_CASES)
    evaluate(workspace, "p", "r1")
    grow_run(workspace.db_path, "r1", n)


def viewer_client(workspace):
    from starlette.testclient import TestClient

    from promptlab.view.app import make_app

    return TestClient(make_app(workspace.db_path), base_url="http://127.0.0.1")


def articles(html: str) -> list[str]:
    """The case ids of the results a page lists, in order."""
    return re.findall(r'<article class="case \w+" data-status="\w+"><div class="meta"><span class="pill \w+">[^<]*'
                      r'</span> case (\d+)', html)


def test_the_json_report_streams_every_result_across_pages_in_order(workspace):
    big_run(workspace, 1234)  # more than two of the pages results are read in
    facts = json.loads(workspace.cli("report", "r1", "-f", "json").stdout)
    ids = [r["case_id"] for r in facts["results"]]
    assert len(ids) == 1234 and ids == sorted(set(ids))
    assert [r["case_id"] for r in facts["failed"]] == [r["case_id"] for r in facts["results"] if not r["passed"]]
    assert facts["counts"]["results"] == 1234 and facts["counts"]["errors"] == len(range(0, 1234, 97))
    assert sum(facts["distributions"]["exact_match"]["counts"]) == 1234 - facts["counts"]["errors"]
    slowest = [r["latency_ms"] for r in facts["slowest"]]
    live = [r["latency_ms"] for r in facts["results"] if not r["cached"] and not r["error_kind"]]
    assert slowest == sorted(live, reverse=True)[:10]
    costliest = [r["cost"] for r in facts["costliest"]]
    assert facts["costliest_by"] == "cost" and costliest == sorted((r["cost"] for r in facts["results"]),
                                                                    reverse=True)[:10]

    assert workspace.cli("report", "r1", "-o", "r1.xml").code == 0
    xml = (workspace.root / "r1.xml").read_text()
    assert xml.count("<testcase ") == 1234 and 'tests="1234"' in xml and xml.rstrip().endswith("</testsuites>")


def test_the_viewer_pages_a_run_and_filters_it_in_sql(workspace):
    big_run(workspace, 250)
    first = workspace.rows("select min(case_id) from results")[0][0]
    with viewer_client(workspace) as client:
        page = client.get("/runs/1").text
        assert len(articles(page)) == 100 and articles(page)[0] == str(first)
        assert "250 of 250 shown · 1–100 on this page" in page and 'data-paged="1"' in page
        assert "page 1 of 3" in page and 'href="?q=&amp;status=&amp;page=2"' in page
        last = client.get("/runs/1?page=3").text
        assert len(articles(last)) == 50 and articles(last)[-1] == str(first + 249)
        assert "201–250 on this page" in last and "page=2" in last and "page=4" not in last
        assert len(articles(client.get("/runs/1?page=99").text)) == 50  # past the end: the last page

        errors = client.get("/runs/1?status=error").text
        assert articles(errors) == [str(first + k) for k in (0, 97, 194)] and "3 of 250 shown" in errors
        found = client.get("/runs/1", params={"q": "REVIEW 12:"}).text
        assert articles(found) == [str(first + 12)] and "1 of 250 shown" in found
        assert 'value="REVIEW 12:"' in found
        nothing = client.get("/runs/1", params={"q": "no such text", "status": "pass"}).text
        assert articles(nothing) == [] and "0 of 250 shown" in nothing

        one = client.get(f"/runs/1/results/{first + 12}/0")
        assert one.status_code == 200 and articles(one.text) == [str(first + 12)]
        assert "synthetic review 12: great" in one.text and "Review: synthetic review 12: great" in one.text
        assert client.get(f"/runs/1/results/{first + 12}/1").status_code == 404


def test_a_small_run_is_one_page_filtered_in_the_browser(workspace):
    big_run(workspace, 12)
    with viewer_client(workspace) as client:
        page = client.get("/runs/1").text
    assert len(articles(page)) == 12 and 'data-paged="0"' in page and 'id="pages"' not in page


@pytest.mark.slow
def test_showing_a_100k_result_run_stays_in_bounded_memory(workspace):
    big_run(workspace, 100_000)
    for args in (("runs", "show", "r1"), ("runs", "show", "r1", "--json"), ("report", "r1", "-o", "r1.html"),
                 ("report", "r1", "-o", "r1.json"), ("report", "r1", "-o", "r1.xml"), ("report", "r1", "-f", "md")):
        peak, _ = peak_rss_mb(workspace, *args)
        assert peak < MAX_RSS_MB, f"{' '.join(args)}: {peak:.0f} MB"
    [(failed,)] = workspace.rows("select count(*) from results where not passed")
    with open(workspace.root / "r1.json") as f:  # every result, the failed ones, the slowest and costliest ten
        assert sum(line.startswith('      "case_id": ') for line in f) == 100_000 + failed + 10 + 10
    assert (workspace.root / "r1.html").stat().st_size < 1_000_000
