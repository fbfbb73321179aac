"""Facts → one self-contained HTML page: inline CSS, inline SVG charts, a tiny filter script.

Nothing is fetched: no CDN, no font, no image. Every piece of text that came
from a model, a case or a prompt goes through `esc` (html.escape), and a
Content-Security-Policy allows only the page's own script (by hash) and no
network at all, so even a mistake in escaping could not run a script from a
model's output or load anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

MAX_TEXT = 4000     # characters shown per input/expected/output field
MAX_FAILED = 500    # failed cases listed

CSS = """
:root{--bg:#f7f7f5;--fg:#1d1f23;--muted:#6b7079;--card:#fff;--line:#e3e4e8;--accent:#2f6fde;
--good:#1f9d55;--bad:#d64545;--warn:#c27c0e;--code:#f1f2f4;--val:#e07b00;--train:#2f6fde}
@media (prefers-color-scheme:dark){:root{--bg:#15171a;--fg:#e6e7ea;--muted:#9aa0aa;--card:#1e2125;
--line:#30343a;--code:#24282d}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 20px 60px}
header h1{font-size:24px;margin:0 0 4px;word-break:break-all}
.sub{color:var(--muted);margin:0 0 20px}
.sub b{color:var(--fg);font-weight:600}
h2{font-size:17px;margin:34px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(215px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.card .k{color:var(--muted);font-size:13px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:30px;font-weight:650;margin:2px 0;font-variant-numeric:tabular-nums}
.card .ci{color:var(--muted);font-size:13px;font-variant-numeric:tabular-nums}
.card svg{display:block;margin-top:8px}
.pill{display:inline-block;padding:1px 8px;border-radius:99px;font-size:12px;font-weight:600;color:#fff}
.pill.ok{background:var(--good)}.pill.fail{background:var(--bad)}.pill.err{background:var(--warn)}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:18px}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line);
border-radius:8px;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;font-weight:600}
td.n,th.n{text-align:right}
.bar{display:inline-block;height:8px;border-radius:4px;background:var(--accent);vertical-align:middle}
.heat td{text-align:center;min-width:54px}
.heat td small{display:block;opacity:.75;font-size:11px}
.heat th.rowh{text-align:right}
.charts{display:flex;flex-wrap:wrap;gap:16px}
.chart{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 12px}
.chart .t{font-size:13px;color:var(--muted);margin-bottom:4px}
svg text{fill:var(--muted);font-size:11px}
.filter{display:flex;gap:10px;align-items:center;margin-bottom:12px}
.filter input{flex:1;max-width:420px;padding:8px 10px;border:1px solid var(--line);border-radius:8px;
background:var(--card);color:var(--fg);font:inherit}
.filter span{color:var(--muted);font-size:13px}
.case{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--bad);
border-radius:8px;padding:10px 12px;margin-bottom:10px}
.case.error{border-left-color:var(--warn)}.case.pass{border-left-color:var(--good)}
.case .meta{font-size:13px;color:var(--muted);margin-bottom:6px}
.case .cols{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:10px}
.case .cols div>b{display:block;font-size:12px;color:var(--muted);text-transform:uppercase;
letter-spacing:.04em;margin-bottom:2px}
.case .msg{margin-top:6px;font-size:13px;color:var(--warn);white-space:pre-wrap;word-break:break-word}
pre{margin:0;background:var(--code);border-radius:6px;padding:8px 10px;white-space:pre-wrap;
word-break:break-word;font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
max-height:320px;overflow:auto}
pre.diff{max-height:none}
.diff .add{color:var(--good);display:block}.diff .del{color:var(--bad);display:block}
.diff .hunk{color:var(--accent);display:block}
details summary{cursor:pointer;color:var(--accent)}
.muted{color:var(--muted)}
footer{margin-top:40px;color:var(--muted);font-size:12px}
@media (max-width:700px){.case .cols{grid-template-columns:1fr}.grid2{grid-template-columns:1fr}}
"""

FILTER_JS = """(function(){
var q=document.getElementById('filter');if(!q){return;}
var items=document.querySelectorAll('.case');var count=document.getElementById('filter-count');
function apply(){var t=q.value.toLowerCase();var shown=0;
for(var i=0;i<items.length;i++){var ok=!t||items[i].textContent.toLowerCase().indexOf(t)>=0;
items[i].hidden=!ok;if(ok){shown++;}}
count.textContent=shown+' of '+items.length+' shown';}
q.addEventListener('input',apply);apply();})();"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _short_num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if value else "0"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value:.1%}"


def _clip(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return esc(text)
    return esc(text[:MAX_TEXT]) + f'<span class="muted"> … ({len(text) - MAX_TEXT:,} more characters)</span>'


def fields(value: Any) -> str:
    """Inputs or expected outputs: one field as its text, several as 'name: value' lines."""
    if value is None:
        return '<span class="muted">–</span>'
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    elif isinstance(value, dict):
        text = "\n".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                         for k, v in value.items())
    else:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"<pre>{_clip(text)}</pre>"


def page(title: str, body: str, generated_at: str) -> str:
    digest = base64.b64encode(hashlib.sha256(FILTER_JS.encode()).digest()).decode()
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<meta name="referrer" content="no-referrer">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n"
            f'<footer>Generated by promptlab at {esc(generated_at)}. This file is self-contained: '
            f"it loads nothing from the network.</footer>\n</main><script>{FILTER_JS}</script></body></html>\n")


# ---- small SVG pieces ------------------------------------------------------

def _interval_svg(mean: float | None, low: float | None, high: float | None, width: int = 180) -> str:
    if mean is None:
        return ""
    lo_v, hi_v = min(0.0, low if low is not None else mean), max(1.0, high if high is not None else mean)
    span = (hi_v - lo_v) or 1.0

    def x(v: float) -> float:
        return 6 + (v - lo_v) / span * (width - 12)

    low = mean if low is None else low
    high = mean if high is None else high
    return (f'<svg width="{width}" height="16" viewBox="0 0 {width} 16" role="img" '
            f'aria-label="mean {mean:.3f}, 95% interval {low:.3f} to {high:.3f}">'
            f'<line x1="6" y1="8" x2="{width - 6}" y2="8" stroke="var(--line)" stroke-width="4" '
            f'stroke-linecap="round"/>'
            f'<line x1="{x(low):.1f}" y1="8" x2="{x(high):.1f}" y2="8" stroke="var(--accent)" '
            f'stroke-width="4" stroke-opacity=".45" stroke-linecap="round"/>'
            f'<circle cx="{x(mean):.1f}" cy="8" r="5" fill="var(--accent)"/></svg>')


def _histogram_svg(dist: dict, width: int = 260, height: int = 120) -> str:
    counts, edges = dist.get("counts") or [], dist.get("edges") or []
    if not counts:
        return '<p class="muted">no scored results</p>'
    top = max(counts) or 1
    plot_h, base_y, left = height - 34, height - 18, 4
    bar_w = (width - 2 * left) / len(counts)
    bars = []
    for i, c in enumerate(counts):
        h = c / top * plot_h
        bars.append(f'<rect x="{left + i * bar_w + 1:.1f}" y="{base_y - h:.1f}" width="{bar_w - 2:.1f}" '
                    f'height="{h:.1f}" rx="2" fill="var(--accent)"><title>{edges[i]:.2f}–{edges[i + 1]:.2f}: '
                    f'{c}</title></rect>')
        if c:
            bars.append(f'<text x="{left + (i + .5) * bar_w:.1f}" y="{base_y - h - 3:.1f}" '
                        f'text-anchor="middle">{c}</text>')
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="score histogram">{"".join(bars)}'
            f'<line x1="{left}" y1="{base_y}" x2="{width - left}" y2="{base_y}" stroke="var(--line)"/>'
            f'<text x="{left}" y="{height - 4}">{edges[0]:g}</text>'
            f'<text x="{width / 2:.0f}" y="{height - 4}" text-anchor="middle">{(edges[0] + edges[-1]) / 2:g}</text>'
            f'<text x="{width - left}" y="{height - 4}" text-anchor="end">{edges[-1]:g}</text></svg>')


def trajectory_svg(candidates: list[dict], base_val: float | None, width: int = 760, height: int = 280) -> str:
    points = [c for c in candidates if c["train"] is not None or c["val"] is not None]
    if not points:
        return '<p class="muted">no candidate scores recorded yet</p>'
    values = [v for c in points for v in (c["train"], c["val"]) if v is not None]
    if base_val is not None:
        values.append(base_val)
    lo, hi = min(0.0, min(values)), max(1.0, max(values))
    left, right, top, bottom = 40, 16, 14, 34
    n = len(points)

    def x(i: int) -> float:
        return left + (i / (n - 1) if n > 1 else 0.5) * (width - left - right)

    def y(v: float) -> float:
        return top + (1 - (v - lo) / ((hi - lo) or 1)) * (height - top - bottom)

    out = [f'<svg width="100%" viewBox="0 0 {width} {height}" role="img" aria-label="score of every candidate">']
    for t in range(5):
        v = lo + (hi - lo) * t / 4
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{width - right}" y2="{y(v):.1f}" stroke="var(--line)"/>'
                   f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    if base_val is not None:
        out.append(f'<line x1="{left}" y1="{y(base_val):.1f}" x2="{width - right}" y2="{y(base_val):.1f}" '
                   f'stroke="var(--muted)" stroke-dasharray="5 4"/><text x="{width - right}" '
                   f'y="{y(base_val) - 4:.1f}" text-anchor="end">base val {base_val:.3f}</text>')
    for split, color in (("train", "var(--train)"), ("val", "var(--val)")):
        pts = [(x(i), y(c[split])) for i, c in enumerate(points) if c[split] is not None]
        if len(pts) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2" '
                       f'stroke-opacity=".55"/>')
        for i, c in enumerate(points):
            if c[split] is None:
                continue
            ring = ' stroke="var(--fg)" stroke-width="2"' if c["is_winner"] else ""
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(c[split]):.1f}" r="{6 if c["is_winner"] else 4}" '
                       f'fill="{color}"{ring}><title>{esc(c["ref"] or "candidate " + str(c["index"]))} '
                       f'{split} {c[split]:.3f}</title></circle>')
    for i, c in enumerate(points):
        if n <= 30 or i % max(1, n // 15) == 0:
            out.append(f'<text x="{x(i):.1f}" y="{height - bottom + 16}" text-anchor="middle">{i}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" text-anchor="middle">candidate</text>')
    out.append("</svg>")
    legend = ('<p class="muted" style="margin:4px 0 0">'
              '<span class="bar" style="width:14px;background:var(--train)"></span> train &nbsp; '
              '<span class="bar" style="width:14px;background:var(--val)"></span> val &nbsp; '
              'ringed: the winner</p>')
    return "".join(out) + legend


def diff_html(diff: str) -> str:
    if not diff:
        return '<p class="muted">no difference in the prompt text</p>'
    lines = []
    for line in diff.splitlines():
        cls = ("hunk" if line.startswith("@@") else "add" if line.startswith("+") and not line.startswith("+++")
               else "del" if line.startswith("-") and not line.startswith("---") else "")
        lines.append(f'<span class="{cls}">{esc(line)}</span>' if cls else esc(line) + "\n")
    return f'<pre class="diff">{"".join(lines)}</pre>'


# ---- run -------------------------------------------------------------------

def _cards(facts: dict) -> str:
    run, cards = facts["run"], []
    for name, m in facts["metrics"].items():
        cards.append(f'<div class="card"><div class="k">{esc(name)}</div><div class="v">{_num(m.get("mean"))}</div>'
                     f'<div class="ci">95% CI [{_num(m.get("ci_low"))}, {_num(m.get("ci_high"))}] · n={m.get("n", 0)}'
                     f'</div>{_interval_svg(m.get("mean"), m.get("ci_low"), m.get("ci_high"))}</div>')
    counts = facts["counts"]
    if base := run.get("constant_baseline"):  # what learning nothing would score here
        cards.append(f'<div class="card"><div class="k">constant baseline</div><div class="v">'
                     f'{_num(base["score"])}</div><div class="ci">always {esc(base["field"])}='
                     f'{esc(base["label"])} · n={base["n"]}</div></div>')
    cards.append(f'<div class="card"><div class="k">pass rate</div><div class="v">{_pct(run.get("pass_rate"))}</div>'
                 f'<div class="ci">{counts["passed"]} passed · {counts["failed"]} failed · '
                 f'{counts["errors"]} errors</div></div>')
    tokens, lat = run.get("tokens") or {}, run.get("latency_ms") or {}
    cost = "n/a" if run.get("cost") is None else f"${run['cost']:.4f}"
    cards.append(f'<div class="card"><div class="k">cost &amp; speed</div><div class="v">{esc(cost)}</div>'
                 f'<div class="ci">{tokens.get("prompt", 0):,} + {tokens.get("completion", 0):,} tokens · '
                 f'p50 {_num(lat.get("p50"), 0)} ms · p95 {_num(lat.get("p95"), 0)} ms · '
                 f'{run.get("cached") or 0} cached</div></div>')
    return f'<section class="cards">{"".join(cards)}</section>'


def _labels(facts: dict) -> str:
    out = []
    for name, m in facts["metrics"].items():
        if m.get("per_field"):  # field_f1: structured outputs, field by field
            rows = "".join(
                f'<tr><td>{esc(field)}</td>'
                + "".join(f'<td class="n">{_num(v.get(k))} <span class="bar" style="width:{(v.get(k) or 0) * 60:.0f}px">'
                          f"</span></td>" for k in ("precision", "recall", "f1"))
                + f'<td class="n">{esc(v.get("support", 0))}</td></tr>' for field, v in m["per_field"].items())
            out.append(f'<h2>{esc(name)}: per field</h2><table><thead><tr><th>field</th><th class="n">precision</th>'
                       f'<th class="n">recall</th><th class="n">F1</th><th class="n">support</th></tr></thead>'
                       f'<tbody>{rows}</tbody></table><p class="muted">micro F1 {_num(m.get("micro_f1"))} · '
                       f'macro F1 {_num(m.get("macro_f1"))}</p>')
        per_label, labels, matrix = m.get("per_label"), m.get("labels"), m.get("confusion")
        if not per_label:
            continue
        rows = "".join(
            f'<tr><td>{esc(label)}</td>'
            + "".join(f'<td class="n">{_num(v.get(k))} <span class="bar" style="width:{(v.get(k) or 0) * 60:.0f}px">'
                      f"</span></td>" for k in ("precision", "recall", "f1"))
            + f'<td class="n">{v.get("support", 0)}</td></tr>' for label, v in per_label.items())
        table = (f'<table><thead><tr><th>label</th><th class="n">precision</th><th class="n">recall</th>'
                 f'<th class="n">F1</th><th class="n">support</th></tr></thead><tbody>{rows}</tbody></table>'
                 f'<p class="muted">macro F1 {_num(m.get("macro_f1"))} · accuracy {_num(m.get("accuracy"))}</p>')
        heat = ""
        if labels and matrix:
            head = "".join(f"<th>{esc(label)}</th>" for label in labels)
            body = []
            for label, row in zip(labels, matrix):
                total = sum(row) or 1
                cells = []
                for j, count in enumerate(row):
                    share = count / total
                    hue = "47,111,222" if label == labels[j] else "214,69,69"
                    ink = "#fff" if share > .55 else "inherit"
                    cells.append(f'<td style="background:rgba({hue},{share:.2f});color:{ink}" '
                                 f'title="expected {esc(label)}, predicted {esc(labels[j])}: {count}">'
                                 f'{count}<small>{share:.0%}</small></td>')
                body.append(f'<tr><th class="rowh">{esc(label)}</th>{"".join(cells)}</tr>')
            heat = (f'<table class="heat"><thead><tr><th class="rowh">expected ↓ / predicted →</th>{head}</tr>'
                    f'</thead><tbody>{"".join(body)}</tbody></table>'
                    f'<p class="muted">cells shaded by share of the expected label (row)</p>')
        out.append(f'<h2>{esc(name)}: per label</h2><div class="grid2"><div>{table}</div><div>{heat}</div></div>')
    return "".join(out)


def _distributions(facts: dict) -> str:
    charts = "".join(f'<div class="chart"><div class="t">{esc(name)} · {d.get("n", 0)} scored</div>'
                     f"{_histogram_svg(d)}</div>" for name, d in facts["distributions"].items())
    return f'<h2>Score distribution</h2><div class="charts">{charts}</div>' if charts else ""


def _short(value: Any, width: int = 90) -> str:
    if isinstance(value, dict):
        value = " · ".join(str(v) for v in value.values())
    text = "" if value is None else str(value)
    return esc(text if len(text) <= width else text[:width - 1] + "…")


def _top_tables(facts: dict) -> str:
    slow = "".join(f'<tr><td>{r["case_id"]}</td><td>{_short(r["inputs"])}</td>'
                   f'<td class="n">{_num(r["latency_ms"], 0)}</td></tr>' for r in facts["slowest"])
    by_cost = facts["costliest_by"] == "cost"
    costly = "".join(
        f'<tr><td>{r["case_id"]}</td><td>{_short(r["inputs"])}</td><td class="n">'
        + (f'${r["cost"]:.5f}' if by_cost else f'{r["prompt_tokens"] + r["completion_tokens"]:,}')
        + "</td></tr>" for r in facts["costliest"])
    return (f'<div class="grid2"><div><h2>Slowest cases</h2><table><thead><tr><th>case</th><th>input</th>'
            f'<th class="n">ms</th></tr></thead><tbody>{slow}</tbody></table></div>'
            f'<div><h2>Most expensive cases</h2><table><thead><tr><th>case</th><th>input</th>'
            f'<th class="n">{"cost" if by_cost else "tokens"}</th></tr></thead><tbody>{costly}</tbody></table>'
            f"</div></div>")


def case_article(r: dict, link: str = "") -> str:
    """One result: its inputs, expected and actual output, scores and error (the report lists the
    failed ones, the viewer every one, each with a `link` to the messages sent; `data-status` is
    what the viewer filters on)."""
    status = "error" if r["error_kind"] else "pass" if r["passed"] else "fail"
    scores = " · ".join(f"{esc(k)} {_num(v)}" for k, v in r["scores"].items())
    message = r["error"] or r["parse_error"]
    pill = {"error": f'<span class="pill err">{esc(r["error_kind"])}</span>',
            "pass": '<span class="pill ok">pass</span>', "fail": '<span class="pill fail">fail</span>'}[status]
    tags = f' · tags {esc(", ".join(r["tags"]))}' if r["tags"] else ""
    repeat = f' · repeat {r["repeat"]}' if r["repeat"] else ""
    return (f'<article class="case {status}" data-status="{status}"><div class="meta">{pill} case {r["case_id"]}'
            f'{repeat}{tags} · {scores}'
            + (f' · <a href="{esc(link)}">messages sent</a>' if link else "") + '</div>'
            f'<div class="cols"><div><b>input</b>{fields(r["inputs"])}</div>'
            f'<div><b>expected</b>{fields(r["expected"])}</div>'
            f'<div><b>output</b>{fields(r["output"])}</div></div>'
            + (f'<div class="msg">{esc(message)}</div>' if message else "") + "</article>")


def _failed(facts: dict) -> str:
    failed = facts["failed"]
    if not failed:
        return '<h2>Failed cases</h2><p>Every case passed.</p>'
    items = "".join(case_article(r) for r in failed[:MAX_FAILED])
    more = (f'<p class="muted">{len(failed) - MAX_FAILED:,} more failed cases are in the JSON report.</p>'
            if len(failed) > MAX_FAILED else "")
    return (f'<h2>Failed cases ({len(failed)})</h2><div class="filter">'
            f'<input id="filter" type="search" placeholder="Filter by any text: input, expected, output, error…" '
            f'aria-label="filter failed cases"><span id="filter-count"></span></div>{items}{more}')


def _gates(gates: list[dict] | None) -> str:
    if not gates:
        return ""
    ok, bad = '<span class="pill ok">pass</span>', '<span class="pill fail">FAIL</span>'
    rows = "".join(f'<tr><td>{esc(g["name"])}</td><td>{ok if g["passed"] else bad}</td>'
                   f'<td>{esc(g["message"])}</td></tr>' for g in gates)
    return (f'<h2>Quality gates</h2><table><thead><tr><th>gate</th><th>result</th><th>detail</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def run_header(facts: dict) -> str:
    run, prompt = facts["run"], facts["prompt"]
    status = run["status"]
    pill = "ok" if status == "completed" else "fail"
    return (f'<header><h1>{esc(run["name"])}</h1><p class="sub"><span class="pill {pill}">{esc(status)}</span> '
            f'project <b>{esc(facts["project"])}</b> · prompt <b>{esc(prompt["ref"])}</b> · model '
            f'<b>{esc(run["model"])}</b> ({esc(run.get("model_name"))}) · {run["n"]} results over '
            f'{run.get("cases", 0)} cases × {run.get("repeat") or 1} · {esc(run.get("created_at"))}</p></header>')


def run_overview(facts: dict) -> str:
    """Errors and warnings, score cards, gates, per-label tables, distributions, slowest and costliest."""
    run = facts["run"]
    error = f'<p class="case error msg">{esc(run["error"])}</p>' if run.get("error") else ""
    error += "".join(f'<p class="case error msg">warning: {esc(w)}</p>' for w in run.get("warnings") or [])
    return (error + _cards(facts) + _gates(facts.get("gates")) + _labels(facts) + _distributions(facts)
            + _top_tables(facts))


def prompt_block(prompt: dict) -> str:
    return (f'<h2>Prompt {esc(prompt["ref"])}</h2><details><summary>show the prompt text</summary>'
            f'<pre>{esc(prompt["text"])}</pre></details>')


def render_run(facts: dict) -> str:
    body = run_header(facts) + run_overview(facts) + _failed(facts) + prompt_block(facts["prompt"])
    return page(f"promptlab · {facts['run']['name']}", body, facts["generated_at"])


# ---- optimization ----------------------------------------------------------

def optimization_chart(facts: dict) -> str:
    """Every candidate's train and val score, in order (the viewer redraws it as an optimization runs)."""
    return trajectory_svg(facts["candidates"], facts["scores"]["base"]["val"])


def optimization_body(facts: dict) -> str:
    opt, base, winner = facts["optimization"], facts["base"], facts["winner"]
    scores = facts["scores"]
    head = (f'<header><h1>{esc(opt["name"])}</h1><p class="sub"><span class="pill '
            f'{"ok" if opt["status"] == "completed" else "err"}">{esc(opt["status"])}</span> project '
            f'<b>{esc(facts["project"])}</b> · strategy <b>{esc(opt["strategy"])}</b> · base '
            f'<b>{esc(base["ref"] if base else "–")}</b> · winner <b>{esc(winner["ref"] if winner else "–")}</b> · '
            f'{len(facts["candidates"])} candidates · {esc(opt.get("created_at"))}</p></header>')
    cards = []
    for split in ("train", "val", "test"):
        b, w = scores["base"][split], scores["winner"][split]
        if b is None and w is None:
            continue
        delta = f"{w - b:+.3f} vs base" if b is not None and w is not None else ""
        cards.append(f'<div class="card"><div class="k">{split} score</div><div class="v">{_num(w)}</div>'
                     f'<div class="ci">winner · base {_num(b)} · {delta}</div></div>')
    summary = facts.get("summary") or {}
    if summary:
        splits = summary.get("splits") if isinstance(summary.get("splits"), dict) else {}
        lines = [f"stopped: {summary['stopped']}" if summary.get("stopped") else "",
                 f"{summary['iterations']} iterations" if summary.get("iterations") is not None else "",
                 f"model {summary['model']}" if summary.get("model") else "",
                 f"proposer {summary['proposer']}" if summary.get("proposer") else "",
                 f"objective {summary['objective']}" if summary.get("objective") else "",
                 " · ".join(f"{k} {v}" for k, v in splits.items() if k in ("train", "val", "test"))
                 + (" cases" if splits else "")]
        cards.append('<div class="card"><div class="k">search</div><div class="ci">'
                     + "<br>".join(esc(line) for line in lines if line) + "</div></div>")
    for key in ("budget", "spent"):
        value = opt.get(key)
        if isinstance(value, dict) and any(v is not None for v in value.values()):
            lines = "<br>".join(f"{esc(k.replace('_', ' '))} {esc(_short_num(v))}" for k, v in value.items()
                                if v is not None)
            cards.append(f'<div class="card"><div class="k">{key}</div><div class="ci">{lines}</div></div>')
        elif value:
            cards.append(f'<div class="card"><div class="k">{key}</div><pre>{esc(json.dumps(value, ensure_ascii=False))}'
                         f"</pre></div>")
    won, based = ' <span class="pill ok">winner</span>', ' <span class="pill err">base</span>'
    rows = "".join(
        f'<tr><td class="n">{c["index"]}</td><td>{esc(c["ref"] or "–")}'
        f'{won if c["is_winner"] else ""}{based if c["is_base"] else ""}</td>'
        f'<td class="n">{_num(c["train"])}</td><td class="n">{_num(c["val"])}</td>'
        f'<td class="n">{_num(c["test"])}</td><td>{_short(c["note"], 140)}</td></tr>' for c in facts["candidates"])
    table = (f'<table><thead><tr><th class="n">#</th><th>prompt</th><th class="n">train</th><th class="n">val</th>'
             f'<th class="n">test</th><th>note</th></tr></thead><tbody>{rows}</tbody></table>'
             if facts["candidates"] else '<p class="muted">no candidates recorded yet</p>')
    runs = "".join(f'<tr><td>{esc(r["name"])}</td><td>{esc(r["prompt"])}@{r["version"]}</td><td>{esc(r["status"])}</td>'
                   f'<td class="n">{r["n"]}</td><td>{esc(" · ".join(f"{k} {_num(v)}" for k, v in r["scores"].items()))}'
                   f"</td></tr>" for r in facts["runs"])
    runs_block = (f'<h2>Runs ({len(facts["runs"])})</h2><details><summary>show the runs this optimization made'
                  f'</summary><table><thead><tr><th>run</th><th>prompt</th><th>status</th><th class="n">n</th>'
                  f"<th>scores</th></tr></thead><tbody>{runs}</tbody></table></details>" if facts["runs"] else "")
    events = "".join(
        f'<tr><td class="n">{esc(e.get("iteration", ""))}</td><td>{esc(e.get("event", ""))}</td><td>'
        + esc(", ".join(f"{k}={v}" for k, v in e.items() if k not in ("event", "iteration"))[:400])
        + "</td></tr>" for e in facts.get("events") or [])
    events_block = (f'<h2>Log ({len(facts["events"])} event{"" if len(facts["events"]) == 1 else "s"})</h2><details><summary>show the events</summary>'
                    f'<table><thead><tr><th class="n">iteration</th><th>event</th><th>detail</th></tr></thead>'
                    f"<tbody>{events}</tbody></table></details>" if events else "")
    config = (f'<h2>Configuration</h2><pre>{esc(json.dumps(opt.get("config"), indent=2, ensure_ascii=False))}</pre>'
              if opt.get("config") else "")
    return (head + (f'<section class="cards">{"".join(cards)}</section>' if cards else "")
            + '<h2>Score of every candidate</h2><div class="chart" id="trajectory">'
            + optimization_chart(facts) + "</div>"
            + f"<h2>Candidates</h2>{table}"
            + f'<h2>Winner vs base</h2>{diff_html(facts["diff"])}'
            + (f'<details><summary>show the winner\'s full text</summary><pre>{esc(winner["text"])}</pre></details>'
               if winner else "")
            + runs_block + events_block + config)


def render_optimization(facts: dict) -> str:
    return page(f"promptlab · {facts['optimization']['name']}", optimization_body(facts), facts["generated_at"])


def render(facts: dict) -> str:
    return render_optimization(facts) if facts["kind"] == "optimization" else render_run(facts)
