"""`promptlab view`: the real CLI serving a workspace's database, driven in headless Chromium.

Every test starts `python -m promptlab view --port 0` in its own process. The
browser sees a run advance while `promptlab eval` writes it from another process,
then a compare and an optimization's growing chart; scripts in cases and model
outputs stay text; anything but loopback needs the token; and browsing leaves the
database file byte for byte as it was. The waits poll with generous limits; no
test asserts on speed.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.seeing import evaluate, rules, setup_project
from tests.test_reports import HOSTILE, HOSTILE_CASE, chromium, hostile_run, insert_optimization  # noqa: F401

WAIT_S = 120.0  # only stops a hung process from hanging the suite


def _env(ws) -> dict:
    return {**os.environ, "PROMPTLAB_CONFIG": str(ws.root / "promptlab.toml")}


@contextlib.contextmanager
def viewer(ws, *flags: str, env: dict | None = None):
    """`promptlab view` on a free loopback port; yields the address it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "promptlab", "view", "--port", "0", *flags], cwd=ws.root,
                            env=_env(ws) | (env or {}), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(WAIT_S)
    try:
        assert lines and lines[0].startswith("promptlab view: http://"), (lines, proc.poll(), proc.stderr.read()
                                                                        if proc.poll() is not None else "")
        yield lines[0].split()[2]
    finally:
        proc.terminate()
        proc.wait(WAIT_S)


def origin(url: str) -> str:
    return url.split("/?")[0].rstrip("/")


def get(url: str, headers: dict | None = None) -> tuple[int, dict, str]:
    """Status, headers and body, without following redirects."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=WAIT_S) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


def poll(check, what: str):
    """Wait until check() is truthy (and return it)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def assert_own_origin(page, base: str):
    assert page.requests and all(u.startswith(base + "/") for u in page.requests), page.requests
    assert page.console_errors == []


LIVE = {
    "first": "window.__same_page = 1; document.getElementById('live-done').textContent",
    "later": """(async () => {
        const first = document.getElementById('live-done').textContent;
        for (let i = 0; i < 400; i++) {  // at most 40 s
            await new Promise(r => setTimeout(r, 100));
            const now = document.getElementById('live-done').textContent;
            if (now !== first) { return {first, now, same: window.__same_page === 1,
                total: document.getElementById('live-total').textContent,
                rate: document.getElementById('live-rate').textContent}; }
        }
        return {first, now: first, same: window.__same_page === 1};
    })()""",
}


@pytest.mark.slow  # a live run watched in a real browser
def test_a_live_run_a_compare_and_an_optimization_chart_in_chromium(workspace, chromium):  # noqa: F811
    ids = setup_project(workspace, n=24)
    workspace.fake.configure(rules=rules(broken=[1, 2, 5]))
    evaluate(workspace, "p@1", "before")
    workspace.fake.configure(rules=rules(broken=[1, 2, 5]), latency_ms=600)
    eval_proc = subprocess.Popen(
        [sys.executable, "-m", "promptlab", "eval", "--prompt", "p@2", "--name", "after", "--metric",
         "exact_match", "--concurrency", "1"], cwd=workspace.root, env=_env(workspace),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with viewer(workspace) as url:
            base = origin(url)
            poll(lambda: workspace.rows("select count(*) from results r join runs u on u.id = r.run_id "
                                        "where u.name = 'after'")[0][0] > 0, "the eval's first result")
            listing = chromium.open(f"{base}/projects/1", {
                "rows": "[...document.querySelectorAll('#runs tbody tr')].map(r => r.innerText)",
                "href": "document.querySelector('#runs a[href^=\"/runs/\"]').getAttribute('href')"})
            assert_own_origin(listing, base)
            assert "after" in listing.values["rows"][0] and "running" in listing.values["rows"][0]
            assert "before" in listing.values["rows"][1] and "completed" in listing.values["rows"][1]

            run = chromium.open(base + listing.values["href"], LIVE)
            assert_own_origin(run, base)
            later = run.values["later"]
            assert later["same"] and int(later["now"]) > int(later["first"]) >= 1, later  # no reload
            assert later["total"] == "24"
            assert run.values["first"] == later["first"]

            _, stderr = eval_proc.communicate(timeout=WAIT_S)
            assert eval_proc.returncode == 0, stderr

            # tick the two runs in the list; the form's address is the compare page
            picked = chromium.open(f"{base}/projects/1", {"query": """(() => {
                const button = document.getElementById('compare-button');
                const before = button.disabled;
                document.querySelectorAll('#runs input[name=run]').forEach(b => { b.checked = true; });
                document.getElementById('compare-form').dispatchEvent(new Event('change'));
                return {before, after: button.disabled,
                        query: new URLSearchParams(new FormData(document.getElementById('compare-form'))).toString()};
            })()"""})
            assert picked.values["query"]["before"] is True and picked.values["query"]["after"] is False
            compare = chromium.open(f"{base}/projects/1/compare?{picked.values['query']['query']}", {
                "regressed": "[...document.querySelectorAll('#regressed .case')].map(e => +e.dataset.case)",
                "fixed": "document.querySelectorAll('#fixed .case').length",
                "text": "document.body.innerText"})
            assert_own_origin(compare, base)
            assert sorted(compare.values["regressed"]) == sorted(ids[i] for i in (1, 2, 5))
            assert compare.values["fixed"] == 0
            assert "-Review: {{ text }}" in compare.values["text"] and "+Rate: {{ text }}" in compare.values["text"]

            # an optimization that is still running: its chart grows as its history does
            prompts = dict(workspace.rows("select version, id from prompts"))
            history = [{"event": "candidate", "iteration": 0, "prompt_id": prompts[1], "ref": "p@1"},
                       {"event": "eval", "iteration": 0, "ref": "p@1", "train": 0.5, "val": 0.55}]
            insert_optimization(workspace, "opt", prompts[1], None, history, status="running")
            opt_id = workspace.rows("select id from optimizations where name = 'opt'")[0][0]

            def grow():
                time.sleep(2)  # the page is open by then (if not, the chart is already grown: still a pass)
                with sqlite3.connect(workspace.db_path) as conn:
                    conn.execute("update optimizations set history = ? where id = ?", [json.dumps(history + [
                        {"event": "candidate", "iteration": 1, "prompt_id": prompts[2], "ref": "p@2"},
                        {"event": "eval", "iteration": 1, "ref": "p@2", "train": 0.7, "val": 0.8}]), opt_id])
            writer = threading.Thread(target=grow)
            writer.start()
            chart = chromium.open(f"{base}/optimizations/{opt_id}", {
                "first": "document.querySelectorAll('#trajectory svg circle').length",
                "later": """(async () => {
                    for (let i = 0; i < 400; i++) {
                        const n = document.querySelectorAll('#trajectory svg circle').length;
                        if (n > 2) { return n; }
                        await new Promise(r => setTimeout(r, 100));
                    }
                    return 0;
                })()""",
                "lines": "document.querySelectorAll('#trajectory svg polyline').length"})
            writer.join()
            assert_own_origin(chart, base)
            assert chart.values["first"] in (2, 4) and chart.values["later"] == 4 and chart.values["lines"] == 2
    finally:
        if eval_proc.poll() is None:
            eval_proc.kill()
            eval_proc.wait()


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_scripts_in_cases_outputs_and_names_stay_text(workspace, chromium):  # noqa: F811
    ids = hostile_run(workspace)
    assert workspace.cli("prompt", "add", "p", "--signature", "sentiment", "--template",
                         "</pre><script>window.__pwned=9</script>{{ text }}").code == 0
    workspace.fake.configure(rules=rules(replies={3: HOSTILE[1]}, prefix="</pre><script>window.__pwned=9</script>"))
    evaluate(workspace, "p@2", "<img src=x onerror=\"window.__pwned=8\">")
    checks = {"pwned": "typeof window.__pwned", "text": "document.body.innerText",
              "scripts": "document.scripts.length", "injected": "document.querySelectorAll('img, svg[onload]').length"}
    with viewer(workspace) as url:
        base = origin(url)
        pages = {"run": "/runs/1", "hostile-named run": "/runs/2", "list": "/projects/1",
                 "compare": "/projects/1/compare?a=r1&b=%3Cimg%20src%3Dx%20onerror%3D%22window.__pwned%3D8%22%3E",
                 "prompt": "/projects/1/prompts/p?a=1&b=2", "messages": f"/runs/2/results/{ids[3]}/0"}
        for what, path in pages.items():
            page = chromium.open(base + path, checks)
            assert_own_origin(page, base)
            assert page.values["pwned"] == "undefined", what  # nothing from a case, an output or a name ran
            assert page.values["scripts"] == 1 and page.values["injected"] == 0, what
            text = page.values["text"]
            shown = {"run": [*HOSTILE.values(), HOSTILE_CASE["text"]],
                     "hostile-named run": ['<img src=x onerror="window.__pwned=8">'],
                     "list": ['<img src=x onerror="window.__pwned=8">'],
                     "compare": [HOSTILE[1], HOSTILE[2]],  # regressed in B, fixed from A
                     "prompt": ["+</pre><script>window.__pwned=9</script>{{ text }}"],
                     "messages": ["</pre><script>window.__pwned=9</script>case-03 good item", HOSTILE[1]]}[what]
            for payload in shown:
                assert payload in text, (what, payload)  # shown, as text


def test_other_hosts_need_the_token(workspace):
    setup_project(workspace, n=2)
    refused = workspace.cli("view", "--host", "0.0.0.0")
    assert refused.code == 2 and "--token" in refused.stderr and refused.stdout == ""
    short = workspace.cli("view", "--host", "0.0.0.0", "--token", "tooshort")
    assert short.code == 2 and "use at least 16" in short.stderr

    token = "a-secret-of-some-length"
    with viewer(workspace, "--host", "0.0.0.0", "--token", token) as url:
        assert url.endswith(f"/?token={token}")
        base = f"http://127.0.0.1:{origin(url).rsplit(':', 1)[1]}"
        for path in ("/", "/projects/1", "/api/runs/1/progress", "/static/view.js", "/no/such/page"):
            assert get(base + path)[0] == 401, path
            assert get(base + path, {"Authorization": "Bearer wrong-token-of-length"})[0] == 401, path
            assert get(f"{base}{path}?token=wrong-token-of-length")[0] == 401, path
        assert get(base + "/", {"Authorization": f"Bearer {token}"})[0] == 200
        status, headers, _ = get(f"{base}/projects/1?token={token}&status=running")
        assert status == 303 and headers["location"] == "/projects/1?status=running"
        cookie = headers["set-cookie"].split(";")[0]
        assert "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
        assert get(base + "/projects/1", {"Cookie": cookie})[0] == 200


def test_the_token_link_lets_a_browser_in_and_drops_the_token_from_the_address(workspace, chromium):  # noqa: F811
    setup_project(workspace, n=2)
    workspace.fake.configure(rules=rules())
    evaluate(workspace, "p@1", "r1")
    token = "a-secret-of-some-length"
    with viewer(workspace, "--host", "0.0.0.0", "--token", token) as url:
        base = f"http://127.0.0.1:{origin(url).rsplit(':', 1)[1]}"
        page = chromium.open(f"{base}/runs/1?token={token}", {
            "address": "location.href", "filter": "document.getElementById('shown').textContent",
            "progress": "fetch('/api/runs/1/progress').then(r => r.json()).then(p => p.done)"})
        assert page.values["address"] == base + "/runs/1"
        assert page.values["filter"] == "2 of 2 shown"  # the script came with the cookie
        assert page.values["progress"] == 2  # and so do the page's own requests
        assert page.console_errors == []


def test_loopback_answers_its_own_name_only_and_sends_a_csp(workspace):
    setup_project(workspace, n=2)
    opener = workspace.write("open-browser", f"#!/bin/sh\necho \"$1\" > {workspace.root / 'opened'}\n")
    opener.chmod(0o755)
    with viewer(workspace, "--open", env={"BROWSER": str(opener)}) as url:
        assert poll(lambda: (workspace.root / "opened").exists() and (workspace.root / "opened").read_text(),
                    "--open to open the address") == url + "\n"
        assert url.startswith("http://127.0.0.1:")
        base = origin(url)
        status, headers, body = get(base + "/")
        assert status == 200 and "demo" in body
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert body.count("<script") == 1 and '<script src="/static/view.js">' in body
        assert get(base + "/", {"Host": "attacker.example"})[0] == 421  # DNS rebinding
        assert get(base.replace("127.0.0.1", "localhost") + "/")[0] == 200
        assert get(base + "/runs/99")[0] == 404


def test_pages_are_made_of_the_reports_pieces_and_keep_scripts_as_text(workspace):
    """Without a browser: a run, one of its results and an optimization's chart, from the report's macros."""
    ids = hostile_run(workspace)
    prompt = workspace.rows("select id from prompts")[0][0]
    insert_optimization(workspace, "opt", prompt, None, [{"prompt_id": prompt, "train": 0.5, "val": 0.6}],
                        status="running")
    with viewer(workspace) as url:
        base = origin(url)
        status, _, run = get(base + "/runs/1")
        assert status == 200 and "95% CI" in run and '<table class="heat">' in run and "Prompt p@1" in run
        assert run.count('<article class="case') == 11 and f'href="/runs/1/results/{ids[1]}/0"' in run
        status, _, result = get(f"{base}/runs/1/results/{ids[1]}/0")
        assert status == 200 and result.count('<article class="case fail"') == 1
        for page in (run, result):
            assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page and "<script>window" not in page
        chart = json.loads(get(base + "/api/optimizations/1/chart")[2])
        assert chart["candidates"] == 1 and chart["html"].count("<circle") == 2


def test_a_missing_database_is_refused(workspace):
    result = workspace.cli("view")
    assert result.code == 2 and "no promptlab database" in result.stderr and "promptlab init" in result.stderr
    assert not workspace.db_path.exists()


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_browsing_leaves_the_database_byte_for_byte_unchanged(workspace, chromium):  # noqa: F811
    setup_project(workspace, n=12)
    workspace.fake.configure(rules=rules(broken=[3]))
    evaluate(workspace, "p@1", "r1")
    evaluate(workspace, "p@2", "r2")
    prompts = dict(workspace.rows("select version, id from prompts"))
    insert_optimization(workspace, "opt", prompts[1], prompts[2], [
        {"prompt_id": prompts[1], "train": 0.4, "val": 0.5}, {"prompt_id": prompts[2], "train": 0.6, "val": 0.7}])
    gc.collect()  # close the in-process CLI's connections, then fold the log into the file
    with sqlite3.connect(workspace.db_path) as conn:
        conn.execute("pragma wal_checkpoint(TRUNCATE)")
    conn.close()
    before = sha256(workspace.db_path)
    with viewer(workspace) as url:
        base = origin(url)
        for path in ("/", "/projects/1", "/projects/1?sort=score&order=asc&all=1&status=completed", "/runs/1",
                     "/runs/2", "/projects/1/compare?a=r1&b=r2", "/projects/1/prompts/p?a=1&b=2",
                     "/optimizations/1"):
            page = chromium.open(base + path, {"text": "document.body.innerText"})
            assert_own_origin(page, base)
            assert "Internal Server Error" not in page.values["text"], path
        for path in ("/api/runs/1/progress", "/api/optimizations/1/chart"):
            assert get(base + path)[0] == 200
    assert sha256(workspace.db_path) == before


@pytest.mark.slow  # seconds: real processes, servers, signals or timeouts
def test_pages_filter_sort_and_show_what_the_report_shows(workspace, chromium):  # noqa: F811
    ids = setup_project(workspace, n=12)
    assert workspace.cli("prompt", "label", "p@1", "production").code == 0
    assert workspace.cli("prompt", "add", "p", "--signature", "sentiment", "--template", "Say: {{ text }}").code == 0
    workspace.fake.configure(rules=rules(broken=[3, 4]))
    evaluate(workspace, "p@1", "r1")
    evaluate(workspace, "p@2", "r2")
    rows = "[...document.querySelectorAll('#runs tbody tr')].map(r => r.cells[1].innerText)"
    with viewer(workspace) as url:
        base = origin(url)
        listed = {query: chromium.open(f"{base}/projects/1?{query}", {"rows": rows}).values["rows"]
                  for query in ("", "sort=score&order=asc", "sort=score&order=desc", "status=running",
                                "prompt=p&status=completed&sort=name&order=asc")}
        assert listed == {"": ["r2", "r1"], "sort=score&order=asc": ["r2", "r1"],
                          "sort=score&order=desc": ["r1", "r2"], "status=running": [],
                          "prompt=p&status=completed&sort=name&order=asc": ["r1", "r2"]}

        progress = json.loads(get(base + "/api/runs/2/progress")[2])
        summary = json.loads(workspace.rows("select summary from runs where name = 'r2'")[0][0])
        assert progress == {"status": "completed", "done": 12, "total": 12, "passed": 10, "errors": 0, "cached": 0,
                            "pass_rate": 10 / 12, "calls_per_s": summary["calls_per_s"]}

        run = chromium.open(f"{base}/runs/2", {
            "text": "document.body.innerText",
            "filters": """(() => {
                const q = document.getElementById('search'), s = document.getElementById('status-filter');
                const shown = () => document.getElementById('shown').textContent;
                const out = {all: shown()};
                s.value = 'fail'; s.dispatchEvent(new Event('change')); out.failed = shown();
                q.value = 'CASE-03'; q.dispatchEvent(new Event('input')); out.both = shown();
                s.value = ''; s.dispatchEvent(new Event('change')); out.search = shown();
                return out;
            })()""",
            "link": f"document.querySelector('#results .case a[href$=\"/results/{ids[3]}/0\"]').getAttribute('href')"})
        assert run.values["filters"] == {"all": "12 of 12 shown", "failed": "2 of 12 shown", "both": "1 of 12 shown",
                                         "search": "1 of 12 shown"}
        for shown in ("constant baseline", "classification: per label", "expected ↓ / predicted →",
                      "95% CI", "Score distribution", "Prompt p@2"):
            assert shown.lower() in run.values["text"].lower(), shown  # headings are uppercased by CSS

        messages = chromium.open(base + run.values["link"], {
            "messages": "[...document.querySelectorAll('#messages .message')].map(m => m.innerText)"})
        assert_own_origin(messages, base)
        assert messages.values["messages"][-1].endswith("Rate: case-03 good item")

        family = chromium.open(f"{base}/projects/1/prompts/p?a=1&b=3", {
            "versions": "[...document.querySelectorAll('#versions tbody tr')].map(r => r.innerText)",
            "depth": "document.querySelectorAll('#lineage ul.tree ul.tree ul.tree').length",
            "diff": "document.getElementById('diff').innerText"})
        assert "production" in family.values["versions"][0] and "p@2" in family.values["versions"][2]
        assert family.values["depth"] == 1  # p@1 → p@2 → p@3
        assert "-Review: {{ text }}" in family.values["diff"] and "+Say: {{ text }}" in family.values["diff"]
