"""What every command shares: the state on ctx.obj, errors, JSON output, running plans."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer

from promptlab.cli import completion

if TYPE_CHECKING:
    from promptlab.config import Settings
    from promptlab.services.evaluate import EvaluateRequest
    from promptlab.store import Store


AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
Project = Annotated[Optional[str], typer.Option(
    help="Project name (default: the current project, see `promptlab project use`, or the only one).",
    autocompletion=completion.projects)]

# Gate and CI-output options, shared by `eval` and `run`.
MinScore = Annotated[Optional[float], typer.Option(help="Gate: every metric mean >= this.")]
MinPassRate = Annotated[Optional[float], typer.Option(help="Gate: pass rate >= this.")]
MaxErrorRate = Annotated[Optional[float], typer.Option(help="Gate: error share <= this.")]
MinPassK = Annotated[Optional[float], typer.Option(
    help="Gate: pass^k >= this, the share of cases that passed on every one of their --repeat attempts.")]
MaxRegression = Annotated[Optional[float], typer.Option(
    help="Gate: how far each metric mean may drop below the baseline's.")]
Baseline = Annotated[Optional[str], typer.Option(
    help="Baseline for --max-regression: a run name, or a label of the prompt whose latest "
         "completed run is used (default: production).")]
JUnit = Annotated[Optional[Path], typer.Option(
    help="Write JUnit XML here: a testcase per case result and per gate.")]
ReportMd = Annotated[Optional[Path], typer.Option(
    help="Write a Markdown summary here, such as $GITHUB_STEP_SUMMARY.")]


Notify = Annotated[Optional[str], typer.Option(
    metavar="URL", help="POST the JSON summary (what --json prints) to this hook when done; a failing "
    "hook is a warning, never a failed run.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts).")]

PROGRESS_MODES = ("auto", "rich", "plain", "json", "none")


def _progress_mode(mode: str) -> str:
    from promptlab.errors import UsageError

    if mode not in PROGRESS_MODES:
        raise UsageError(f"--progress must be one of {', '.join(PROGRESS_MODES)}, not '{mode}'")
    return mode


ProgressMode = Annotated[str, typer.Option(
    "--progress", metavar="MODE", callback=_progress_mode,
    help="Progress on stderr: auto (a live view on a terminal, else plain lines), rich, plain, "
         "json (one JSON object per event, for CI) or none.")]


def confirm(question: str, yes: bool) -> None:
    """Ask before deleting; without a terminal to ask on, only --yes goes ahead."""
    from promptlab.errors import UsageError
    from promptlab.terminal import printable

    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} Pass --yes to confirm (no terminal to ask on)")
    if not typer.confirm(printable(question), default=False):
        raise typer.Exit(1)


def gate_flags(**flags: Any) -> dict[str, Any]:
    """The gate options that were given."""
    return {k: v for k, v in flags.items() if v is not None}


@dataclass
class State:
    db: Path | None = None
    debug: bool = False
    read_only: bool = False  # set by @read_only: the command must not create a database
    _settings: Any = field(default=None, repr=False)
    _store: Any = field(default=None, repr=False)

    @property
    def settings(self) -> "Settings":
        if self._settings is None:
            from promptlab.config import load_settings

            self._settings = load_settings()
        return self._settings

    @property
    def store(self) -> "Store":
        if self._store is None:
            from promptlab.store import open_store

            path = Path(self.db) if self.db else self.settings.db_path
            if self.read_only and not self.db and self.settings.source is None and not path.exists():
                from promptlab.errors import UsageError

                raise UsageError("no promptlab database here; run `promptlab init` (or set PROMPTLAB_DB)")
            self._store = open_store(path)
        return self._store

    def project_id(self, name: str | None) -> int:
        """The project a command works on: --project, else the current project (PROMPTLAB_PROJECT,
        then `promptlab project use`, then [defaults] project in promptlab.toml), else the only one."""
        from promptlab.errors import NotFoundError

        source, chosen = self.current_project(name)
        if chosen is None:
            return self.store.project_id(None)
        try:
            return self.store.project(chosen)["id"]
        except NotFoundError as exc:
            if source == "--project":
                raise
            raise NotFoundError(f"{exc} (the current project, from {source})") from None

    def current_project(self, name: str | None = None) -> tuple[str, str | None]:
        """(where it comes from, the project's name) of the first choice made: `name` (--project),
        PROMPTLAB_PROJECT, `project use`, promptlab.toml; ("", None) when none is."""
        choices = (("--project", lambda: name), ("PROMPTLAB_PROJECT", lambda: os.environ.get("PROMPTLAB_PROJECT")),
                   ("`promptlab project use`", self.store.current_project),
                   (f"[defaults] project in {self.settings.source}", lambda: self.settings.defaults.project))
        return next(((source, value) for source, get in choices if (value := get())), ("", None))


def read_only(command: Any) -> Any:
    """Mark a command that only reads: outside a workspace it refuses rather than create a database."""
    @functools.wraps(command)
    def wrapper(ctx: typer.Context, *args: Any, **kwargs: Any) -> Any:
        ctx.obj.read_only = True
        return command(ctx, *args, **kwargs)
    return wrapper


class Redacting:
    """A text stream that masks known secrets in each write (redact.redact) before passing it on."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        from promptlab.redact import redact

        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding…
        return getattr(self._stream, name)


def fail(exc: BaseException) -> NoReturn:
    """One line on stderr, secrets masked and control characters dropped (messages quote input)."""
    from promptlab.errors import PromptlabError
    from promptlab.redact import redact
    from promptlab.terminal import printable

    if isinstance(exc, sqlite3.DatabaseError):  # a write that failed outside a run (disk full, I/O)
        from promptlab.store import storage_error

        exc = storage_error(None, exc)
    if isinstance(exc, PromptlabError):
        _say(printable(redact(f"promptlab: error: {exc}")))
        sys.exit(exc.exit_code)
    message = redact(str(exc)).splitlines()[0] if str(exc) else ""
    _say(printable(f"promptlab: unexpected error: {type(exc).__name__}: {message} "
                   f"(rerun with --debug for the traceback)"))
    sys.exit(2)


def _say(line: str) -> None:
    """Print to stderr; a closed stderr must not turn the exit code into a traceback."""
    try:
        print(line, file=sys.stderr)
    except OSError:
        sys.stderr = open(os.devnull, "w")


def send_notification(url: str, summary: dict, *, reports: dict[str, Path | None]) -> None:
    """`--notify`: the summary and the paths of the reports written, POSTed; a failure is a warning."""
    from promptlab.services.notify import post
    from promptlab.terminal import printable

    written = {kind: str(path.resolve()) for kind, path in reports.items() if path is not None}
    warning = post(url, {**summary, "reports": written})
    if warning:
        _say(printable(f"promptlab: warning: {warning}"))


def emit_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def parse_pairs(pairs: list[str], what: str) -> dict[str, Any]:
    """['k=v', ...] → dict; values parsed as JSON when they are JSON (numbers, lists…)."""
    from promptlab.errors import UsageError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{what}: expected KEY=VALUE, got '{pair}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        except RecursionError:
            raise UsageError(f"{what} {key}: nested too deeply; flatten the value") from None
    return out


def metric_spec(text: str) -> str | dict[str, Any]:
    """`--metric` as given: 'name' or 'name:{json args}'."""
    from promptlab.errors import UsageError

    name, sep, args = text.partition(":")
    if not sep or not args.lstrip().startswith("{"):
        return text
    try:
        return {"name": name, **json.loads(args)}
    except json.JSONDecodeError as exc:
        raise UsageError(f"--metric {text}: arguments are not valid JSON ({exc.msg})") from None


def run_plans(state: State, request: "EvaluateRequest", *, progress: str, as_json: bool,
              gates: dict | None = None, extra: dict | None = None, junit: Path | None = None,
              report_md: Path | None = None, then: Any = None, notify: str | None = None) -> None:
    """Evaluate planned runs with the `--progress` display, then `conclude`. Batch runs left
    `submitted` (`request.wait` False) are only listed: their gates apply in `runs wait`. `then`:
    see services.gates.judge."""
    from promptlab.display.progress import make_progress
    from promptlab.services.evaluate import Interrupted, evaluate
    from promptlab.terminal import printable

    try:
        evaluation = evaluate(state.store, state.settings, request, progress=make_progress(progress))
    except Interrupted as exc:
        print(f"promptlab: {exc}", file=sys.stderr)
        sys.exit(130)
    if evaluation.submitted:  # --no-wait: the batches outlive this process
        if as_json:
            return emit_json({"runs": evaluation.runs, "submitted": [r["name"] for r in evaluation.submitted],
                              **(extra or {})})
        for run in evaluation.submitted:
            typer.echo(printable(f"run {run['name']} submitted: {run['error']}"))
        return
    conclude(state, request.plans, evaluation.runs, as_json=as_json, gates=gates, extra=extra, junit=junit,
             report_md=report_md, then=then, notify=notify)


def conclude(state: State, plans: list[Any], runs: list[dict], *, as_json: bool, gates: dict | None = None,
             extra: dict | None = None, junit: Path | None = None, report_md: Path | None = None,
             then: Any = None, notify: str | None = None) -> None:
    """Ended runs (`plans`: what has their run_id and project_id, `runs`: their summaries): judge
    them, print, post the summary to the `notify` hook, exit (3 when a run did not complete, 2 when
    a gate cannot judge, 1 when a gate failed)."""
    from promptlab import display
    from promptlab.errors import GateFailed
    from promptlab.reports.ci import failure_summary
    from promptlab.services.gates import judge
    from promptlab.terminal import printable

    verdict = judge(state.store, plans, runs, gates or {}, then=then, junit=junit, report_md=report_md)
    summary = {"runs": runs, "passed": verdict.exit_code == 0,
               "gates": [g.__dict__ for g in verdict.gates], **(extra or {}), **verdict.extra}
    if as_json:
        emit_json(summary)
    else:
        display.print_runs(runs)
        if verdict.show is not None:
            verdict.show()
        display.print_gates(verdict.gates)
    if notify:
        send_notification(notify, summary, reports={"junit": junit, "report_md": report_md})
    for run in verdict.failed_runs:
        _say(printable(f"promptlab: error: run '{run['name']}' {run['status']}: {run['error']}"))
    if verdict.exit_code == 3:
        sys.exit(3)
    if verdict.exit_code == 2:
        from promptlab.errors import UsageError

        raise UsageError(f"{verdict.unjudged[0].name}: {verdict.unjudged[0].message}")
    if verdict.exit_code == 1:
        raise GateFailed(failure_summary(verdict.gates))
