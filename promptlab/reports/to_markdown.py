"""Facts → a short Markdown summary for a CI step summary or a pull-request comment.

Text from models and cases is escaped so that it cannot format the page, open
an HTML block, embed a remote image or mention anyone, nor (in a terminal) run
escape sequences.
"""

from __future__ import annotations

import json
import re
from typing import Any

from promptlab.terminal import printable

MAX_FAILED = 10
_SPECIAL = re.compile(r"([\\`*_\[\]()!#~|<>])")
_MENTION = re.compile(r"(^|[^\w])@")


def text(value: Any, width: int = 80) -> str:
    """One line of inert Markdown (for table cells and inline text)."""
    if isinstance(value, dict):
        value = " · ".join(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in value.values())
    raw = " ".join(printable(value).split())
    if len(raw) > width:
        raw = raw[:width - 1] + "…"
    raw = raw.replace("&", "&amp;")
    return _MENTION.sub("\\1@\u200b", _SPECIAL.sub(r"\\\1", raw))


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _fence(body: str, lang: str = "") -> str:
    body = printable(body)
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{body.rstrip()}\n{ticks}"


def _gates(gates: list[dict]) -> list[str]:
    if not gates:
        return []
    failing = [g for g in gates if not g["passed"]]
    head = (f"**Gates: {len(failing)} of {len(gates)} failed**" if failing
            else f"**Gates: all {len(gates)} passed**")
    return [head, ""] + [f"- {'✅' if g['passed'] else '❌'} {text(g['name'], 120)}: {text(g['message'], 160)}"
                         for g in gates] + [""]


def _run(facts: dict) -> list[str]:
    run, prompt, counts = facts["run"], facts["prompt"], facts["counts"]
    trouble = run["status"] != "completed" or counts["errors"]
    lines = [f"### {'⚠️ ' if trouble else ''}promptlab run {text(run['name'], 120)}", "",
             f"prompt **{text(prompt['ref'])}** · model **{text(run['model'])}** · {text(run['status'])} · "
             f"{counts['results']} results: {counts['passed']} passed, {counts['failed']} failed, "
             f"{counts['errors']} errors", ""]
    if facts["metrics"]:
        lines += ["| metric | mean | 95% CI | pass rate |", "|---|---:|---|---:|"]
        for name, m in facts["metrics"].items():
            rate = "–" if m.get("pass_rate") is None else f"{m['pass_rate']:.1%}"
            lines.append(f"| {text(name)} | {_num(m.get('mean'))} | [{_num(m.get('ci_low'))}, "
                         f"{_num(m.get('ci_high'))}] | {rate} |")
        lines.append("")
    if base := run.get("constant_baseline"):
        lines += [f"constant baseline: {_num(base['score'])} (always {text(base['field'])}="
                  f"{text(base['label'])} on these {base['n']} cases)", ""]
    for warning in run.get("warnings") or []:
        lines += [f"⚠️ {text(warning, 200)}", ""]
    for note in facts.get("notes") or []:
        lines += [text(note, 400), ""]
    for name, m in facts["metrics"].items():
        if m.get("per_label"):
            worst = sorted(m["per_label"].items(), key=lambda kv: kv[1].get("f1") or 0)[:5]
            lines.append(f"{text(name)}: macro F1 {_num(m.get('macro_f1'))}; lowest F1: "
                         + ", ".join(f"{text(k, 30)} {_num(v.get('f1'), 2)}" for k, v in worst))
            lines.append("")
    failed = facts["failed"]
    if failed:
        shown = failed[:MAX_FAILED]
        lines += [f"<details><summary>{len(failed)} failed case(s)"
                  f"{f', first {len(shown)}' if len(failed) > len(shown) else ''}</summary>", "",
                  "| case | input | expected | output |", "|---:|---|---|---|"]
        for r in shown:
            output = f"{r['error_kind']}: {r['error'] or ''}" if r["error_kind"] else r["output"]
            lines.append(f"| {r['case_id']} | {text(r['inputs'], 60)} | {text(r['expected'], 30)} | "
                         f"{text(output, 60)} |")
        lines += ["", "</details>", ""]
    return lines


def _optimization(facts: dict) -> list[str]:
    opt, base, winner, scores = facts["optimization"], facts["base"], facts["winner"], facts["scores"]
    lines = [f"### promptlab optimization {text(opt['name'], 120)}", "",
             f"strategy **{text(opt['strategy'])}** · {text(opt['status'])} · {len(facts['candidates'])} candidates · "
             f"base **{text(base['ref'] if base else '–')}** → winner **{text(winner['ref'] if winner else '–')}**", "",
             "| split | base | winner | delta |", "|---|---:|---:|---:|"]
    summary = facts.get("summary") or {}
    if summary.get("stopped") or summary.get("model"):
        lines[4:4] = [f"stopped: {text(summary.get('stopped') or '–')} after {summary.get('iterations', '–')} "
                      f"iterations · model {text(summary.get('model') or '–')} · proposer "
                      f"{text(summary.get('proposer') or '–')}", ""]
    for split in ("train", "val", "test"):
        b, w = scores["base"][split], scores["winner"][split]
        if b is None and w is None:
            continue
        delta = f"{w - b:+.3f}" if b is not None and w is not None else "–"
        lines.append(f"| {split} | {_num(b)} | {_num(w)} | {delta} |")
    lines.append("")
    if facts["diff"]:
        lines += ["<details><summary>winner vs base</summary>", "", _fence(facts["diff"], "diff"), "",
                  "</details>", ""]
    return lines


def render(facts: dict | list[dict], gates: list[dict] | None = None) -> str:
    items = facts if isinstance(facts, list) else [facts]
    if gates is None:
        gates = [g for f in items for g in (f.get("gates") or [])]
    lines = _gates(gates)
    for f in items:
        lines += _optimization(f) if f["kind"] == "optimization" else _run(f)
    return "\n".join(lines).rstrip() + "\n"
