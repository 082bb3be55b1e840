"""The Events page's query: every stored event, filtered, keyset-paginated, exportable.

Pages walk (occurred_at, message_id) downwards, so page 10,000 costs what page 1 costs. With a
type filter, each type is read through the (subscription_type, occurred_at) index and the results
merged (LATERAL per type), which stays fast for rare types on millions of rows. There the channel
is compared as `channel_id || ''`: otherwise the planner may walk the channel's whole history
through (channel_id, occurred_at) looking for a rare type (179 ms for raids at 1M events, against
1 ms) — and a dedicated (channel, type, time) index would cost every insert of the writer.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass
from typing import Any, AsyncIterator

from streamerhub.db import Database
from streamerhub.events.text import describe, event_json, who

PAGE = 50
COLUMNS = ("message_id, subscription_type, channel_id, occurred_at, received_at, backfilled, "
           "payload")
USER_EXPR = ("lower(coalesce(payload #>> '{event,user_login}', "
             "payload #>> '{event,from_broadcaster_user_login}'))")
# Fixed clauses, each with its own parameter: the SQL text is chosen, never built from values.
# "$?" is replaced by the parameter's number.
CLAUSES = {
    "channel": "channel_id = $?",
    "user": f"{USER_EXPR} = $?",
    "since": "occurred_at >= $?",
    "until": "occurred_at < $?",
}
CHANNEL_UNINDEXED = "channel_id || '' = $?"
BEFORE = "(occurred_at, message_id COLLATE \"C\") < ($?, $?)"
ORDER = "ORDER BY occurred_at DESC, message_id COLLATE \"C\" DESC"
EXPORT_FIELDS = ("occurred_at_utc", "occurred_at_local", "type", "channel_id", "user", "text",
                 "backfilled", "message_id", "event")


@dataclass(frozen=True)
class EventFilter:
    channel: str | None = None
    types: tuple[str, ...] = ()
    user: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def _where(flt: EventFilter, params: list[Any], before: tuple[dt.datetime, str] | None,
           by_type: bool = False) -> str:
    parts = []
    clauses = {**CLAUSES, "channel": CHANNEL_UNINDEXED} if by_type else CLAUSES
    for name, clause in clauses.items():
        value = getattr(flt, name)
        if value is not None:
            params.append(value)
            parts.append(clause.replace("$?", f"${len(params)}"))
    if before is not None:
        params.extend(before)
        parts.append(BEFORE.replace("$?", f"${len(params) - 1}", 1).replace("$?", f"${len(params)}"))
    return " AND ".join(parts) or "true"


def build_page_query(flt: EventFilter, before: tuple[dt.datetime, str] | None,
                     limit: int) -> tuple[str, list[Any]]:
    """(SQL, params) for one page of events, newest first."""
    params: list[Any] = []
    where = _where(flt, params, before, by_type=bool(flt.types))
    params.append(limit)
    limit_ref = f"${len(params)}"
    if not flt.types:
        return f"SELECT {COLUMNS} FROM twitch_events WHERE {where} {ORDER} LIMIT {limit_ref}", params
    params.append(list(flt.types))
    sql = (f"SELECT e.* FROM unnest(${len(params)}::text[]) AS t(type) CROSS JOIN LATERAL ("
           f"SELECT {COLUMNS} FROM twitch_events WHERE subscription_type = t.type AND {where} "
           f"{ORDER} LIMIT {limit_ref}) e {ORDER} LIMIT {limit_ref}")
    return sql, params


async def page(db: Database, flt: EventFilter, before: tuple[dt.datetime, str] | None,
               limit: int = PAGE) -> tuple[list[Any], tuple[dt.datetime, str] | None]:
    """Rows of one page and the cursor of the next (None on the last page)."""
    sql, params = build_page_query(flt, before, limit + 1)
    async with db.pool.acquire() as conn:
        rows = list(await conn.fetch(sql, *params))
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = (rows[-1]["occurred_at"], rows[-1]["message_id"]) if more and rows else None
    return rows, nxt


async def export_rows(db: Database, flt: EventFilter) -> AsyncIterator[Any]:
    """Every row of the filter, newest first, read through a server-side cursor (constant memory)."""
    sql, params = build_page_query(flt, None, 2**62)
    async with db.pool.acquire() as conn, conn.transaction():
        async for row in conn.cursor(sql, *params, prefetch=1000):
            yield row


def export_record(row: Any, tz: dt.tzinfo) -> dict[str, Any]:
    event = (row["payload"] or {}).get("event") or {}
    occurred: dt.datetime = row["occurred_at"]
    return {"occurred_at_utc": occurred.astimezone(dt.timezone.utc).isoformat(),
            "occurred_at_local": occurred.astimezone(tz).isoformat(),
            "type": row["subscription_type"], "channel_id": row["channel_id"],
            "user": who(event), "text": describe(row["subscription_type"], event),
            "backfilled": bool(row["backfilled"]), "message_id": row["message_id"],
            "event": event}


def csv_chunk(records: list[dict[str, Any]], header: bool) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, EXPORT_FIELDS, lineterminator="\n")
    if header:
        writer.writeheader()
    for record in records:
        writer.writerow({**record, "event": json.dumps(record["event"], separators=(",", ":"))})
    return out.getvalue().encode()


def rows_json(rows: list[Any], tz: dt.tzinfo) -> list[dict[str, Any]]:
    return [event_json(r, tz) for r in rows]
