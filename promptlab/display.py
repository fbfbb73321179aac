"""All rich code: live progress while a run goes, tables after."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from promptlab.runner import ItemResult

out = Console()
err = Console(stderr=True)


@dataclass
class Tally:
    label: str
    total: int
    done: int = 0
    passed: int = 0
    errors: int = 0
    score_sum: float = 0.0
    scored: int = 0
    tokens: int = 0
    cost: float = 0.0
    cost_known: bool = True
    cached: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def add(self, item: ItemResult) -> None:
        self.done += 1
        self.cached += item.cached
        self.tokens += item.prompt_tokens + item.completion_tokens
        if item.cost is None and not item.cached:
            self.cost_known = False
        self.cost += item.cost or 0.0
        if item.error_kind:
            self.errors += 1
            self.error_kinds[item.error_kind] = self.error_kinds.get(item.error_kind, 0) + 1
            return
        self.passed += item.passed
        if item.score is not None:
            self.score_sum += item.score
            self.scored += 1


class _Tallies:
    def __init__(self, runs: dict[int, tuple[str, int]]):
        self.tallies = {run_id: Tally(label, total) for run_id, (label, total) in runs.items()}
        self.started = time.monotonic()

    def rates(self, tally: Tally) -> tuple[float, str]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done = sum(t.done for t in self.tallies.values())
        total = sum(t.total for t in self.tallies.values())
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0
        return rate, f"{eta:.0f}s" if done < total else "-"


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


class RichProgress(_Tallies):
    """A live table, one row per run: done/total, pass rate, mean score, errors, tokens, cost, calls/s, ETA."""

    def __init__(self, runs: dict[int, tuple[str, int]], console: Console = err):
        super().__init__(runs)
        self.live = Live(self._table(), console=console, refresh_per_second=4, transient=False)

    def _table(self) -> Table:
        table = Table(title="promptlab eval", title_justify="left")
        for col in ("run", "done", "pass", "mean", "errors", "tokens", "cost", "calls/s", "ETA"):
            table.add_column(col, justify="left" if col == "run" else "right")
        for tally in self.tallies.values():
            rate, eta = self.rates(tally)
            table.add_row(tally.label, f"{tally.done}/{tally.total}",
                          _pct(tally.passed, tally.done - tally.errors),
                          f"{tally.score_sum / tally.scored:.3f}" if tally.scored else "-",
                          f"[red]{tally.errors}[/]" if tally.errors else "0", f"{tally.tokens:,}",
                          f"${tally.cost:.4f}" if tally.cost_known else "n/a", f"{rate:.1f}", eta)
        return table

    def start(self, total: int) -> None:
        self.started = time.monotonic()
        self.live.start()

    def update(self, item: ItemResult) -> None:
        self.tallies[item.run_id].add(item)
        self.live.update(self._table())

    def finish(self) -> None:
        self.live.update(self._table())
        self.live.stop()


class PlainProgress(_Tallies):
    """Periodic plain lines on stderr, for logs and CI."""

    def __init__(self, runs: dict[int, tuple[str, int]], every_s: float = 5.0):
        super().__init__(runs)
        self.every_s, self.last = every_s, 0.0

    def start(self, total: int) -> None:
        self.started = self.last = time.monotonic()
        print(f"promptlab: {total} items to evaluate", file=sys.stderr, flush=True)

    def update(self, item: ItemResult) -> None:
        tally = self.tallies[item.run_id]
        tally.add(item)
        if time.monotonic() - self.last >= self.every_s or tally.done == tally.total:
            self.last = time.monotonic()
            self._line(tally)

    def _line(self, tally: Tally) -> None:
        rate, eta = self.rates(tally)
        mean = f"{tally.score_sum / tally.scored:.3f}" if tally.scored else "-"
        print(f"{tally.label}: {tally.done}/{tally.total} pass={_pct(tally.passed, tally.done - tally.errors)} "
              f"mean={mean} errors={tally.errors} tokens={tally.tokens} calls/s={rate:.1f} eta={eta}",
              file=sys.stderr, flush=True)

    def finish(self) -> None:
        pass


def make_progress(runs: dict[int, tuple[str, int]], quiet: bool = False):
    from promptlab.runner import SilentProgress

    if quiet:
        return SilentProgress()
    return RichProgress(runs) if err.is_terminal else PlainProgress(runs)


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_runs(runs: list[dict], console: Console = out) -> None:
    """The score table: one row per run, one column per metric (mean [95% CI])."""
    metrics = list(dict.fromkeys(m for r in runs for m in r["scores"]))
    table = Table(title="scores", title_justify="left")
    for col in ("run", "prompt", "model", "status", "n", "errors", *metrics, "pass",
                "tokens/call", "cost", "calls/s", "p50 ms"):
        table.add_column(col, justify="left" if col in ("run", "prompt", "model", "status") else "right")
    for r in runs:
        cells = []
        for m in metrics:
            low, high = r["intervals"].get(m, [None, None])
            mean = r["scores"].get(m)
            cells.append(f"{_num(mean)} [{_num(low, 2)}, {_num(high, 2)}]" if mean is not None else "-")
        tokens = r.get("tokens") or {}
        table.add_row(r["name"], f"{r['prompt']}@{r['version']}", r["model"], r["status"], str(r["n"]),
                      str(r["errors"]), *cells, _num(r.get("pass_rate")),
                      str(tokens.get("per_call", "-")),
                      "n/a" if r.get("cost") is None else f"${r['cost']:.4f}",
                      _num(r.get("calls_per_s"), 1), _num((r.get("latency_ms") or {}).get("p50"), 0))
    console.print(table)
    for r in runs:
        if r.get("error"):
            err.print(f"[red]{r['name']}: {r['error']}[/]")


def print_gates(gates: list, console: Console = out) -> None:
    if not gates:
        return
    table = Table(title="gates", title_justify="left")
    for col in ("gate", "result", "detail"):
        table.add_column(col)
    for g in gates:
        table.add_row(g.name, "[green]pass[/]" if g.passed else "[red]FAIL[/]", g.message)
    console.print(table)


def print_table(title: str, columns: list[str], rows: list[list[Any]], console: Console = out) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
