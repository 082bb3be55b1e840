"""Background tasks that must not be lost: kept until done, failures logged, awaited at stop."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine

from streamerhub.log import get_logger, redact

log = get_logger(__name__)


class BackgroundTasks:
    """Fire-and-forget coroutines that are still tracked, so stop() can wait for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run coro in the background; its failure is logged, never raised."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def wait(self, timeout: float) -> None:
        """Wait (bounded) for the tasks still running."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("multistream_task_failed", error=redact(repr(task.exception())))
