"""The command line: one small module per noun (parse → call core → display).

Only typer is imported at module level, so `promptlab --help` stays fast;
each command imports what it needs when it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from promptlab.cli import (cache, cases, evals, experiments, guard, models, optimizations, optimize, projects,
                           prompts, reports, runs, signatures, suggest, view, workspace)
from promptlab.cli.common import State

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


def main(argv: list[str] | None = None) -> None:
    import os

    from promptlab.cli.common import fail
    from promptlab.cli.helptext import plain_metavars

    argv = sys.argv[1:] if argv is None else argv
    # --debug may come anywhere (after the subcommand too): the root option takes it
    debug = "--debug" in argv or os.environ.get("PROMPTLAB_DEBUG", "").lower() in ("1", "true", "yes")
    argv = ["--debug", *(a for a in argv if a != "--debug")] if debug else argv
    command = typer.main.get_command(app)
    plain_metavars(command)
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
