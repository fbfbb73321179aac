"""`promptlab models list|check`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from promptlab.cli.common import AsJson, emit_json

app = typer.Typer(help="Model aliases from promptlab.toml.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, json_: AsJson = False) -> None:
    """Aliases, their LiteLLM model, api_base and key variable (never the key)."""
    import os

    from promptlab import display

    settings = ctx.obj.settings
    models = dict(settings.models)
    models.setdefault("local", settings.resolve_model("local"))
    rows = [{"alias": alias, "model": m.model, "api_base": m.api_base, "api_key_env": m.api_key_env,
             "key_set": bool(m.api_key_env and os.environ.get(m.api_key_env)), "rpm": m.rpm,
             "concurrency": m.concurrency, "default": alias == settings.defaults.model}
            for alias, m in sorted(models.items())]
    if json_:
        return emit_json(rows)
    display.print_table("models", ["alias", "model", "api_base", "key env", "key set", "rpm", "default"],
                        [[r["alias"], r["model"], r["api_base"], r["api_key_env"],
                          "yes" if r["key_set"] else "-", r["rpm"], "*" if r["default"] else ""]
                         for r in rows])


@app.command("check")
def check(ctx: typer.Context,
          model: Annotated[Optional[str], typer.Argument(help="Alias or LiteLLM model (default: the default).")] = None,
          json_: AsJson = False) -> None:
    """Send one tiny request (never cached) to see that a model answers.

    Exit codes: 0 it answered, 2 bad setup (unknown alias, a key or the local extra missing),
    3 the provider failed."""
    import asyncio

    from promptlab.errors import ProviderError
    from promptlab.providers.gateway import CallError, Gateway, check_credentials
    from promptlab.redact import redact

    config = ctx.obj.settings.resolve_model(model)
    check_credentials(config)  # bad setup is found before the call, and is not the provider's failure
    gateway = Gateway(cache=None, retries=1, timeout=ctx.obj.settings.defaults.timeout)
    try:
        reply = asyncio.run(gateway.complete(config, [{"role": "user", "content": "Say OK."}],
                                             {"max_tokens": 4}))
    except CallError as exc:  # its message is already redacted; fail() prints it
        raise ProviderError(f"{config.alias or config.model}: {exc.kind}: {exc}") from None
    # the provider's text: masked before it is cut, repr() escapes control characters
    if json_:
        return emit_json({"model": config.alias or config.model, "model_name": config.model, "ok": True,
                          "latency_ms": round(reply.latency_ms, 1), "prompt_tokens": reply.usage.prompt_tokens,
                          "completion_tokens": reply.usage.completion_tokens, "reply": redact(reply.text)})
    typer.echo(f"{config.alias or config.model}: ok ({reply.latency_ms:.0f} ms, "
               f"{reply.usage.prompt_tokens}+{reply.usage.completion_tokens} tokens): "
               f"{redact(reply.text.strip())[:40]!r}")
