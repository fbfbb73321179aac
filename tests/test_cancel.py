"""Ctrl-C cancels the main task; an HTTP client that turns that cancellation into its own error
(or, like Python 3.11's wait_for, drops it when a reply is already there) must not make the run
carry on: the call path re-raises it instead of retrying or returning."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from promptlab.config import BatchConfig, ModelConfig
from promptlab.providers.gateway import Gateway

MODEL = ModelConfig(alias="m", model="openai/m", api_base="http://127.0.0.1:9")


def _swallowing(calls: list[str]):
    """A client call that waits, and on cancellation raises a connection error of its own."""
    async def send(*args, **kwargs):
        calls.append("sent")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("connection closed by the client") from None
    return send


async def _cancel_when_sent(coro, calls: list[str]) -> None:
    task = asyncio.ensure_future(coro)
    while not calls:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_cancelled_batch_call_is_not_retried_either(monkeypatch):
    from promptlab.evaluation import batch
    from promptlab.progress import SilentProgress

    calls: list[str] = []
    monkeypatch.setattr(batch, "litellm", lambda: SimpleNamespace(aretrieve_batch=_swallowing(calls)))
    batches = batch._Batches(None, BatchConfig(), retries=3, timeout=30, progress=SilentProgress())
    asyncio.run(_cancel_when_sent(batches.api(MODEL, "aretrieve_batch", batch_id="b"), calls))
    assert calls == ["sent"]


def test_a_reply_that_meets_a_cancel_is_dropped_not_returned():
    """Python 3.11's wait_for returns a reply that finished as the cancel arrived, the task still
    marked as cancelling: the call raises the cancellation instead of carrying on."""
    async def main():
        caller = asyncio.current_task()

        async def send(kwargs):
            caller.cancel()          # Ctrl-C lands as the reply comes back
            return {"choices": []}

        gateway = Gateway(cache=None, retries=0, timeout=30)
        with pytest.raises(asyncio.CancelledError):
            await gateway._call(MODEL, send, messages=[])

    asyncio.run(main())
