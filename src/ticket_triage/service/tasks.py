"""The service's background asyncio tasks (micro-batcher, reclassification, notification delivery)."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has stopped (None: nothing to do)."""
    if task is None:
        return
    # Cancelled again until it ends: on Python < 3.12, `asyncio.wait_for` swallows a cancellation
    # that arrives as its inner awaitable completes (gh-86296; the batcher's wait for more items),
    # and a single cancel() then left shutdown waiting for a task that went on running.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    try:
        await task
    except asyncio.CancelledError:
        pass
