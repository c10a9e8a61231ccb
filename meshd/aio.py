"""Small asyncio helpers shared by the layers."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; returns whether it was set.

    Python 3.11's `asyncio.wait_for` can swallow a cancellation that arrives just as the awaited
    future completes (fixed in 3.12), which leaves a loop that should stop running for ever and hangs
    shutdown; `asyncio.timeout` does not have that race.
    """
    if math.isinf(seconds):
        await event.wait()
        return True
    try:
        async with asyncio.timeout(max(seconds, 0.0)):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def close_server(server: asyncio.Server, connections: set[asyncio.Task[Any]]) -> None:
    """Stop listening, cancel the tasks serving open connections and wait until all are gone."""
    server.close()
    for task in list(connections):
        task.cancel()
    for task in list(connections):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await server.wait_closed()
