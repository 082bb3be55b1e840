"""Chat text retention: the words of chat messages are emptied after [events] chat_text_days.

Only the text goes: each message's row (who, when, Bits, shared-chat source) stays in
twitch_events and twitch_chat_messages, so every count, rollup and per-stream figure built from
chat is the same before and after. Both copies of the text are emptied: the typed column and the
raw payload's event.message (text and fragments). Old rows are found through partial indexes of
the typed tables (rows whose text is still there), and emptied a batch at a time so a first run
over years of chat never holds long locks.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator

from streamerhub.db import Database, is_transient
from streamerhub.log import get_logger

log = get_logger(__name__)

PRUNE_EVERY = 3600.0  # seconds between runs; text is kept to the day, not to the hour
PRUNE_BATCH = 5000

# One batch of one typed table: empty its text and the raw payload's, return how many.
_PRUNE = """
WITH old AS (
    SELECT message_id FROM {table}
     WHERE text IS NOT NULL AND occurred_at < $1
     ORDER BY occurred_at LIMIT $2),
typed AS (
    UPDATE {table} t SET text = NULL FROM old WHERE t.message_id = old.message_id),
raw AS (
    UPDATE twitch_events e
       SET payload = jsonb_set(e.payload, '{{event,message}}',
                               '{{"text": "", "fragments": []}}'::jsonb)
      FROM old
     WHERE e.message_id = old.message_id
       AND jsonb_typeof(e.payload -> 'event' -> 'message') = 'object')
SELECT count(*) FROM old"""
_TABLES = ("twitch_chat_messages", "twitch_chat_notifications")
PRUNES = {table: _PRUNE.format(table=table) for table in _TABLES}


async def prune_chat_text(db: Database, days: int, now: datetime | None = None) -> int:
    """Empty the text of chat messages and notifications older than `days` days; how many."""
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    emptied = 0
    async with db.pool.acquire() as conn:
        for statement in PRUNES.values():
            while True:
                done = int(await conn.fetchval(statement, cutoff, PRUNE_BATCH))
                emptied += done
                if done < PRUNE_BATCH:
                    break
    if emptied:
        log.info("chat_text_pruned", messages=emptied, days=days)
    return emptied


async def _prune_forever(db: Database, days: int, every: float) -> None:
    while True:
        try:
            await prune_chat_text(db, days)
        except Exception as exc:  # noqa: BLE001 - never stops capture: the text waits a round
            log.warning("chat_text_prune_failed", error=str(exc), transient=is_transient(exc))
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def chat_retention(
    db: Database, days: int, every: float = PRUNE_EVERY
) -> AsyncIterator[None]:
    """Prune chat text every `every` s while inside; days = 0 keeps it forever."""
    if days <= 0:
        yield
        return
    task = asyncio.create_task(_prune_forever(db, days, every), name="chat_text_retention")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
