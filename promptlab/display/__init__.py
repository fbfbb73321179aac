"""All rich code: the tables a command prints (the live progress displays: `display.progress`)."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from promptlab.reports.notes import by_role_text, cost_text, p_text, run_notes
from promptlab.terminal import printable

# Piped output (CI logs, files) gets room for the score table instead of rich's 80 columns.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 132
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def safe(value: Any, style: str = "") -> Text:
    """User or model text for a table or line: never read as markup, terminal escapes dropped."""
    return Text(printable(value), style=style)


def print_runs(runs: list[dict], console: Console = out) -> None:
    """The score table: one row per run, one column per metric (mean [95% CI])."""
    metrics = list(dict.fromkeys(m for r in runs for m in r["scores"]))
    table = Table(title="scores (mean [95% CI])", title_justify="left")
    for col in ("prompt × model", "n", "err", *metrics, "pass", "tok/call", "calls/s", "cost"):
        table.add_column(col, justify="left" if col == "prompt × model" else "right")
    for r in runs:
        cells = []
        for m in metrics:
            low, high = r["intervals"].get(m, [None, None])
            mean = r["scores"].get(m)
            cells.append("-" if mean is None else f"{mean:.3f} [{_num(low, 2)}, {_num(high, 2)}]")
        status = "" if r["status"] == "completed" else f" ({r['status']})"
        table.add_row(safe(f"{r['prompt']}@{r['version']} × {r['model']}{status}"), str(r["n"]),
                      f"[red]{r['errors']}[/]" if r["errors"] else "0", *cells, _num(r.get("pass_rate")),
                      str((r.get("tokens") or {}).get("per_call", "-")), _num(r.get("calls_per_s"), 1),
                      cost_text(r.get("cost")))
    console.print(table)
    for r in runs:
        latency = r.get("latency_ms") or {}
        mode = f" ({r['mode']} mode)" if r.get("mode") else ""
        console.print(safe(f"  {r['name']}: {r.get('cached') or 0} cached, {r.get('provider_calls') or 0} "
                           f"provider calls{mode}, latency p50 {_num(latency.get('p50'), 0)} ms / "
                           f"p95 {_num(latency.get('p95'), 0)} ms"), highlight=False)
        for line in run_notes(r):  # one line each, however long: grep finds it in a CI log
            console.print(safe(f"  {r['name']}: {line}"), highlight=False, soft_wrap=True)
        if r.get("decoding") is not None:  # runs summarised before it was reported have none
            console.print(safe(f"  {r['name']}: {decoding_text(r['decoding'])}, "
                               f"{r.get('parse_failures') or 0} parse failures"), highlight=False)
        if base := r.get("constant_baseline"):
            console.print(safe(f"  {r['name']}: constant baseline {base['score']:.3f} (always answering "
                               f"{base['field']}={base['label']!r} on these {base['n']} cases)"), highlight=False)
        for warning in r.get("warnings") or []:
            err.print(safe(f"warning: {r['name']}: {warning}", style="yellow"), highlight=False)
        if r.get("error"):
            err.print(safe(f"{r['name']}: {r['error']}", "red"))


def decoding_text(decoding: dict) -> str:
    """How a run's replies were decoded, in words."""
    if not decoding.get("structured"):
        return "decoding unconstrained"
    if decoding.get("constrained"):
        return f"decoding constrained to the signature ({decoding['mechanism']})"
    return f"decoding unconstrained: {decoding.get('note') or 'the model cannot constrain it'}"


def print_gates(gates: list, console: Console = out) -> None:
    if not gates:
        return
    table = Table(title="gates", title_justify="left")
    for col in ("gate", "result", "detail"):
        table.add_column(col)
    for g in gates:
        table.add_row(safe(g.name), "[green]pass[/]" if g.passed else "[red]FAIL[/]", safe(g.message))
    console.print(table)


def print_table(title: str, columns: list[str], rows: list[list[Any]], console: Console = out) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(safe(v) for v in row))
    console.print(table)


# ---- runs show / runs compare ---------------------------------------------

def _one_line(value: Any, width: int) -> Text:
    import json

    from promptlab.prompting.images import shorten

    value = shorten(value)  # an image input as its type, size and digest, not its base64
    if isinstance(value, dict):
        value = " · ".join(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in value.values())
    text = " ".join(printable(value).split())
    return Text(text if len(text) <= width else text[:width - 1] + "…")


def print_diff(diff: str, console: Console = out) -> None:
    if not diff:
        console.print("[dim](the two prompts have the same text)[/]")
        return
    for line in diff.splitlines():
        style = ("cyan" if line.startswith("@@") else "bold" if line.startswith(("+++", "---"))
                 else "green" if line.startswith("+") else "red" if line.startswith("-") else "")
        console.print(safe(line, style), soft_wrap=True)


def print_run_facts(facts: dict, failures: int = 10, console: Console = out) -> None:
    """`runs show`: scores, per-label P/R/F1 and confusion matrices, slowest and failed cases."""
    print_runs([facts["run"]], console)
    for name, m in facts["metrics"].items():
        if m.get("per_field"):  # field_f1: structured outputs, field by field
            table = Table(title=f"{name}: per field (micro F1 {_num(m.get('micro_f1'))}, "
                                f"macro F1 {_num(m.get('macro_f1'))})", title_justify="left")
            for col in ("field", "precision", "recall", "F1", "support"):
                table.add_column(col, justify="left" if col == "field" else "right")
            for field_name, v in m["per_field"].items():
                table.add_row(safe(field_name), _num(v.get("precision")), _num(v.get("recall")),
                              _num(v.get("f1")), str(v.get("support", 0)))
            console.print(table)
        if not m.get("per_label"):
            continue
        table = Table(title=f"{name}: per label (macro F1 {_num(m.get('macro_f1'))})", title_justify="left")
        for col in ("label", "precision", "recall", "F1", "support"):
            table.add_column(col, justify="left" if col == "label" else "right")
        for label, v in m["per_label"].items():
            table.add_row(safe(label), _num(v.get("precision")), _num(v.get("recall")), _num(v.get("f1")),
                          str(v.get("support", 0)))
        console.print(table)
        labels, matrix = m.get("labels") or [], m.get("confusion") or []
        if labels and matrix:
            heat = Table(title=f"{name}: confusion (rows expected, columns predicted)", title_justify="left")
            heat.add_column("expected \\ predicted")
            for label in labels:
                heat.add_column(safe(label), justify="right")
            for label, row in zip(labels, matrix):
                total = sum(row) or 1
                cells = []
                for j, count in enumerate(row):
                    share = count / total
                    if not count:
                        cells.append(Text("0", style="dim"))
                    else:
                        color = "green" if labels[j] == label else "red"
                        cells.append(Text(str(count), style=f"bold {color}" if share >= .5 else color))
                heat.add_row(safe(label), *cells)
            console.print(heat)
    failed = facts["failed"]
    if failed:
        table = Table(title=f"failed cases ({len(failed)}{', first ' + str(failures) if len(failed) > failures else ''})",
                      title_justify="left")
        for col in ("case", "input", "expected", "output", "error"):
            table.add_column(col, overflow="fold")
        for r in failed[:failures]:
            error = f"{r['error_kind']}: {r['error']}" if r["error_kind"] else r["parse_error"]
            table.add_row(str(r["case_id"]) + (f"#{r['repeat']}" if r["repeat"] else ""),
                          _one_line(r["inputs"], 60), _one_line(r["expected"], 30), _one_line(r["output"], 50),
                          _one_line(error, 50))
        console.print(table)
    else:
        console.print("[green]no failed cases[/]")


def print_comparison(data: dict, show: int = 20, console: Console = out) -> None:
    """`runs compare`: per-metric deltas with intervals and p-values, McNemar, changed cases, diff."""
    a, b = data["a"], data["b"]
    a_line, b_line = (printable(f"{r['name']} ({r['prompt']}@{r['version']} on {r['model']})") for r in (a, b))
    console.print(Text.assemble(("A ", "bold"), a_line, ("\nB ", "bold"), b_line,
                                f"\n{data['pairs']} paired results (case × repeat)"))
    table = Table(title="B vs A", title_justify="left")
    for col in ("metric", "A", "B", "delta", "95% CI", "p"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, m in data["metrics"].items():
        significant = m["p_value"] < 0.05
        color = "" if not significant or m["delta"] == 0 else "green" if m["delta"] > 0 else "red"
        table.add_row(Text(name), _num(m["a_mean"]), _num(m["b_mean"]),
                      Text(f"{m['delta']:+.3f}", style=color),
                      f"[{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]",
                      Text(p_text(m["p_value"]), style="bold" if significant else ""))
    passes = data["pass"]
    mc = passes["mcnemar"]
    table.add_row("pass rate", _num(passes["a_rate"]), _num(passes["b_rate"]),
                  f"{passes['b_rate'] - passes['a_rate']:+.3f}", f"McNemar ({mc['method']})",
                  Text(p_text(mc["p_value"]), style="bold" if mc["p_value"] < 0.05 else ""))
    console.print(table)
    console.print(f"{mc['b10']} regressed (passed in A, failed in B), {mc['b01']} fixed "
                  f"(failed in A, passed in B); p < 0.05 is marked bold")
    for title, key, style in (("regressed", "regressed", "red"), ("fixed", "fixed", "green")):
        cases = data[key]
        if not cases:
            continue
        more = f", first {show}" if len(cases) > show else ""
        t = Table(title=f"{title} ({len(cases)}{more})", title_justify="left", title_style=style)
        for col in ("case", "input", "expected", "A output", "B output"):
            t.add_column(col, overflow="fold")
        for c in cases[:show]:
            b_out = c["b"]["output"] if not c["b"]["error_kind"] else f"{c['b']['error_kind']}: {c['b']['error']}"
            a_out = c["a"]["output"] if not c["a"]["error_kind"] else f"{c['a']['error_kind']}: {c['a']['error']}"
            t.add_row(str(c["case_id"]), _one_line(c["inputs"], 50), _one_line(c["expected"], 24),
                      _one_line(a_out, 40), _one_line(b_out, 40))
        console.print(t)
    console.print(Text("prompt diff (A → B)", style="bold"))
    print_diff(data["prompt_diff"], console)
    for note in data["notes"]:
        err.print(safe(f"note: {note}", "yellow"))


# ---- optimize ---------------------------------------------------------------

def score_text(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _val(side: dict) -> str:
    """The val score; '~x (n)' when only n val cases were scored (a minibatch estimate)."""
    if side.get("val") is not None:
        return score_text(side["val"])
    if side.get("val_estimate") is not None:
        n = side.get("n_val")
        return f"~{side['val_estimate']:.3f}" + (f" ({n})" if n else "")
    return "-"


def of_budget(used: int, budget: int | None) -> str:
    return f"{used:,}" if budget is None else f"{used:,}/{budget:,}"


def _claim(p_value: float | None, significant: bool | None) -> str:
    """A lift's paired-bootstrap p-value, and whether it counts (reports from before it was stored say none)."""
    if p_value is None:
        return ""
    if significant is None or significant:
        return f", p = {p_value:.3g}"
    return f", p = {p_value:.3g}: not significant, no lift claimed"


def print_optimization(report: dict, console: Console = out, top: int = 8) -> None:
    """Base vs winner on val, train and held-out test; the best candidates; budget; the diff."""
    base, win = report["base"], report["winner"]
    table = Table(title=f"optimize {report['name']} ({report['strategy']}, objective "
                        f"{report['objective']}, model {report['model']})", title_justify="left")
    for col in ("", "prompt", "val", "train", "test", "demos", "tokens"):
        table.add_column(col, justify="left" if col in ("", "prompt") else "right")
    sides = [("base", base)] + ([("naive k-shot", report["naive"])] if report.get("naive") else [])
    for label, side in sides + [("winner", win)]:
        table.add_row(label, safe(side["ref"]), _val(side), score_text(side["train"]),
                      score_text(side["test"]), str(side["demos"]), str(side["tokens"]))
    constant = report.get("constant_baseline")
    if constant:
        table.add_row("constant", safe(f"always {constant['label']}"), "", "", score_text(constant["score"]), "", "")
    lift = report["lift"]
    table.add_row("lift", "", f"{lift['val']:+.3f}" if lift["val"] is not None else "-", "",
                  f"{lift['test']:+.3f}" if lift["test"] is not None else "-", "", "")
    console.print(table)
    names = {"constant": "the best constant answer", "naive": "naive k-shot", "base": "the base"}
    if lift.get("test") is not None and "over" in lift:
        console.print(f"test lift {lift['test']:+.3f} over {names[lift['over']]} ({lift['over_score']:.3f})"
                      f"{_claim(lift.get('over_p_value'), lift.get('over_significant'))}; winner vs base "
                      f"{lift['test_over_base']:+.3f}, p = {lift['p_value']:.3g} (paired bootstrap, "
                      f"95% CI {lift['ci_low']:+.3f} to {lift['ci_high']:+.3f})", highlight=False)
    strongest = lift.get("best_baseline")
    if strongest and strongest["name"] == "naive" and lift.get("over") != "naive":  # reports made before it gated
        console.print(f"test lift {strongest['lift']:+.3f} over naive k-shot ({strongest['score']:.3f})"
                      f"{_claim(strongest['p_value'], strongest.get('significant'))}", highlight=False)
    if report.get("improved") is False:
        console.print(safe(f"no improvement found: no candidate beat the base's val score by more than "
                           f"min_gain; {base['ref']} is kept and no version was added", "yellow"))
    if report.get("collapse"):
        err.print(safe(f"warning: winner {win['ref']} on test: {report['collapse']['warning']}", "yellow"))
    ranked = sorted(report["candidates"], key=lambda c: (c["val"] is not None, c["val"] if c["val"] is not None
                                                         else (c["val_estimate"] or 0.0),
                                                         c["train"] if c["train"] is not None else -1,
                                                         -c["tokens"]), reverse=True)[:top]
    cands = Table(title=f"best of {len(report['candidates'])} candidates", title_justify="left")
    for col in ("candidate", "edit", "iter", "val", "train", "tokens"):
        cands.add_column(col, justify="left" if col in ("candidate", "edit") else "right")
    for c in ranked:
        cands.add_row(safe(c["ref"]), c["operator"], str(c["iteration"]), _val(c), score_text(c["train"]),
                      str(c["tokens"]))
    console.print(cands)
    if any(c["val"] is None and c["val_estimate"] is not None for c in ranked):
        console.print("[dim]~: estimated on the val cases scored so far (minibatches); the winner is "
                      "picked among fully scored candidates[/]")
    spent, budget = report["spent"], report["budget"]
    projected = report.get("projected_calls") or {}
    console.print(f"splits: train {report['splits']['train']}, val {report['splits']['val']}, test "
                  f"{report['splits']['test']} ({report['splits']['method']}) · calls: search "
                  f"{of_budget(spent['calls'], projected.get('search'))}, "
                  f"test {of_budget(spent['test_calls'], projected.get('test'))}, sent to the provider "
                  f"{of_budget(spent['provider_calls'], budget.get('calls'))} (retries included) · "
                  f"tokens {of_budget(spent['tokens'], budget.get('tokens'))} · stopped: {report['stopped']}",
                  highlight=False)
    if spent.get("by_role"):  # reports made before roles were counted have none
        console.print(by_role_text(spent["by_role"]), highlight=False, soft_wrap=True)
    if report.get("improved") is not False and report["diff"]:  # no diff of the base with itself
        console.print(safe(f"prompt diff ({base['ref']} → {win['ref']})", "bold"))
        print_diff(report["diff"], console)
