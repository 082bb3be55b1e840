"""Streamed exports of events, sessions and series as CSV or JSON, in constant memory.

Each export is an async generator of byte chunks (for `streamerhub export`, the HTTP API and the
Events page's export, which is `export_events` with the page's filter):
rows come through a server-side cursor a few hundred at a time. Every instant is given twice, in
UTC (`…_utc`, ending in Z) and on the streamer's wall clock (`…_local`, with its offset). The
column names below are a stable interface: add columns at the end, never rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Protocol, Sequence

from streamerhub.analytics.browse import EventFilter, where_clause
from streamerhub.analytics.periods import (
    BUCKET_SIZES,
    DAY,
    FIRST_YEAR,
    LAST_YEAR,
    MAX_BUCKETS,
    UTC,
    Calendar,
    Period,
    estimate_buckets,
    parse_day,
    range_period,
)
from streamerhub.analytics.queries import first_data, time_series
from streamerhub.analytics.sessions import SESSION_COLUMNS, SESSION_JOINS, _summary
from streamerhub.errors import InvalidInput

FORMATS = ("csv", "json")
KINDS = ("events", "sessions", "series")
CHUNK_ROWS = 500
ENCODE_ROWS = 100  # rows encoded in one turn of the event loop (~5 ms)
SERIES_CHUNK = 100  # series rows are built from Python objects, not fetched: smaller steps

EVENT_COLUMNS = (
    "message_id",
    "channel_id",
    "type",
    "version",
    "occurred_at_utc",
    "occurred_at_local",
    "received_at_utc",
    "user_id",
    "user_login",
    "user_name",
    "tier",
    "bits",
    "gift_total",
    "raid_viewers",
    "backfilled",
    "event",
    "amount",
    "currency",
)
SESSION_EXPORT_COLUMNS = (
    "channel_id",
    "stream_id",
    "started_at_utc",
    "started_at_local",
    "ended_at_utc",
    "ended_at_local",
    "duration_s",
    "live",
    "title",
    "category",
    "viewers_avg",
    "viewers_peak",
    "watch_hours",
    "follows",
    "subs_new",
    "subs_resub",
    "subs_gifted",
    "cheers",
    "bits",
    "raids_in",
    "raid_viewers_in",
    "samples",
    "sampling_gaps",
    "start_source",
    "end_source",
)
SERIES_COLUMNS = (
    "channel_id",
    "bucket",
    "start_utc",
    "start_local",
    "end_utc",
    "end_local",
    "follows",
    "subs_new",
    "subs_resub",
    "subs_gifted",
    "cheers",
    "bits",
    "raids_in",
    "viewers_avg",
    "viewers_peak",
    "watch_hours",
    "hours_streamed",
    "followers_total",
    "gap",
    "followers_net",
    "chat_messages",
    "ad_breaks",
)


class ExportError(InvalidInput):
    """An export that cannot be made (unknown kind or format)."""


# A follow counts at Twitch's followed_at, in the charts (migration 0003) and here alike: the
# message time of a redelivered or late follow can fall on another day than the follow itself.
EVENTS = """
SELECT * FROM (
    SELECT message_id, channel_id, subscription_type, subscription_version, occurred_at,
           received_at, backfilled, payload -> 'event' AS event
      FROM twitch_events
     WHERE {where} AND subscription_type <> 'channel.follow'
    UNION ALL
    SELECT message_id, channel_id, subscription_type, subscription_version,
           followed_at AS occurred_at, received_at, backfilled, payload -> 'event' AS event
      FROM (SELECT e.*, coalesce(f.followed_at, e.occurred_at) AS followed_at  -- never dropped
              FROM twitch_events e
              LEFT JOIN twitch_follows f ON f.message_id = e.message_id
             WHERE e.subscription_type = 'channel.follow') e
     WHERE {follow_where}) x
 ORDER BY occurred_at {order}, message_id {order}"""

SESSIONS = f"""
SELECT {SESSION_COLUMNS}
  FROM stream_sessions s {SESSION_JOINS}
 WHERE s.started_at < $2 AND coalesce(s.ended_at, 'infinity') > $1
   AND ($3::text IS NULL OR s.channel_id = $3)
 ORDER BY s.started_at, s.channel_id, s.stream_id"""


def utc_text(instant: datetime | None) -> str | None:
    if instant is None:
        return None
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def local_text(calendar: Calendar, instant: datetime | None) -> str | None:
    return None if instant is None else calendar.local(instant).isoformat()


# ----------------------------------------------------------------------------- rows


def event_row(row: Any, calendar: Calendar) -> dict[str, Any]:
    event = row["event"] or {}
    if isinstance(event, str):
        event = json.loads(event)
    raid = row["subscription_type"] == "channel.raid"
    prefix = _PERSON.get(row["subscription_type"], "")
    found = event.get("amount")
    amount: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "message_id": row["message_id"],
        "channel_id": row["channel_id"],
        "type": row["subscription_type"],
        "version": row["subscription_version"],
        "occurred_at_utc": utc_text(row["occurred_at"]),
        "occurred_at_local": local_text(calendar, row["occurred_at"]),
        "received_at_utc": utc_text(row["received_at"]),
        "user_id": event.get(f"{prefix}user_id"),
        "user_login": event.get(f"{prefix}user_login"),
        "user_name": event.get(f"{prefix}user_name"),
        "tier": event.get("tier"),
        "bits": event.get("bits"),
        "gift_total": event.get("total")
        if row["subscription_type"] == "channel.subscription.gift"
        else None,
        "raid_viewers": event.get("viewers") if raid else None,
        "backfilled": row["backfilled"],
        "event": event,
        "amount": _units(amount),
        "currency": amount.get("currency"),
    }


# Where the person an event is about sits, when not in user_* (raids, chat, shoutouts, ads).
_PERSON = {
    "channel.raid": "from_broadcaster_",
    "channel.chat.message": "chatter_",
    "channel.chat.notification": "chatter_",
    "channel.shoutout.create": "to_broadcaster_",
    "channel.shoutout.receive": "from_broadcaster_",
    "channel.ad_break.begin": "requester_",
}


def _units(amount: dict[str, Any]) -> str | None:
    """A Twitch amount (value in minor units, decimal_places) as exact text: 500, 2 → '5.00'."""
    value, places = amount.get("value"), amount.get("decimal_places")
    if not isinstance(value, int) or not isinstance(places, int) or not 0 <= places <= 8:
        return None
    sign, digits = ("-" if value < 0 else ""), str(abs(value)).rjust(places + 1, "0")
    return sign + (f"{digits[:-places]}.{digits[-places:]}" if places else digits)


def session_row(row: Any, calendar: Calendar, now: datetime) -> dict[str, Any]:
    s = _summary(row, now)
    return {
        "channel_id": s.channel_id,
        "stream_id": s.stream_id,
        "started_at_utc": utc_text(s.started_at),
        "started_at_local": local_text(calendar, s.started_at),
        "ended_at_utc": utc_text(s.ended_at),
        "ended_at_local": local_text(calendar, s.ended_at),
        "duration_s": s.duration_s,
        "live": s.live,
        "title": s.title,
        "category": s.category,
        "viewers_avg": s.viewers_avg,
        "viewers_peak": s.viewers_peak,
        "watch_hours": s.watch_hours,
        "follows": s.follows,
        "subs_new": s.subs_new,
        "subs_resub": s.subs_resub,
        "subs_gifted": s.subs_gifted,
        "cheers": s.cheers,
        "bits": s.bits,
        "raids_in": s.raids_in,
        "raid_viewers_in": s.raid_viewers_in,
        "samples": s.samples,
        "sampling_gaps": s.sampling_gaps,
        "start_source": s.start_source,
        "end_source": s.end_source,
    }


# ----------------------------------------------------------------------------- encoders


class _Encoder:
    """Turns dict rows into CSV (header first) or a JSON array, chunk by chunk."""

    def __init__(self, fmt: str, columns: Sequence[str]) -> None:
        if fmt not in FORMATS:
            raise ExportError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
        self.fmt, self.columns, self.count = fmt, columns, 0

    def begin(self) -> bytes:
        if self.fmt == "json":
            return b"["
        return self._csv([list(self.columns)])

    def rows(self, rows: Iterable[dict[str, Any]]) -> bytes:
        if self.fmt == "json":
            parts = []
            for row in rows:
                parts.append(
                    ("\n" if self.count == 0 else ",\n")
                    + json.dumps({c: row[c] for c in self.columns}, ensure_ascii=False)
                )
                self.count += 1
            return "".join(parts).encode()
        lines = [[_csv_value(row[c]) for c in self.columns] for row in rows]
        self.count += len(lines)
        return self._csv(lines)

    def end(self) -> bytes:
        if self.fmt != "json":
            return b""
        return b"\n]\n" if self.count else b"]\n"

    @staticmethod
    def _csv(lines: list[list[Any]]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerows(lines)
        return buf.getvalue().encode()


# A spreadsheet runs a cell starting with one of these as a formula (a chatter named
# "=HYPERLINK(…)" would run in the streamer's Excel); a leading ' makes it plain text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


# ----------------------------------------------------------------------------- exports


@contextlib.asynccontextmanager
async def _connection(conn: Any) -> AsyncIterator[Any]:
    """A connection in a transaction (cursors need one), from a pool or as given."""
    if hasattr(conn, "acquire"):
        async with conn.acquire() as acquired, acquired.transaction():
            yield acquired
    else:
        async with conn.transaction():
            yield conn


async def _cursor_rows(conn: Any, query: str, args: Sequence[Any]) -> AsyncIterator[list[Any]]:
    """CHUNK_ROWS rows a round trip, handed on ENCODE_ROWS at a time with a turn of the loop
    between: encoding 500 events at once held the loop (and capture) for ~40 ms."""
    async with _connection(conn) as c:
        cursor = await c.cursor(query, *args)
        while rows := await cursor.fetch(CHUNK_ROWS):
            for i in range(0, len(rows), ENCODE_ROWS):
                yield rows[i : i + ENCODE_ROWS]
                await asyncio.sleep(0)


async def export_events(
    conn: Any,
    calendar: Calendar,
    start: datetime | None,
    end: datetime | None,
    fmt: str = "csv",
    channel_id: str | None = None,
    *,
    types: Sequence[str] = (),
    user: str | None = None,
    newest_first: bool = False,
) -> AsyncIterator[bytes]:
    """Every stored event (raw, all types unless `types`) in [start, end): at occurred_at, a follow
    at its followed_at as in the charts; oldest first (`newest_first`: as the Events page lists
    them); `user` is a login."""
    enc = _Encoder(fmt, EVENT_COLUMNS)
    args: list[Any] = []
    flt = EventFilter(channel_id, tuple(types), user, start, end)
    where = where_clause(flt, args)
    follow_where = where_clause(EventFilter(channel_id, tuple(types), user), args)
    for bound, op in ((start, ">="), (end, "<")):
        if bound is not None:
            args.append(bound)
            follow_where += f" AND followed_at {op} ${len(args)}"
    query = EVENTS.format(
        where=where, follow_where=follow_where, order="DESC" if newest_first else "ASC"
    )
    yield enc.begin()
    async for rows in _cursor_rows(conn, query, args):
        yield enc.rows(event_row(r, calendar) for r in rows)
    yield enc.end()


async def export_sessions(
    conn: Any,
    calendar: Calendar,
    start: datetime,
    end: datetime,
    fmt: str = "csv",
    channel_id: str | None = None,
    now: datetime | None = None,
) -> AsyncIterator[bytes]:
    """Stream sessions overlapping [start, end), oldest first."""
    now = now or datetime.now(UTC)
    enc = _Encoder(fmt, SESSION_EXPORT_COLUMNS)
    yield enc.begin()
    async for rows in _cursor_rows(conn, SESSIONS, [start, end, channel_id]):
        yield enc.rows(session_row(r, calendar, now) for r in rows)
    yield enc.end()


async def export_series(
    conn: Any, channel_id: str, period: Period, fmt: str = "csv", now: datetime | None = None
) -> AsyncIterator[bytes]:
    """The period's time series, one row per bucket (a few hundred rows at most)."""
    enc = _Encoder(fmt, SERIES_COLUMNS)
    cal = period.calendar
    yield enc.begin()
    if hasattr(conn, "acquire"):
        async with conn.acquire() as c:
            series = await time_series(c, channel_id, period, now)
    else:
        series = await time_series(conn, channel_id, period, now)
    for i in range(0, len(series.points), SERIES_CHUNK):
        # Between chunks the loop gets a turn: a response write does not wait while the socket
        # takes the bytes, so 2000 rows would otherwise be encoded in one go (~50 ms).
        await asyncio.sleep(0)
        yield enc.rows(
            {
                "channel_id": channel_id,
                "bucket": period.bucket,
                "start_utc": utc_text(p.start),
                "start_local": local_text(cal, p.start),
                "end_utc": utc_text(p.end),
                "end_local": local_text(cal, p.end),
                "follows": p.follows,
                "subs_new": p.subs_new,
                "subs_resub": p.subs_resub,
                "subs_gifted": p.subs_gifted,
                "cheers": p.cheers,
                "bits": p.bits,
                "raids_in": p.raids_in,
                "viewers_avg": p.viewers_avg,
                "viewers_peak": p.viewers_peak,
                "watch_hours": p.watch_hours,
                "hours_streamed": p.hours_streamed,
                "followers_total": p.followers_total,
                "gap": p.gap,
                "followers_net": p.followers_net,
                "chat_messages": p.chat_messages,
                "ad_breaks": p.ad_breaks,
            }
            for p in series.points[i : i + SERIES_CHUNK]
        )
    yield enc.end()


def check_export(kind: str, fmt: str) -> None:
    """Refuse an unknown kind or format before anything is written."""
    if kind not in KINDS:
        raise ExportError(f"unknown export {kind!r}: one of {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")


def media_type(fmt: str) -> str:
    """Content-Type for an HTTP response carrying this export."""
    return "text/csv; charset=utf-8" if fmt == "csv" else "application/json"


# ----------------------------------------------------------------------------- requests
# One reading of "what to export" for both `streamerhub export` and GET /api/v1/export/{kind}.

KNOWN_CHANNELS = """
SELECT DISTINCT channel_id FROM stream_sessions
 UNION SELECT DISTINCT channel_id FROM analytics_event_rollup WHERE res = 86400
 ORDER BY 1"""
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ExportRequest:
    """An export as a user asks for it: texts straight from the command line or query string."""

    kind: str
    fmt: str = "csv"
    start: str | None = None  # a day (YYYY-MM-DD) or an ISO time; None: the beginning
    end: str | None = None  # a day (included) or an ISO time (excluded); None: now
    channel: str | None = None  # an id or a login; None: all (series: the only one)
    bucket: str | None = None  # series bucket size; None: chosen to fit the range


async def open_export(
    pool: Any,
    cal: Calendar,
    channels: ChannelLister,
    req: ExportRequest,
    now: datetime | None = None,
    names: tuple[str, str] = ("from", "to"),
) -> AsyncIterator[bytes]:
    """Validate the request (raising ExportError before any byte) and return its chunk stream.

    `names` are what the user typed for start and end (--from/--to, or query parameters), so
    a bad value is reported under the name the user knows.
    """
    now = now or datetime.now(UTC)
    start, end = check_request(cal, req, names, now)
    channel = await resolve_channel(pool, channels, req.channel, required=req.kind == "series")
    if req.kind == "events":
        return export_events(pool, cal, start or _BEGINNING, end, req.fmt, channel)
    if req.kind == "sessions":
        return export_sessions(pool, cal, start or _BEGINNING, end, req.fmt, channel, now)
    assert channel is not None
    start = start or await first_data(pool, channel) or end - timedelta(days=1)
    period = range_period(cal, start, max(end, start + timedelta(seconds=1)))
    if req.bucket:
        period = Period(period.kind, period.start, period.end, req.bucket, cal)
    check_buckets(period, names)
    return export_series(pool, channel, period, req.fmt, now)


def check_buckets(period: Period, names: tuple[str, str] = ("from", "to")) -> None:
    """Refuse a series of more than MAX_BUCKETS buckets before any is built: a century by the
    hour would hold the event loop (and every capture) for seconds and take hundreds of MB."""
    count = estimate_buckets(period.start, period.end, period.bucket)
    if count > MAX_BUCKETS:
        raise ExportError(
            f"{names[0]}/{names[1]}: {count} {period.bucket} buckets is more than the limit of "
            f"{MAX_BUCKETS}; choose a shorter range or a larger bucket (day, week, month)"
        )


def check_request(
    cal: Calendar, req: ExportRequest, names: tuple[str, str], now: datetime
) -> tuple[datetime | None, datetime]:
    """Refuse an unknown kind, format or bucket and a bad time before anything is opened (the
    CLI checks before it connects); the range's start (None: the beginning) and end."""
    check_export(req.kind, req.fmt)
    if req.bucket is not None and req.bucket not in BUCKET_SIZES:
        raise ExportError(f"unknown bucket {req.bucket!r}: one of {', '.join(BUCKET_SIZES)}")
    start = parse_when(cal, req.start, names[0], end=False) if req.start else None
    end = parse_when(cal, req.end, names[1], end=True) if req.end else now
    if req.kind == "series" and req.bucket and start is not None and start < end:
        check_buckets(Period("custom", start, end, req.bucket, cal), names)
    return start, end


def parse_when(cal: Calendar, text: str, name: str, *, end: bool) -> datetime:
    """A day (the streamer's; as an end, included) or an ISO time (naive: the streamer's zone),
    between FIRST_YEAR and LAST_YEAR."""
    if DAY.fullmatch(text.strip()):
        day = parse_day(text, name)
        when = datetime.combine(day, datetime.min.time())
    else:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ExportError(
                f"{name} {text!r}: expected a day (2026-03-29) or a time "
                "(2026-03-29T20:00, 2026-03-29T18:00Z)"
            ) from None
    if not FIRST_YEAR <= when.year <= LAST_YEAR:
        raise ExportError(f"{name} {text!r}: the year must be between {FIRST_YEAR} and {LAST_YEAR}")
    if DAY.fullmatch(text.strip()):
        return cal.day_start(when.date() + timedelta(days=1) if end else when.date())
    return cal.resolve(when) if when.tzinfo is None else when.astimezone(UTC)


class ChannelRef(Protocol):
    """A channel as the bot's registry knows it (the exporter may not read bot/'s table)."""

    @property
    def channel_id(self) -> str: ...

    @property
    def login(self) -> str: ...


ChannelLister = Callable[[], Awaitable[Sequence[ChannelRef]]]


async def resolve_channel(
    pool: Any, channels: ChannelLister, wanted: str | None, *, required: bool
) -> str | None:
    """A channel as an id or a login; without one, the only channel there is (if required)."""
    registered = await channels()
    if wanted:
        return next(
            (
                c.channel_id
                for c in registered
                if wanted in (c.channel_id, c.login) or c.login.lower() == wanted.lower()
            ),
            wanted,
        )
    if not required:
        return None
    with_data = {r["channel_id"] for r in await pool.fetch(KNOWN_CHANNELS)}
    known = sorted(with_data | {c.channel_id for c in registered})
    if len(known) == 1:
        return known[0]
    if not known:
        raise ExportError(
            "no channel has any data yet: connect one with `streamerhub twitch login`"
        )
    raise ExportError(f"several channels have data ({', '.join(known)}): choose one by id or login")
