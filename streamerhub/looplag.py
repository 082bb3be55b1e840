"""Event-loop lag: how late the loop runs a timer that was due. Capture (the EventSub reader, its
keepalive) shares the loop with every request, so this is the one number that says whether a
handler held the loop too long. Measured all the time, shown on /healthz, logged past a threshold.

Lateness has two causes: the daemon's own code running (a handler holding the loop) and the
machine giving the process no CPU (other programs). `busy` is the part of each lag the loop's
thread spent running code, so the daemon's own share can be told from a crowded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from typing import Any, AsyncIterator

from streamerhub.log import get_logger

log = get_logger(__name__)

INTERVAL_S = 0.025  # one probe every 25 ms: 40 cheap wake-ups a second (~0.1 % of a core)
WINDOW = 2400  # the last minute of probes
RECENT = 200  # the last 5 s of them: a p99 that one hiccup alone does not make
WARN_MS = 100.0  # a capture keepalive tolerates seconds; 100 ms already shows in pages
WARN_EVERY_S = 10.0  # at most one warning this often, however long the lag lasts


class LoopLag:
    """Samples the loop's lag and its busy part, keeping the last `window` of each (ms)."""

    def __init__(
        self, interval: float = INTERVAL_S, warn_ms: float = WARN_MS, window: int = WINDOW
    ) -> None:
        self.interval, self.warn_ms = interval, warn_ms
        self.samples, self.busy = Ring(window), Ring(window)
        self.worst_ms = 0.0
        self._warned_at = float("-inf")

    def record(self, lag_ms: float, busy_ms: float | None = None) -> None:
        busy_ms = lag_ms if busy_ms is None else min(lag_ms, busy_ms)
        self.samples.append(lag_ms)
        self.busy.append(busy_ms)
        self.worst_ms = max(self.worst_ms, lag_ms)
        now = time.monotonic()
        if lag_ms > self.warn_ms and now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "event_loop_lag",
                lag_ms=round(lag_ms, 1),
                busy_ms=round(busy_ms, 1),
                threshold_ms=self.warn_ms,
            )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, cpu = loop.time() + self.interval, time.thread_time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, (loop.time() - due) * 1000)
            # CPU this thread used while the timer was due or late, less the sleep it asked for
            busy = max(0.0, (time.thread_time() - cpu) * 1000)
            self.record(lag, busy)

    def snapshot(self) -> dict[str, Any]:
        """p50/p99/max of the last minute, p99/max of the last RECENT probes (what a request
        just did, start-up left out) and their busy part, the worst since start, in ms."""
        recent = _stats(self.samples.last(RECENT))
        busy = _stats(self.busy.last(RECENT))
        return {
            **_stats(self.samples.last()),
            "recent_p99_ms": recent["p99_ms"],
            "recent_max_ms": recent["max_ms"],
            "recent_busy_p99_ms": busy["p99_ms"],
            "recent_busy_max_ms": busy["max_ms"],
            "worst_ms": round(self.worst_ms, 1),
        }


class Ring:
    """The last `size` floats, in one array allocated up front: 40 samples a second as Python
    floats would be scattered through the memory a flood fills and keep it mapped after it."""

    def __init__(self, size: int) -> None:
        self._values = array("d", bytes(8 * size))
        self._next = self._count = 0

    def append(self, value: float) -> None:
        self._values[self._next] = value
        self._next = (self._next + 1) % len(self._values)
        self._count = min(self._count + 1, len(self._values))

    def last(self, n: int | None = None) -> list[float]:
        """The last n values (all kept when None), oldest first."""
        n = self._count if n is None else min(n, self._count)
        end = self._next + (len(self._values) if self._next < n else 0)
        values = self._values
        return [values[i % len(values)] for i in range(end - n, end)]

    def __len__(self) -> int:
        return self._count


def _stats(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "samples": 0}
    return {
        "p50_ms": round(ordered[len(ordered) // 2], 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max_ms": round(ordered[-1], 1),
        "samples": len(ordered),
    }


@contextlib.asynccontextmanager
async def monitoring(lag: LoopLag) -> AsyncIterator[LoopLag]:
    """Run the probe for the life of the block."""
    task = asyncio.create_task(lag.run(), name="looplag")
    try:
        yield lag
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
