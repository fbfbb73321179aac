"""`promptlab view`: a read-only local web app over the store (the `view` extra: Starlette + uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from promptlab.cli.common import State, read_only

DEFAULT_PORT = 7676
VIEW_EXTRA = ("starlette", "uvicorn")  # what `pip install promptlab[view]` brings


def register(app: typer.Typer) -> None:
    @app.command("view")
    @read_only
    def view(ctx: typer.Context,
             port: Annotated[int, typer.Option(min=0, max=65535,
                                               help="Port to listen on (0: any free port).")] = DEFAULT_PORT,
             host: Annotated[str, typer.Option(
                 help="Address to listen on. Anything but loopback needs --token.")] = "127.0.0.1",
             token: Annotated[Optional[str], typer.Option(
                 envvar="PROMPTLAB_VIEW_TOKEN",
                 help="A secret every request must carry (at least 16 characters; 'new' makes one).")] = None,
             open_browser: Annotated[bool, typer.Option("--open", help="Open the address in a browser.")] = False,
             ) -> None:
        """Browse projects, runs (live while they run), compares, prompt families and optimizations
        in a local web app. It only reads the database."""
        import secrets
        import socket

        from promptlab.errors import UsageError, require_extra

        require_extra("view", VIEW_EXTRA, "view")  # before any import of it: bad setup, not a crash
        from promptlab.view.guard import MIN_TOKEN, is_loopback

        if token == "new":
            token = secrets.token_urlsafe(24)
        if token is not None and len(token) < MIN_TOKEN:
            raise UsageError(f"view: --token is {len(token)} characters; use at least {MIN_TOKEN} "
                             f"(or --token new for a random one)")
        if token is None and not is_loopback(host):
            raise UsageError(f"view: --host {host} is reachable from other machines; add --token SECRET "
                             f"(or --token new) so that only those given the token can read the store")
        path = _database(ctx.obj)
        import uvicorn

        from promptlab.view.app import make_app
        try:
            sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        except OSError as exc:
            raise UsageError(f"view: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                             f"pick another --port") from None
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
        print(f"promptlab view: {url}  (reading {path}; Ctrl-C to stop)", flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        server = uvicorn.Server(uvicorn.Config(make_app(path, token), log_level="warning", access_log=False,
                                               lifespan="off"))
        server.run(sockets=[sock])


def _database(state: State) -> Path:
    """The database file, checked: it exists and is at this promptlab's schema (the viewer never migrates)."""
    import sqlite3

    from promptlab.errors import UsageError
    from promptlab.store.migrations import migrations
    from promptlab.view.queries import reading

    path = Path(state.db) if state.db else state.settings.db_path
    if not path.is_file():
        raise UsageError(f"no promptlab database at {path}; run `promptlab init` (or set PROMPTLAB_DB)")
    try:
        with reading(path) as store:
            if not store.db["projects"].exists():
                raise UsageError(f"{path} is not a promptlab database; point --db at one")
            pending = [m.name for m in migrations.pending(store.db)]
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path}: cannot read it as a promptlab database ({exc})") from None
    if pending:
        raise UsageError(f"{path} predates this promptlab (migration {pending[0]} not applied); run any "
                         f"promptlab command on it once (e.g. `promptlab runs list`), then view it")
    return path
