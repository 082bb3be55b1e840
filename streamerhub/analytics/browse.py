"""Reading the event log for the dashboard: the Events page's filtered, keyset-paginated browser,
the live feed's reads by arrival, and the events during one stream.

Pages walk (occurred_at, message_id) downwards, so page 10,000 costs what page 1 costs. With a
type filter, each type is read through the (subscription_type, occurred_at) index and the results
merged (LATERAL per type), which stays fast for rare types on millions of rows. There the channel
is compared as `channel_id || ''`: otherwise the planner may walk the channel's whole history
through (channel_id, occurred_at) looking for a rare type (179 ms for raids at 1M events, against
1 ms) — and a dedicated (channel, type, time) index would cost every insert of the writer.

The live feed reads by (received_at, message_id) in byte order (COLLATE "C"), the order the store
commits in, so Python and PostgreSQL agree on a cursor whatever the database's collation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping

from streamerhub.db import Database

EventRow = Mapping[str, Any]  # a twitch_events row as read here (asyncpg Record)
Cursor = tuple[dt.datetime, str]  # (occurred_at or received_at, message_id)

PAGE = 50
COLUMNS = "message_id, subscription_type, channel_id, occurred_at, received_at, backfilled, payload"
USER_EXPR = (
    "lower(coalesce(payload #>> '{event,user_login}', "
    "payload #>> '{event,from_broadcaster_user_login}'))"
)
# Fixed clauses, each with its own parameter: the SQL text is chosen, never built from values.
# "$?" is replaced by the parameter's number.
CLAUSES = {
    "channel": "channel_id = $?",
    "types": "subscription_type = ANY($?::text[])",
    "user": f"{USER_EXPR} = $?",
    "since": "occurred_at >= $?",
    "until": "occurred_at < $?",
}
CHANNEL_UNINDEXED = "channel_id || '' = $?"
BEFORE = '(occurred_at, message_id COLLATE "C") < ($?, $?)'
ORDER = 'ORDER BY occurred_at DESC, message_id COLLATE "C" DESC'


@dataclass(frozen=True)
class EventFilter:
    """Which events: a channel, subscription types (none: all), a user login, [since, until)."""

    channel: str | None = None
    types: tuple[str, ...] = ()
    user: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def where_clause(
    flt: EventFilter,
    params: list[Any],
    *,
    types: bool = True,
    before: Cursor | None = None,
    by_type: bool = False,
) -> str:
    """The filter's WHERE condition on twitch_events, its values appended to `params`.

    `types=False` leaves the type out (the LATERAL page query applies it per type); `by_type`
    compares the channel without its index (see the module's docstring).
    """
    parts = []
    clauses = {**CLAUSES, "channel": CHANNEL_UNINDEXED} if by_type else CLAUSES
    for name, clause in clauses.items():
        value = getattr(flt, name)
        if name == "types":
            if not types or not value:
                continue
            value = list(value)
        if value is not None:
            params.append(value)
            parts.append(clause.replace("$?", f"${len(params)}"))
    if before is not None:
        params.extend(before)
        parts.append(
            BEFORE.replace("$?", f"${len(params) - 1}", 1).replace("$?", f"${len(params)}")
        )
    return " AND ".join(parts) or "true"


def build_page_query(flt: EventFilter, before: Cursor | None, limit: int) -> tuple[str, list[Any]]:
    """(SQL, params) for one page of events, newest first."""
    params: list[Any] = []
    where = where_clause(flt, params, types=False, before=before, by_type=bool(flt.types))
    params.append(limit)
    limit_ref = f"${len(params)}"
    if not flt.types:
        return (
            f"SELECT {COLUMNS} FROM twitch_events WHERE {where} {ORDER} LIMIT {limit_ref}",
            params,
        )
    params.append(list(flt.types))
    sql = (
        f"SELECT e.* FROM unnest(${len(params)}::text[]) AS t(type) CROSS JOIN LATERAL ("
        f"SELECT {COLUMNS} FROM twitch_events WHERE subscription_type = t.type AND {where} "
        f"{ORDER} LIMIT {limit_ref}) e {ORDER} LIMIT {limit_ref}"
    )
    return sql, params


async def page(
    db: Database, flt: EventFilter, before: Cursor | None, limit: int = PAGE
) -> tuple[list[EventRow], Cursor | None]:
    """Rows of one page, newest first, and the cursor of the next (None on the last page)."""
    sql, params = build_page_query(flt, before, limit + 1)
    async with db.pool.acquire() as conn:
        rows: list[EventRow] = list(await conn.fetch(sql, *params))
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = (rows[-1]["occurred_at"], rows[-1]["message_id"]) if more and rows else None
    return rows, nxt


# ----------------------------------------------------------------------------- by arrival

AFTER = f"""
SELECT {COLUMNS} FROM twitch_events
 WHERE (received_at, message_id COLLATE "C") > ($1, $2)
 ORDER BY received_at, message_id COLLATE "C" LIMIT $3"""
AFTER_FILTERED = f"""
SELECT {COLUMNS} FROM twitch_events
 WHERE (received_at, message_id COLLATE "C") > ($1, $2)
   AND ($4::text[] IS NULL OR subscription_type = ANY($4))
   AND ($5::text IS NULL OR channel_id = $5)
 ORDER BY received_at, message_id COLLATE "C" LIMIT $3"""
# The backlog looks a week back at most: a filter on a type that never happens must not walk
# years of history every time a dashboard opens.
LATEST = f"""
SELECT * FROM (
    SELECT {COLUMNS} FROM twitch_events
     WHERE received_at > now() - interval '7 days'
       AND ($2::text[] IS NULL OR subscription_type = ANY($2))
       AND ($3::text IS NULL OR channel_id = $3)
     ORDER BY received_at DESC, message_id COLLATE "C" DESC LIMIT $1) recent
 ORDER BY received_at, message_id COLLATE "C"
"""
NEWEST = """
SELECT received_at, message_id FROM twitch_events
 ORDER BY received_at DESC, message_id COLLATE "C" DESC LIMIT 1"""


async def newest_arrival(db: Database) -> Cursor | None:
    """(received_at, message_id) of the last event stored, None when there is none."""
    async with db.pool.acquire() as conn:
        newest = await conn.fetchrow(NEWEST)
    return (newest["received_at"], newest["message_id"]) if newest else None


async def arrived_after(
    db: Database,
    after: Cursor,
    limit: int,
    types: list[str] | None = None,
    channel: str | None = None,
) -> list[EventRow]:
    """Events stored after the cursor, in arrival order, at most `limit`."""
    async with db.pool.acquire() as conn:
        if types is None and channel is None:
            return list(await conn.fetch(AFTER, *after, limit))
        return list(await conn.fetch(AFTER_FILTERED, *after, limit, types, channel))


async def latest_arrivals(
    db: Database, limit: int, types: list[str] | None = None, channel: str | None = None
) -> list[EventRow]:
    """The last `limit` events stored in the past week, oldest first."""
    async with db.pool.acquire() as conn:
        return list(await conn.fetch(LATEST, limit, types, channel))


# ----------------------------------------------------------------------------- one stream

DURING = f"""
SELECT {COLUMNS}
  FROM twitch_events
 WHERE channel_id = $1 AND occurred_at >= $2 AND occurred_at < $3
   AND subscription_type NOT LIKE '%.progress'
 ORDER BY occurred_at LIMIT 1000"""


async def events_during(
    conn: Any, channel_id: str, start: dt.datetime, end: dt.datetime
) -> list[EventRow]:
    """The channel's events (progress updates left out) in [start, end), oldest first, 1,000 at
    most: the Stream page's list and chart markers."""
    return list(await conn.fetch(DURING, channel_id, start, end))
