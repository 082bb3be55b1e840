"""Read helpers over the event log for the bot, the CLI and the composition root.

The event log (twitch_events, the typed twitch_* tables, eventsub_gaps) belongs to events/; other
wings ask these functions rather than naming its tables. The one write here is
`note_gap_backfilled`: the gap row records how many events its backfill recovered, a fact only
known once the backfilled events are committed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping

from streamerhub.db import Database


@dataclass(frozen=True)
class GapRecord:
    """One stored capture gap of a channel (eventsub_gaps)."""

    channel_id: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    reason: str
    backfilled: int
    backfilled_at: dt.datetime | None


async def open_gap(db: Database, channel_id: str) -> tuple[dt.datetime, str] | None:
    """(started_at, reason) of the channel's oldest gap still open, if any."""
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow(OPEN_GAP, channel_id)
    return (row["started_at"], row["reason"]) if row is not None else None


async def last_received(db: Database, channel_id: str) -> dt.datetime | None:
    """The channel's last sign of life, by Twitch's clock: the message timestamp of its newest
    live event, or the end of its newest gap. Not received_at: a row replayed from the spool
    gets the replay's time, which would shrink the gap a crash during an outage leaves."""
    async with db.pool.acquire() as conn:
        last: dt.datetime | None = await conn.fetchval(LAST_RECEIVED, channel_id)
    return last


async def note_gap_backfilled(
    db: Database, channel_id: str, started_at: dt.datetime, message_ids: list[str]
) -> int | None:
    """Mark the gap backfilled, adding how many of `message_ids` are stored (only what was new:
    a follow also received live dedupes on its event key). The count, or None without that gap."""
    async with db.pool.acquire() as conn:
        count: int | None = await conn.fetchval(GAP_BACKFILLED, channel_id, started_at, message_ids)
    return count


class StreamHistory:
    """The newest stored stream.online/offline of a channel (backfill's StreamHistory)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def last_stream(self, channel_id: str) -> tuple[str, str | None] | None:
        async with self.db.pool.acquire() as conn:
            row = await conn.fetchrow(LAST_STREAM, channel_id)
        return (row["kind"], row["stream_id"]) if row else None

    async def last_channel_update(self, channel_id: str) -> tuple[str, str | None] | None:
        """(title, category id) of the newest stored channel.update, if any."""
        async with self.db.pool.acquire() as conn:
            row = await conn.fetchrow(LAST_CHANNEL_UPDATE, channel_id)
        return (row["title"], row["category_id"]) if row else None

    async def bits_stored(
        self, channel_id: str, started_at: dt.datetime, ended_at: dt.datetime
    ) -> dict[str, int]:
        """Bits per user stored for [started_at, ended_at): cheers heard and the aggregates of
        earlier backfills of that period."""
        async with self.db.pool.acquire() as conn:
            rows = await conn.fetch(BITS_STORED, channel_id, started_at, ended_at)
        return {r["user_id"]: int(r["bits"]) for r in rows}


async def latest_gaps(db: Database) -> dict[str, GapRecord]:
    """Each channel's newest gap, by channel id."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(LATEST_GAPS)
    return {r["channel_id"]: _gap(r) for r in rows}


async def recent_gaps(db: Database, limit: int = 10) -> list[GapRecord]:
    """The newest gaps of every channel, newest first."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(RECENT_GAPS, limit)
    return [_gap(r) for r in rows]


async def events_received_since(db: Database, since: dt.datetime) -> dict[str, int]:
    """How many events each channel received since `since` (channels with none are absent)."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(EVENTS_SINCE, since)
    return {r["channel_id"]: int(r["n"]) for r in rows}


async def events_stored(db: Database) -> int:
    """How many events the log holds in all."""
    async with db.pool.acquire() as conn:
        count: int = await conn.fetchval(EVENTS_STORED)
    return count


def _gap(row: Mapping[str, Any]) -> GapRecord:
    return GapRecord(
        row["channel_id"],
        row["started_at"],
        row["ended_at"],
        row["reason"],
        int(row["backfilled"] or 0),
        row["backfilled_at"],
    )


GAP_BACKFILLED = """
WITH stored AS (SELECT count(*) AS n FROM twitch_events WHERE message_id = ANY($3::text[]))
UPDATE eventsub_gaps SET backfilled_at = now(), backfilled = backfilled + stored.n
  FROM stored WHERE channel_id = $1 AND started_at = $2
RETURNING stored.n"""

OPEN_GAP = """
SELECT started_at, reason FROM eventsub_gaps WHERE channel_id = $1 AND ended_at IS NULL
 ORDER BY started_at LIMIT 1"""

# The last sign of life: the newest live event, or the end of the newest gap (a resubscription).
LAST_RECEIVED = """
SELECT greatest((SELECT max(occurred_at) FROM twitch_events
                  WHERE channel_id = $1 AND NOT backfilled),
                (SELECT max(ended_at) FROM eventsub_gaps WHERE channel_id = $1))"""

LAST_STREAM = """
SELECT kind, stream_id FROM twitch_streams WHERE channel_id = $1
 ORDER BY occurred_at DESC LIMIT 1"""

LAST_CHANNEL_UPDATE = """
SELECT title, category_id FROM twitch_channel_updates WHERE channel_id = $1
 ORDER BY occurred_at DESC LIMIT 1"""

LATEST_GAPS = """
SELECT DISTINCT ON (channel_id) channel_id, started_at, ended_at, reason, backfilled,
       backfilled_at
  FROM eventsub_gaps ORDER BY channel_id, started_at DESC"""

RECENT_GAPS = """
SELECT channel_id, started_at, ended_at, reason, backfilled, backfilled_at
  FROM eventsub_gaps ORDER BY started_at DESC LIMIT $1"""

EVENTS_SINCE = """
SELECT channel_id, count(*) AS n FROM twitch_events WHERE received_at >= $1 GROUP BY channel_id"""

EVENTS_STORED = "SELECT count(*) FROM twitch_events"

# Bits per user of a period: cheers heard live (or replayed) plus the Bits aggregates an earlier
# backfill stored for the same period (their period_started_at is the period's start).
BITS_STORED = """
SELECT user_id, sum(bits) AS bits FROM (
    SELECT user_id, bits FROM twitch_cheers
     WHERE channel_id = $1 AND occurred_at >= $2 AND occurred_at < $3 AND user_id IS NOT NULL
    UNION ALL
    SELECT payload -> 'event' ->> 'user_id', (payload -> 'event' ->> 'bits')::integer
      FROM twitch_events
     WHERE subscription_type = 'streamerhub.bits.aggregate' AND channel_id = $1
       AND (payload -> 'event' ->> 'period_started_at')::timestamptz = $2
) stored GROUP BY user_id
"""
