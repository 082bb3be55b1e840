"""A stop (cancellation) in the middle of a gap's backfill leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import warnings
from typing import Any, AsyncIterator

from streamerhub.bot.backfill import FOLLOW_SCOPE, Channel, backfill_gap
from streamerhub.bot.eventsub import Gap


class SlowHelix:
    """Helix whose follower list never answers: the backfill is stopped while it waits."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def followers(self, channel_id: str) -> AsyncIterator[dict[str, Any]]:
        self.asked.set()
        await asyncio.sleep(3600)
        yield {}


async def test_a_stop_during_a_backfill_leaves_no_step_unawaited() -> None:
    # The steps after the one running used to be coroutines made up front: cancelled, they were
    # never awaited (a RuntimeWarning at garbage collection, an error under this suite).
    now = dt.datetime.now(dt.timezone.utc)
    helix = SlowHelix()
    gap = Gap("1000", now - dt.timedelta(minutes=5), "test", now)
    task = asyncio.create_task(
        backfill_gap(
            gap,
            Channel("1000", "streamer", "Streamer"),
            helix,  # type: ignore[arg-type]
            frozenset({FOLLOW_SCOPE}),
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
        )
    )
    await asyncio.wait_for(helix.asked.wait(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()  # an unawaited coroutine warns when it is collected
    unawaited = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert unawaited == []
