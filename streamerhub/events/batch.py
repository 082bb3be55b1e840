"""One batch of the write path in one transaction: its SQL, and the commit that isolates a bad row.

A batch's events go to PostgreSQL as eight parallel arrays, the payload as the JSON text it
arrived in (a frame's text is never decoded and re-encoded on our side). ONE statement inserts
the raw rows (ON CONFLICT DO NOTHING: message_id and the event_key index dedupe) and projects
the rows it actually inserted into their typed tables (events/typed.py); stream.online/offline rows
follow in a second statement (see typed.STREAMS). Then dead letters and gap marks. Python reads
nothing back but the new rows' message ids.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from streamerhub.db import is_transient
from streamerhub.events.items import DeadLetter, Entry, GapMark, rejected
from streamerhub.events.normalise import BadEvent, Normalised, normalise
from streamerhub.events.typed import (
    DELETES,
    NEW_EVENT_COLUMNS,
    PROJECT_STORED,
    PROJECT_STORED_STREAMS,
    PROJECTIONS,
)
from streamerhub.log import get_logger

if TYPE_CHECKING:
    from streamerhub.db import Database

log = get_logger(__name__)

# received_at is left to the database's now(): the live feed reads rows in (received_at,
# message_id) order, so a row replayed from the spool must sort after what it already showed.
INSERT_EVENTS = f"""
WITH new_events AS (
    INSERT INTO twitch_events (message_id, subscription_type, subscription_version, channel_id,
                               occurred_at, event_key, backfilled, payload)
    SELECT i.message_id, i.subscription_type, i.subscription_version, i.channel_id,
           i.occurred_at::timestamptz, i.event_key, i.backfilled, i.document::jsonb -> 'payload'
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::boolean[], $8::text[])
           AS i(message_id, subscription_type, subscription_version, channel_id, occurred_at,
                event_key, backfilled, document)
        ON CONFLICT DO NOTHING
    RETURNING {NEW_EVENT_COLUMNS}),{PROJECTIONS}
SELECT message_id FROM new_events"""

INSERT_DEAD_LETTERS = """
INSERT INTO dead_letters (letter_key, received_at, source, reason, raw)
SELECT letter_key, received_at, source, reason, raw
  FROM jsonb_populate_recordset(NULL::dead_letters, $1::jsonb)
    ON CONFLICT (letter_key) DO NOTHING"""

INSERT_GAP_START = """
INSERT INTO eventsub_gaps (channel_id, started_at, reason)
SELECT $1, $2, $3
 WHERE NOT EXISTS (SELECT 1 FROM eventsub_gaps WHERE channel_id = $1 AND started_at = $2)"""

CLOSE_GAPS = """
UPDATE eventsub_gaps SET ended_at = $2
 WHERE channel_id = $1 AND ended_at IS NULL AND started_at <= $2"""

SELECT_RAW = """
SELECT message_id, subscription_type, subscription_version, occurred_at, backfilled, payload
  FROM twitch_events ORDER BY occurred_at, message_id"""


@dataclass(frozen=True)
class Committed:
    """What one committed transaction did: the events it stored (the first of each id; the
    duplicates left out), how many events it carried, the dead letters it wrote, its duration."""

    inserted: list[Normalised]
    events: int
    letters: int
    ms: float


async def commit_isolating(
    db: Database, entries: list[Entry], timeout: float, done: Callable[[Committed], None]
) -> None:
    """Commit the entries in one transaction; when the rows themselves are rejected, split until
    the bad one is found and keep it as a dead letter. `done` hears of every commit."""
    try:
        await commit(db, entries, timeout, done)
    except Exception as exc:
        if is_transient(exc):
            raise
        if len(entries) > 1:
            middle = len(entries) // 2
            await commit_isolating(db, entries[:middle], timeout, done)
            await commit_isolating(db, entries[middle:], timeout, done)
        elif isinstance(entries[0].item, DeadLetter):
            log.error("dead_letter_rejected", error=repr(exc), letter=entries[0].item.key)
        else:
            log.warning("event_rejected", error=repr(exc))
            await commit_isolating(db, [rejected(entries[0], exc)], timeout, done)


async def commit(
    db: Database, entries: list[Entry], timeout: float, done: Callable[[Committed], None]
) -> None:
    """write_batch() in a transaction of its own, within `timeout`."""
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        async with db.pool.acquire() as conn, conn.transaction():
            inserted, letters = await write_batch(conn, entries)
    events = sum(type(e.item) is Normalised for e in entries)
    done(Committed(inserted, events, letters, round((time.perf_counter() - started) * 1000, 2)))


async def write_batch(conn: Any, entries: list[Entry]) -> tuple[list[Normalised], int]:
    """Write one batch inside the caller's transaction; returns (inserted events, letters)."""
    events = [e.item for e in entries if type(e.item) is Normalised]
    inserted = await insert_events(conn, events) if events else []
    letters = [_letter_json(e.item, e.at) for e in entries if type(e.item) is DeadLetter]
    if letters:
        await conn.execute(INSERT_DEAD_LETTERS, letters)
    for mark in (e.item for e in entries if type(e.item) is GapMark):
        if mark.reason is not None:
            await conn.execute(INSERT_GAP_START, mark.channel_id, mark.at, mark.reason)
        else:
            await conn.execute(CLOSE_GAPS, mark.channel_id, mark.at)
    return inserted, len(letters)


async def insert_events(conn: Any, events: list[Normalised]) -> list[Normalised]:
    """Raw + typed rows for these events; returns the ones that were new (first of each id)."""
    raws = [item.raw for item in events]
    new_ids = {
        row[0]
        for row in await conn.fetch(
            INSERT_EVENTS,
            [r.message_id for r in raws],
            [r.subscription_type for r in raws],
            [r.subscription_version for r in raws],
            [r.channel_id for r in raws],
            [r.occurred_at for r in raws],
            [r.event_key for r in raws],
            [r.backfilled for r in raws],
            [item.document() for item in events],
        )
    }
    inserted = []
    for item in events:  # the same message_id twice in one batch is inserted and reported once
        if item.raw.message_id in new_ids:
            new_ids.discard(item.raw.message_id)
            inserted.append(item)
    streams = [i.raw.message_id for i in inserted if i.table == "twitch_streams"]
    if streams:
        await conn.execute(PROJECT_STORED_STREAMS, streams)
    return inserted


async def rebuild_typed(db: Database, chunk: int = 1000) -> tuple[int, int]:
    """Rebuild every typed table from twitch_events with the store's own projections
    (events/typed.py); returns (rows, skipped): a raw row whose event fails normalise() gets no
    typed row."""
    built = skipped = 0
    async with db.pool.acquire() as conn, conn.transaction():
        for delete in DELETES.values():
            await conn.execute(delete)
        streams: list[str] = []
        cursor = await conn.cursor(SELECT_RAW)
        while rows := await cursor.fetch(chunk):
            ids: list[str] = []
            for row in rows:
                try:
                    item = normalise(
                        row["message_id"],
                        row["subscription_type"],
                        row["subscription_version"],
                        row["occurred_at"].isoformat(),
                        row["payload"],
                        backfilled=row["backfilled"],
                    )
                except BadEvent:
                    skipped += 1
                    continue
                if item.table is not None:
                    (streams if item.table == "twitch_streams" else ids).append(item.raw.message_id)
            await conn.execute(PROJECT_STORED, ids)
            built += len(ids)
        # After every other typed row, as a live batch does (typed.STREAMS says why).
        for start in range(0, len(streams), chunk):
            await conn.execute(PROJECT_STORED_STREAMS, streams[start : start + chunk])
        built += len(streams)
    return built, skipped


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def _letter_json(letter: DeadLetter, at: float) -> dict[str, Any]:
    return {
        "letter_key": letter.key,
        "received_at": _iso(at),
        "source": letter.source,
        "reason": letter.reason,
        "raw": letter.raw,
    }
