"""The live event feed: Server-Sent Events of committed Twitch events, resumable with Last-Event-ID.

One `FeedBroadcaster` per daemon reads new rows from the database — woken by the in-process hub
as soon as the store commits, and once a second anyway (another daemon may share the database) —
and fans them out to every open feed. The database is the single source of truth, so a feed
that resumes with `Last-Event-ID` replays exactly the rows after that id: nothing lost, nothing
shown twice. Ids are `<received_at µs>_<message_id>`, the order rows are read in (byte order:
COLLATE "C", so Python and PostgreSQL agree whatever the database's collation); the reads are
analytics/browse.py's.

received_at is when the daemon received a frame, and the store commits in that order. Events
replayed from the outage spool keep their (old) received_at, so they land behind the cursor:
they appear on the Events page, not as news in the live feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator, Mapping

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from streamerhub.analytics.browse import (
    Cursor,
    EventRow,
    arrived_after,
    latest_arrivals,
    newest_arrival,
)
from streamerhub.db import Database
from streamerhub.events.text import types_for
from streamerhub.log import get_logger
from streamerhub.pubsub import Hub
from streamerhub.web.auth import require
from streamerhub.web.context import SERVICES, services
from streamerhub.web.event_view import view

log = get_logger(__name__)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
BATCH = 500
BACKLOG = 25  # events shown when a feed opens without Last-Event-ID
RESUME_LIMIT = 5000  # more missed than this: the page is told to reload instead
POLL_EVERY = 1.0  # safety net when no hub wakes us (another daemon writes)
COALESCE = 0.01  # gather a burst into one query
READ_GAP = 0.1  # at most 10 reads a second: a chat flood commits 20+ times a second


def cursor_id(cursor: Cursor) -> str:
    moment, message_id = cursor
    micros = (moment - EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}_{message_id}"


def parse_cursor(value: str | None) -> Cursor | None:
    """Inverse of cursor_id; None for a missing or malformed Last-Event-ID."""
    if not value or "_" not in value:
        return None
    micros, _, message_id = value.partition("_")
    try:
        return EPOCH + dt.timedelta(microseconds=int(micros)), message_id
    except (ValueError, OverflowError):
        return None


@dataclass
class Filter:
    types: list[str] | None = None
    channel_id: str | None = None

    def accepts(self, row: EventRow) -> bool:
        return (self.types is None or row["subscription_type"] in self.types) and (
            self.channel_id is None or row["channel_id"] == self.channel_id
        )

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filter:
        names = [n for n in query.get("types", "").split(",") if n.strip()]
        return cls(types_for(names) if names else None, query.get("channel") or None)


@dataclass(eq=False)  # identity: each open feed is its own listener
class Listener:
    filter: Filter
    queue: asyncio.Queue[EventRow | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=10_000)
    )
    overflowed: bool = False


class FeedBroadcaster:
    """Reads rows committed after its cursor and hands them to every listener, in order."""

    def __init__(self, db: Database, hub: Hub) -> None:
        self.db, self.hub = db, hub
        self.listeners: set[Listener] = set()
        self.cursor: Cursor | None = None
        self.closing = asyncio.Event()
        self.joined = 0  # listeners ever opened: a cursor skip must not race a new one
        self.reads = 0  # row reads done (a page of rows each)
        self._read_at = 0.0

    async def run(self) -> None:
        self.cursor = await newest_arrival(self.db) or (EPOCH, "")
        async with self.hub.events.subscribe() as wakeups:
            while not self.closing.is_set():
                await self._wait(wakeups)
                try:
                    await self._read_new()
                except (OSError, asyncio.TimeoutError) as exc:  # database away: try next tick
                    log.warning("feed_read_failed", error=str(exc))
                except Exception as exc:  # noqa: BLE001 - asyncpg errors: keep the feed alive, say why
                    log.warning("feed_read_failed", error=f"{type(exc).__name__}: {exc}")

    async def _wait(self, wakeups: asyncio.Queue[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wakeups.get(), POLL_EVERY)
            # One read per burst of commits, not one per commit.
            await asyncio.sleep(max(COALESCE, self._read_at + READ_GAP - loop.time()))
        while not wakeups.empty():
            wakeups.get_nowait()
        self._read_at = loop.time()

    async def _read_new(self) -> None:
        assert self.cursor is not None
        if not self.listeners and await self._skip_unwatched():
            return
        while True:
            self.reads += 1
            rows = await arrived_after(self.db, self.cursor, BATCH)
            if not rows:
                return
            self.cursor = (rows[-1]["received_at"], rows[-1]["message_id"])
            for listener in list(self.listeners):
                self._hand(listener, rows)
            if len(rows) < BATCH:
                return

    async def _skip_unwatched(self) -> bool:
        """No feed is open: move the cursor to the newest row instead of reading every row (a
        chat flood is thousands a second). False when a feed opened meanwhile: then the rows are
        read from the old cursor, as its catch-up may not reach the newest row."""
        joined = self.joined
        newest = await newest_arrival(self.db)
        if self.joined != joined:
            return False
        if newest is not None and newest > (self.cursor or (EPOCH, "")):
            self.cursor = newest
        return True

    @staticmethod
    def _hand(listener: Listener, rows: list[EventRow]) -> None:
        for row in rows:
            if not listener.filter.accepts(row):
                continue
            if listener.queue.full():  # a stuck browser: it reconnects and resumes from the DB
                listener.overflowed = True
                return
            listener.queue.put_nowait(row)

    @contextlib.contextmanager
    def listen(self, flt: Filter) -> Iterator[Listener]:
        listener = Listener(flt)
        self.joined += 1
        self.listeners.add(listener)
        try:
            yield listener
        finally:
            self.listeners.discard(listener)

    def close(self) -> None:
        self.closing.set()
        for listener in self.listeners:
            with contextlib.suppress(asyncio.QueueFull):
                listener.queue.put_nowait(None)


FEED = web.AppKey("web_feed", FeedBroadcaster)


async def feed_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the broadcaster for the app's lifetime (set up after the database and the hub)."""
    svc = app[SERVICES]
    feed = FeedBroadcaster(svc.db, svc.hub)
    app[FEED] = feed
    task = asyncio.create_task(feed.run(), name="web_feed")
    yield
    feed.close()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def close_feeds(app: web.Application) -> None:
    """on_shutdown: end open feeds so the graceful stop does not wait on them."""
    if FEED in app:
        app[FEED].close()


async def catch_up(db: Database, flt: Filter, since: Cursor | None) -> list[EventRow] | None:
    """Rows a feed must send before going live; None when too many were missed to replay."""
    if since is None:
        return await latest_arrivals(db, BACKLOG, flt.types, flt.channel_id)
    rows = await arrived_after(db, since, RESUME_LIMIT + 1, flt.types, flt.channel_id)
    return None if len(rows) > RESUME_LIMIT else rows


@require("viewer")
async def event_feed(request: web.Request) -> web.StreamResponse:
    """GET /feed/events?types=follows,subs&channel=ID — SSE; honours Last-Event-ID."""
    feed, svc = request.app[FEED], services(request)
    tz = zoneinfo.ZoneInfo(svc.settings.general.timezone)
    flt = Filter.from_query(request.query)
    since = parse_cursor(request.headers.get("Last-Event-ID") or request.query.get("after"))
    with feed.listen(flt) as listener:
        backlog = await catch_up(svc.db, flt, since)
        async with sse_response(request, ping_interval=15, send_timeout=30) as sse:
            if backlog is None:
                await sse.send(json.dumps({"reason": "too many events missed"}), event="reload")
                return sse
            last = since or (EPOCH, "")
            for row in backlog:
                last = await _send(sse, row, last, tz, backlog=since is None)
            await _stream_live(sse, listener, last, tz)
    return sse


async def _stream_live(
    sse: EventSourceResponse, listener: Listener, last: Cursor, tz: dt.tzinfo
) -> None:
    while sse.is_connected():
        row = await listener.queue.get()
        if row is None or listener.overflowed:
            return  # closing, or too far behind: EventSource reconnects with Last-Event-ID
        last = await _send(sse, row, last, tz)


async def _send(
    sse: EventSourceResponse, row: EventRow, last: Cursor, tz: dt.tzinfo, backlog: bool = False
) -> Cursor:
    cursor = (row["received_at"], row["message_id"])
    if cursor <= last:
        return last  # already sent by the catch-up
    data = {**view(row, tz), "backlog": backlog}  # backlog: shown, not highlighted
    await sse.send(json.dumps(data), id=cursor_id(cursor), event="twitch")
    return cursor


def add_routes(app: web.Application) -> None:
    app.router.add_get("/feed/events", event_feed)
