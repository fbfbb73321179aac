"""The progress displays: each a `promptlab.progress.Progress` folding the events of runs and
searches into a live rich view (terminals), plain lines (logs, CI), JSON lines (machines) or
nothing (`SilentProgress`). `make_progress` picks one for `--progress`."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from promptlab.display import err, of_budget, safe, score_text
from promptlab.progress import (ConcurrencyChanged, EvalFinished, EvalStarted, Event, ItemFinished, Note,
                                Progress, SearchEvaluating, SearchFinished, SearchStarted, SearchStatus,
                                SearchStep, SilentProgress)
from promptlab.terminal import printable

if TYPE_CHECKING:
    from rich.console import Console

    from promptlab.evaluation.runner import ItemResult


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


@dataclass
class SearchView:
    """A search as the displays show it: its last state and the batch of replies under way."""

    title: str
    status: SearchStatus | None = None
    replies: int = 0          # this session's
    done: int = 0             # of the batch under way
    total: int | None = None  # the batch under way's replies; None between batches

    @property
    def message(self) -> str:
        if self.total is None:
            return self.status.message if self.status else ""
        return f"evaluating: {self.done}/{self.total} replies" if self.done else f"evaluating {self.total} replies"


class Fold:
    """What every display knows, folded from the events: each run's tally and the adaptive
    limits; inside a search (SearchStarted … SearchFinished) its view instead, since its runs
    are the search's own."""

    def __init__(self) -> None:
        self.tallies: dict[int, Tally] = {}
        self.limits: dict[str, int] = {}
        self.started = time.monotonic()
        self.search: SearchView | None = None

    def fold(self, event: Event) -> None:
        search = self.search
        match event:
            case SearchStarted(title=title):
                self.search = SearchView(title)
            case SearchEvaluating(status=status) | SearchStep(status=status) if search:
                search.status = status
            case SearchFinished():
                self.search = None
            case EvalStarted() if search:
                search.done, search.total = 0, event.total
            case EvalStarted(runs=runs):
                self.started = time.monotonic()
                self.tallies.update({r.run_id: Tally(r.label, r.total) for r in runs})
            case ItemFinished() if search:
                search.replies += 1
                search.done += 1
            case ItemFinished(item=item):
                self.tallies[item.run_id].add(item)
            case EvalFinished() if search:
                search.total = None
            case ConcurrencyChanged(limits=limits):
                self.limits = limits

    def concurrency(self) -> str:
        """Under concurrency "auto", the calls in flight allowed now: '12', or per model
        'gpt 12, mini 4'; else ''."""
        if len(self.limits) == 1:
            return str(next(iter(self.limits.values())))
        return printable(", ".join(f"{k} {v}" for k, v in self.limits.items()))

    def rates(self, tally: Tally) -> tuple[float, str]:
        """This run's own items per second and time left at that pace (runs share the workers); a
        run whose turn has not come while others advance is `waiting`."""
        rate = tally.done / max(time.monotonic() - self.started, 1e-6)
        if tally.done >= tally.total:
            return rate, "-"
        if rate > 0:
            return rate, _duration((tally.total - tally.done) / rate)
        return rate, "waiting" if any(t.done for t in self.tallies.values()) else "?"

    def overall(self) -> str:
        """Every run's items together: 'done/total, ETA …' at the pace of all of them so far."""
        done = sum(t.done for t in self.tallies.values())
        total = sum(t.total for t in self.tallies.values())
        rate = done / max(time.monotonic() - self.started, 1e-6)
        eta = "-" if done >= total else _duration((total - done) / rate) if rate > 0 else "?"
        return f"{done}/{total}, ETA {eta}"

    def title(self) -> str:
        """What runs: the one run's prompt × model, or how many runs."""
        labels = [t.label for t in self.tallies.values()]
        return printable(f"evaluating {labels[0]}" if len(labels) == 1
                         else f"evaluating {len(labels)} runs · {self.overall()}")


def _duration(seconds: float) -> str:
    """42s, 3m05s, 2h10m: a time left, as precise as it is worth."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


class RichProgress(Fold):
    """A live view on stderr: for runs a table, one row per run (done/total, pass rate, mean
    score, errors, tokens, cost, calls/s, ETA); for a search a panel (iteration, best so far,
    latest candidates, budget used)."""

    def __init__(self, console: Console | None = None):
        super().__init__()
        self.console = console or err
        self.live = None

    def emit(self, event: Event) -> None:
        self.fold(event)
        match event:
            case Note(message=message):
                self.console.print(safe(f"promptlab: {message}"), highlight=False)
            case SearchStarted() | EvalStarted() if self.live is None:
                from rich.live import Live

                self.live = Live(self._view(), console=self.console, refresh_per_second=4, transient=False)
                self.live.start()
            case EvalFinished() if self.search is None and self.live is not None:
                self.live.update(self._table())  # its last rates
                self._stop()
            case SearchFinished() if self.live is not None:
                self._stop()
            case _ if self.live is not None:
                self.live.update(self._view())

    def _stop(self) -> None:
        self.live.stop()
        self.live = None

    def _view(self):
        return self._table() if self.search is None else self._panel(self.search)

    def _table(self) -> Table:
        shown = self.concurrency()
        table = Table(title=Text(f"{self.title()} · concurrency {shown}" if shown else self.title()),
                      title_justify="left", expand=True)
        for col in ("run", "done", "pass", "mean", "errors", "tokens", "cost", "calls/s", "ETA"):
            table.add_column(col, justify="left" if col == "run" else "right")
        for tally in self.tallies.values():
            rate, eta = self.rates(tally)
            table.add_row(safe(tally.label), f"{tally.done}/{tally.total}",
                          _pct(tally.passed, tally.done - tally.errors),
                          f"{tally.score_sum / tally.scored:.3f}" if tally.scored else "-",
                          f"[red]{tally.errors}[/]" if tally.errors else "0", f"{tally.tokens:,}",
                          f"${tally.cost:.4f}" if tally.cost_known else "n/a", f"{rate:.1f}", eta)
        return table

    @staticmethod
    def _panel(search: SearchView):
        from rich.console import Group

        s = search.status
        table = Table(title=search.title, title_justify="left", expand=True)  # the terminal's width
        for col in ("candidate", "edit", "val", "train"):
            table.add_column(col, justify="left" if col in ("candidate", "edit") else "right")
        if s is None:
            return Group(table, Text(f"{search.replies} replies", style="dim"))
        for ref, op, val, train in s.latest:
            table.add_row(ref, op, score_text(val), score_text(train))
        message = search.message
        line = (f"iteration {s.iteration} · best {s.best_ref} val {score_text(s.best_val)} "
                f"(base {score_text(s.base_val)}) · {s.candidates} candidates · calls "
                f"{of_budget(s.calls, s.budget_calls)} · tokens {of_budget(s.tokens, s.budget_tokens)} · "
                f"{search.replies} replies this session" + (f" · {message}" if message else ""))
        return Group(table, Text(line, style="dim"))


class PlainProgress(Fold):
    """Plain lines on stderr, for logs and CI: a run's every `every_s` seconds and when it is
    done; a search's after each step and every `every` replies of a batch (a genetic generation
    can take minutes on a slow model)."""

    def __init__(self, every_s: float = 5.0, every: int = 10):
        super().__init__()
        self.every_s, self.every, self.last = every_s, every, 0.0

    def emit(self, event: Event) -> None:
        self.fold(event)
        search = self.search
        match event:
            case Note(message=message):
                _say(f"promptlab: {message}")
            case SearchStarted(title=title):
                _say(f"promptlab: {title}")
            case SearchStep(status=status):
                _say(_search_line(status, status.message))
            case EvalStarted() if search:
                _say(_search_line(search.status, search.message))
            case ItemFinished() if search:
                if search.done % self.every == 0 and search.done < search.total:
                    _say(_search_line(search.status, search.message))
            case EvalStarted(runs=runs):
                self.last = time.monotonic()
                _say(f"promptlab: {sum(r.total for r in runs)} items to evaluate")
            case ItemFinished(item=item):
                tally = self.tallies[item.run_id]
                if time.monotonic() - self.last >= self.every_s or tally.done == tally.total:
                    self.last = time.monotonic()
                    self._line(tally)

    def _line(self, tally: Tally) -> None:
        rate, eta = self.rates(tally)
        mean = f"{tally.score_sum / tally.scored:.3f}" if tally.scored else "-"
        _say(f"{tally.label}: {tally.done}/{tally.total} pass={_pct(tally.passed, tally.done - tally.errors)} "
             f"mean={mean} errors={tally.errors} tokens={tally.tokens} calls/s={rate:.1f} eta={eta}"
             + (f" concurrency={shown}" if (shown := self.concurrency()) else "")
             + (f" | all runs {self.overall()}" if len(self.tallies) > 1 else ""))


def _search_line(s: SearchStatus, message: str) -> str:
    latest = s.latest[0] if s.latest else None
    last = f" | last {latest[0]} {latest[1]} val={score_text(latest[2])}" if latest else ""
    return (f"iter {s.iteration} | best {s.best_ref} val={score_text(s.best_val)} (base {score_text(s.base_val)})"
            f"{last} | calls {of_budget(s.calls, s.budget_calls)} tokens {of_budget(s.tokens, s.budget_tokens)}"
            + (f" | {message}" if message else ""))


def _say(line: str) -> None:
    print(printable(line), file=sys.stderr, flush=True)


class JsonLines:
    """One JSON object per event on stderr, for CI machines: {"event": "item_finished", ...its
    fields}, the names those of `promptlab.progress` in snake case (`eval_started` adds `total`)."""

    def emit(self, event: Event) -> None:
        name = "".join(f"_{c.lower()}" if c.isupper() else c for c in type(event).__name__).lstrip("_")
        record = {"event": name, **asdict(event)}
        if isinstance(event, EvalStarted):
            record["total"] = event.total
        print(json.dumps(record), file=sys.stderr, flush=True)


class Guarded:
    """A display that a closed pipe or terminal turns off instead of killing the run.

    Only OSError (EPIPE, EIO, …) is caught: the run goes on without a display,
    and the dead stream is swapped for /dev/null so later prints and the exit
    flush cannot fail either.
    """

    def __init__(self, inner: Progress):
        self.inner: Progress | None = inner

    def emit(self, event: Event) -> None:
        if self.inner is None:
            return
        try:
            self.inner.emit(event)
        except OSError:
            self.inner = None
            _silence_dead_streams()


def _silence_dead_streams() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            stream.flush()
        except (OSError, ValueError):
            setattr(sys, name, open(os.devnull, "w"))


def make_progress(mode: str) -> Progress:
    """The display for `--progress` (the CLI checks the mode): auto is rich on a terminal, else
    plain lines; none is silence."""
    if mode == "none":
        return SilentProgress()
    if mode == "auto":
        mode = "rich" if err.is_terminal else "plain"
    return Guarded({"rich": RichProgress, "plain": PlainProgress, "json": JsonLines}[mode]())
