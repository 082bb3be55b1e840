"""In-process publish/subscribe: the store publishes committed events, the dashboard listens.

A leaf module (stdlib only) so that bot/ and web/ can share it without importing each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Generic, TypeVar

T = TypeVar("T")


class Topic(Generic[T]):
    """Fan-out to any number of subscribers; a slow subscriber loses its oldest items, never
    blocks the publisher (the live feed recovers from the database with Last-Event-ID)."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._queues: set[asyncio.Queue[T]] = set()
        self._maxsize = maxsize
        self.dropped = 0

    def publish(self, item: T) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(item)

    def publish_many(self, items: list[T]) -> None:
        for item in items:
            self.publish(item)

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[T]]:
        queue: asyncio.Queue[T] = asyncio.Queue(self._maxsize)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)


class Hub:
    """The named topics of one daemon (hung on the app under one AppKey)."""

    def __init__(self) -> None:
        self.events: Topic[dict[str, Any]] = Topic()  # committed Twitch events
        self.streams: Topic[dict[str, Any]] = Topic()  # multistream target status changes
