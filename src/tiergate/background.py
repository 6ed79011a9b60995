"""Stopping background tasks so that a shutdown can never hang.

A background loop that catches ``Exception`` around a library call can lose a
cancellation when the library turns it into an error of its own: under load,
redis-py did that to the breaker refresher, which went back to sleep while
``close()`` waited for it forever (a test worker, and a graceful stop, hung).
Loops therefore call ``reraise_if_stopping(exc)`` after catching, and owners stop
tasks with ``stop()``, which cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("tiergate.background")


def stop_requested() -> bool:
    """True when the running task was asked to stop, even if the CancelledError was turned into another error."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def reraise_if_stopping(exc: BaseException) -> None:
    """In a loop's ``except Exception``: end the loop if this error stands for a cancellation."""
    if stop_requested():
        raise asyncio.CancelledError from exc


async def stop(task: asyncio.Task[Any] | None, *, timeout_s: float = 10.0) -> None:
    """Cancel ``task`` and wait for it; cancel again while it keeps running, for at most ``timeout_s``."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.error("background task %s did not stop within %.0fs; leaving it behind", task.get_name(), timeout_s)
            return
        await asyncio.wait({task}, timeout=min(0.5, remaining))
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task %s had failed: %r", task.get_name(), task.exception())
