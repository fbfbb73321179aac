"""litellm, imported once (it takes seconds): offline-safe, its own retries off, the embedded
model registered as a custom provider."""

from __future__ import annotations

import logging
import os
import time

_litellm = None
import_seconds = 0.0  # time spent importing litellm (seconds), kept out of throughput numbers


def litellm():
    """Import litellm once, offline-safe, its replies bounded, with the local provider registered."""
    global _litellm, import_seconds
    if _litellm is None:
        started = time.perf_counter()
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm as lib

        lib.suppress_debug_info = True
        # its background logging worker re-parses what providers send (a batch output file, for
        # its cost tracking) and prints the traceback of a hostile one: promptlab reports those itself
        logging.getLogger("LiteLLM").addFilter(lambda record: not record.getMessage().startswith("LoggingWorker"))
        # drop_params stays off: with it, litellm answers a 422 with None instead of raising.
        lib.telemetry = False
        # aembedding turns max_retries=0 into this default: zero keeps retries ours alone.
        lib.DEFAULT_MAX_RETRIES = 0
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        from promptlab.providers import litellm_bound, local_litellm

        litellm_bound.install(AsyncHTTPHandler)  # no reply is read past the caller's bound

        local_litellm.register(lib)
        _litellm = lib
        import_seconds = time.perf_counter() - started
    return _litellm
