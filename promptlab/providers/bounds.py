"""Bounds on what a provider sends back: a reply's size (read chunk by chunk, never past the bound)
and a call's total time."""

from __future__ import annotations

from typing import AsyncIterator

from promptlab.providers.errors import CallError

TOTAL_SLACK_S = 5.0  # a call may take its timeout plus this, however its reply trickles in
MAX_REPLY_BYTES = 8 * 1024 ** 2  # a reply larger than this is an error (kind reply_too_large), never stored


def too_large(limit: int, attempts: int = 1) -> CallError:
    """A reply past the size bound: the item's error (never retried: it would come back as large)."""
    return CallError("reply_too_large", f"the reply passes {limit:,} bytes; not read further", attempts=attempts)


async def bounded(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """A reply body's chunks, stopped (too_large) once they pass `limit` bytes: whatever the HTTP
    client, a provider cannot make the process buffer an endless or gigabyte reply."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        yield chunk


async def read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A reply body read whole, never past `limit` bytes (see `bounded`)."""
    return b"".join([chunk async for chunk in bounded(chunks, limit)])
