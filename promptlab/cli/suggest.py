"""`promptlab suggest RUN`: what a run got wrong and concrete edits to the prompt."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from promptlab.cli.common import AsJson, ProgressMode


def register(app: typer.Typer) -> None:
    @app.command("suggest")
    def suggest(ctx: typer.Context,
                run: Annotated[str, typer.Argument(help="The run to analyse.")],
                model: Annotated[Optional[str], typer.Option(
                    help="Model that writes the suggestions (default: the run's model, as the optimizers' proposer).")] = None,
                apply: Annotated[bool, typer.Option(
                    "--apply", help="Make edit --edit N a candidate version and evaluate it on the run's model and "
                    "cases, with a paired p-value against the run.")] = False,
                edit: Annotated[int, typer.Option(min=1, help="Which edit --apply uses.")] = 1,
                promote: Annotated[bool, typer.Option(
                    help="With --apply: make the applied edit the prompt's latest version.")] = False,
                project: Annotated[Optional[str], typer.Option(help="Project name.")] = None,
                progress: ProgressMode = "auto",
                json_: AsJson = False) -> None:
        """Analyse a run's failures (top confusions, per-label stats, failure patterns, the categories to
        work on first) and suggest edits; --apply evaluates one. Nothing is promoted unless --promote.

        Examples:

        \b
          promptlab suggest nightly-1
          promptlab suggest nightly-1 --model gpt --json
          promptlab suggest nightly-1 --apply --edit 2
        """
        from promptlab.cli.common import emit_json
        from promptlab.display.progress import make_progress
        from promptlab.errors import UsageError
        from promptlab.services.suggest import suggest as run_suggest

        if promote and not apply:
            raise UsageError("suggest: --promote needs --apply (it promotes the applied edit)")
        state = ctx.obj
        shown = make_progress("none" if json_ and progress == "auto" else progress)
        result = run_suggest(state.store, state.settings, state.project_id(project), run, model=model,
                             apply=edit if apply else None, promote=promote, progress=shown)
        if json_:
            emit_json(result.json())
        else:
            from promptlab.display.suggest import print_suggestions

            print_suggestions(result.json())
