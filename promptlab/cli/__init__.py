"""The command line: one small module per noun (parse → call core → display).

Only typer is imported at module level, so `promptlab --help` stays fast;
each command imports what it needs when it runs.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from promptlab.cli import (cache, cases, evals, experiments, guard, models, optimizations, optimize, projects,
                           prompts, reports, runs, signatures, suggest, view, workspace)
from promptlab.cli.common import Redacting, State

app = typer.Typer(name="promptlab", help="A local-first prompt lab: version prompts, keep golden "
                  "cases, evaluate and optimize against any LiteLLM model.",
                  rich_markup_mode=None, pretty_exceptions_enable=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"promptlab {version('promptlab')}")
        raise typer.Exit()


@app.callback()
def root(ctx: typer.Context,
         db: Annotated[Optional[Path], typer.Option(help="Database file (default from promptlab.toml).",
                                                    envvar="PROMPTLAB_DB")] = None,
         debug: Annotated[bool, typer.Option(help="Show tracebacks on errors (anywhere on the line).",
                                             envvar="PROMPTLAB_DEBUG")] = False,
         version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    ctx.obj = State(db=db, debug=debug)


workspace.register(app)
evals.register(app)
experiments.register(app)
reports.register(app)
optimize.register(app)
suggest.register(app)
guard.register(app)
view.register(app)
app.add_typer(projects.app, name="project")
app.add_typer(signatures.app, name="signature")
app.add_typer(prompts.app, name="prompt")
app.add_typer(cases.app, name="case")
app.add_typer(runs.app, name="runs")
app.add_typer(optimizations.app, name="optimizations")
app.add_typer(cache.app, name="cache")
app.add_typer(models.app, name="models")


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (CI runners, `timeout`, docker stop) does what Ctrl-C does: asyncio's handler cancels
    the running command (its finished results saved, the run left interrupted and resumable),
    else KeyboardInterrupt — even when SIGINT itself is ignored, as in a background job."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _terminate:
        handler(signal.SIGINT, frame)
    else:
        signal.default_int_handler(signal.SIGINT, frame)


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:  # a signal that came as the command was ending, after its own handlers
        print("promptlab: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        _interrupt_handled()


def _interrupt_handled() -> None:
    """CPython 3.11 marks a KeyboardInterrupt raised inside eval()'d code (pydantic and typing
    evaluate annotations so, during lazy imports) as unhandled even once caught, and then ends
    the process by SIGINT instead of the exit code promptlab chose: every interrupt has been
    handled by here, so clear the mark."""
    import ctypes

    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ValueError, AttributeError):  # another interpreter, or a build that hides the symbol
        pass


def _main(argv: list[str] | None) -> None:
    import os

    from promptlab.cli.common import fail
    from promptlab.cli.helptext import plain_metavars

    own_process = argv is None  # the console script, not a caller running commands in its process
    argv = sys.argv[1:] if argv is None else argv
    # --debug may come anywhere (after the subcommand too): the root option takes it
    debug = "--debug" in argv or os.environ.get("PROMPTLAB_DEBUG", "").lower() in ("1", "true", "yes")
    argv = ["--debug", *(a for a in argv if a != "--debug")] if debug else argv
    command = typer.main.get_command(app)
    plain_metavars(command)
    streams, on_term = (sys.stdout, sys.stderr), signal.signal(signal.SIGTERM, _terminate)
    # everything printed (tables, --json, --progress json, --debug tracebacks) is masked on its way out
    sys.stdout, sys.stderr = Redacting(sys.stdout), Redacting(sys.stderr)
    try:
        command.main(args=argv, prog_name="promptlab", standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("promptlab: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # one line on stderr; the traceback only with --debug
        if debug:
            import traceback

            traceback.print_exc()
        fail(exc)  # the same exit code with or without --debug
    finally:
        sys.stdout, sys.stderr = streams
        # a process whose command has ended exits with that command's code: a SIGTERM landing between
        # here and the interpreter's exit changes nothing (an in-process caller gets its handler back)
        signal.signal(signal.SIGTERM, signal.SIG_IGN if own_process else on_term)
