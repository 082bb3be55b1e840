"""Our EventSub WebSocket client: one connection per channel, on the main loop, forever.

Protocol notes in /work/shared/reference/twitch-eventsub.md. What this module guarantees:
- subscriptions are (re)created on every fresh session, within the welcome's keepalive window;
- `session_reconnect` opens the new URL while the old socket is still read; the old one is closed
  only after the new welcome, with a close handshake so frames still in flight are read, not lost;
- a connection with no frame for keepalive + slack is dead: reconnect with capped backoff;
- every loss → resubscribe window is a gap, stored and handed to the backfill;
- bad frames become dead letters and the connection carries on; we never send a data frame.
The reader never awaits the database: notifications go to the sink's synchronous `submit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import aiohttp

from streamerhub.bot.events import BadFrame, Frame, FrameKind, parse_frame
from streamerhub.bot.helix import Helix, HelixError, backoff
from streamerhub.bot.tokens import TokenError, TokenRevoked
from streamerhub.log import get_logger

log = get_logger(__name__)

KEEPALIVE_SLACK = 3.0
WELCOME_TIMEOUT = 10.0
CLOSE_GRACE = 5.0  # how long the old socket may take to echo our close after a reconnect
FORCE_CLOSE_WAIT = 1.0  # a dead peer does not get to delay the reconnect
STABLE_AFTER = 30.0  # a session that lived this long resets the backoff
SUBSCRIBE_CONCURRENCY = 8
SUBSCRIBE_MARGIN = 1.5  # seconds kept from the keepalive window for the answers to land
RECENT_IDS = 20_000
NOTIFICATION, KEEPALIVE = FrameKind.NOTIFICATION, FrameKind.KEEPALIVE

# type, version, scope (None = public). Raids are subscribed twice: received and sent.
SUBSCRIPTIONS: tuple[tuple[str, str, str | None], ...] = (
    ("channel.follow", "2", "moderator:read:followers"),
    ("channel.subscribe", "1", "channel:read:subscriptions"),
    ("channel.subscription.gift", "1", "channel:read:subscriptions"),
    ("channel.subscription.message", "1", "channel:read:subscriptions"),
    ("channel.subscription.end", "1", "channel:read:subscriptions"),
    ("channel.cheer", "1", "bits:read"),
    ("stream.online", "1", None),
    ("stream.offline", "1", None),
    ("channel.raid", "1", None),
    ("channel.channel_points_custom_reward_redemption.add", "1", "channel:read:redemptions"),
    ("channel.channel_points_custom_reward_redemption.update", "1", "channel:read:redemptions"),
    ("channel.update", "2", None),
    *((f"channel.hype_train.{p}", "2", "channel:read:hype_train")
      for p in ("begin", "progress", "end")),
    *((f"channel.poll.{p}", "1", "channel:read:polls") for p in ("begin", "progress", "end")),
    *((f"channel.prediction.{p}", "1", "channel:read:predictions")
      for p in ("begin", "progress", "lock", "end")),
    *((f"channel.goal.{p}", "1", "channel:read:goals") for p in ("begin", "progress", "end")),
)
KNOWN_TYPES = frozenset(t for t, _, _ in SUBSCRIPTIONS)


@dataclass(frozen=True)
class Wanted:
    """One subscription to create: type, version, the scope it needs and its condition."""

    type: str
    version: str
    scope: str | None
    condition: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        """The type, plus the raid direction (two raid subscriptions share a type)."""
        keys = dict(self.condition)
        if "to_broadcaster_user_id" in keys:
            return f"{self.type} (received)"
        if "from_broadcaster_user_id" in keys:
            return f"{self.type} (sent)"
        return self.type


def build_plan(channel_id: str) -> list[Wanted]:
    """Every subscription a channel wants, conditions filled in."""
    plan = []
    for type_, version, scope in SUBSCRIPTIONS:
        if type_ == "channel.raid":
            for key in ("to_broadcaster_user_id", "from_broadcaster_user_id"):
                plan.append(Wanted(type_, version, scope, ((key, channel_id),)))
            continue
        condition = [("broadcaster_user_id", channel_id)]
        if type_ == "channel.follow":
            condition.append(("moderator_user_id", channel_id))
        plan.append(Wanted(type_, version, scope, tuple(condition)))
    return plan


class EventSink(Protocol):
    """The storage side (bot/store.py's EventStore): every method returns without waiting."""

    def submit(self, item: Any) -> None: ...

    def dead_letter(self, source: str, reason: str, raw_text: str) -> None: ...

    def record_gap_start(self, channel_id: str, reason: str,
                         at: dt.datetime | None = None) -> dt.datetime: ...

    def record_gap_end(self, channel_id: str, at: dt.datetime | None = None) -> None: ...


class State(enum.Enum):
    CONNECTING = "connecting"
    SUBSCRIBING = "subscribing"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # session_reconnect in progress: still receiving
    BACKOFF = "waiting to reconnect"
    STOPPED = "stopped"
    DISCONNECTED = "disconnected"  # the grant is gone; needs a new login


@dataclass
class Gap:
    """A transport gap: from the last frame of a lost connection to resubscription."""

    channel_id: str
    started_at: dt.datetime
    reason: str
    ended_at: dt.datetime | None = None


@dataclass
class SubscriptionResult:
    """What Twitch answered for one wanted subscription."""

    wanted: Wanted
    status: str  # enabled, missing_scope, revoked:<reason>, error
    twitch_id: str | None = None
    detail: str | None = None


@dataclass
class Stats:
    """Counters and timestamps the dashboard and `twitch status` show."""

    state: State = State.CONNECTING
    session_id: str | None = None
    session_started_at: float | None = None  # wall clock of the current session's welcome
    connections: int = 0
    reconnects: int = 0  # session_reconnect handovers
    frames: int = 0
    notifications: int = 0
    duplicates: int = 0
    bad_frames: int = 0
    revocations: int = 0
    gaps: int = 0
    last_gap: Gap | None = None
    last_error: str | None = None
    subscriptions: dict[str, SubscriptionResult] = field(default_factory=dict)


class _Connection:
    """One WebSocket with its reader task and the futures the supervisor waits on."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, loop: asyncio.AbstractEventLoop) -> None:
        self.ws = ws
        self.welcome: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        self.lost: asyncio.Future[str] = loop.create_future()
        self.reconnect: asyncio.Future[str] = loop.create_future()
        self.last_frame = time.monotonic()
        self.welcomed_at = self.last_frame
        self.session_id = ""
        self.keepalive = 10.0
        self.reader: asyncio.Task[None] | None = None

    def end(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)
        if not self.welcome.done():
            self.welcome.set_result(None)

    @property
    def silent_for(self) -> float:
        return time.monotonic() - self.last_frame

    @property
    def since_welcome(self) -> float:
        return time.monotonic() - self.welcomed_at


class SessionLost(Exception):
    """The connection could not be opened, welcomed or subscribed; retry after a backoff."""


class EventSubClient:
    """Runs one channel's EventSub session forever: `await client.run()` until cancelled."""

    def __init__(self, channel_id: str, http: aiohttp.ClientSession, url: str, helix: Helix,
                 scopes: Callable[[], frozenset[str]], sink: EventSink,
                 on_subscriptions: Callable[[list[SubscriptionResult]], Awaitable[None]] | None = None,
                 on_gap: Callable[[Gap], Awaitable[None]] | None = None,
                 open_gap: Gap | None = None, keepalive_slack: float = KEEPALIVE_SLACK, max_backoff: float = 60.0) -> None:
        self.channel_id = channel_id
        self.http, self.url, self.helix = http, url, helix
        self.scopes, self.sink = scopes, sink
        self.on_subscriptions, self.on_gap = on_subscriptions, on_gap
        self.keepalive_slack, self.max_backoff = keepalive_slack, max_backoff
        self.stats = Stats(last_gap=open_gap)
        self.plan = build_plan(channel_id)
        self._known: set[str] = set()  # subscription ids we created (carried over reconnects)
        self._subscribing: str | None = None  # session id being subscribed right now
        self._recent: OrderedDict[str, None] = OrderedDict()
        # A gap already recorded (the daemon's downtime): closed and backfilled once subscribed.
        self._gap: Gap | None = open_gap
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns: set[_Connection] = set()
        self._last_conn: _Connection | None = None
        self._subscribed_once = open_gap is not None

    # --------------------------------------------------------------------------- supervisor
    async def run(self) -> None:
        """Connect, subscribe and serve forever; returns only by cancellation or revocation."""
        try:
            await self._delete_stale()
            attempt = 0
            while True:
                started = time.monotonic()
                try:
                    reason = await self._session()
                except SessionLost as exc:
                    reason = str(exc)
                self._open_gap(reason)
                if time.monotonic() - started >= STABLE_AFTER:
                    attempt = 0
                self.stats.last_error = reason
                delay = backoff(attempt, base=0.5, cap=self.max_backoff)
                attempt += 1
                self.stats.state = State.BACKOFF
                log.warning("eventsub_connection_lost", channel_id=self.channel_id, reason=reason,
                            retry_in_s=round(delay, 2), attempt=attempt)
                await asyncio.sleep(delay)
        except TokenRevoked as exc:
            self.stats.state, self.stats.last_error = State.DISCONNECTED, exc.reason
            raise
        finally:
            if self.stats.state is not State.DISCONNECTED:
                self.stats.state = State.STOPPED
            await self._shutdown()

    async def _session(self) -> str:
        """One fresh session: open, subscribe, serve until lost; returns why it ended."""
        self.stats.state = State.CONNECTING
        conn = await self._open(self.url)
        try:
            self.stats.state = State.SUBSCRIBING
            await self._subscribe_all(conn)
            self._close_gap()
            self.stats.state = State.CONNECTED
            return await self._serve(conn)
        except (HelixError, TokenError) as exc:
            if isinstance(exc, TokenRevoked):
                raise
            raise SessionLost(f"subscribing failed: {exc}") from None
        finally:
            for other in list(self._conns):
                await self._close(other, force=True)

    async def _serve(self, conn: _Connection) -> str:
        """Wait for loss, keepalive stall or session_reconnect (then hand over and go on)."""
        while True:
            deadline = conn.keepalive + self.keepalive_slack - conn.silent_for
            if deadline > 0:
                await asyncio.wait({conn.lost, conn.reconnect}, timeout=deadline,
                                   return_when=asyncio.FIRST_COMPLETED)
            if conn.lost.done():
                return conn.lost.result()
            if conn.reconnect.done():
                conn = await self._hand_over(conn, conn.reconnect.result())
                continue
            if conn.silent_for >= conn.keepalive + self.keepalive_slack:
                return (f"no frame for {conn.silent_for:.1f} s (keepalive "
                        f"{conn.keepalive:g} s + {self.keepalive_slack:g} s slack)")

    async def _hand_over(self, old: _Connection, url: str) -> _Connection:
        """session_reconnect: the new socket's welcome first, then a clean close of the old."""
        self.stats.state = State.RECONNECTING
        try:
            new = await self._open(url)
        except SessionLost as exc:
            old.end(f"session_reconnect failed: {exc}")
            return old
        self.stats.reconnects += 1
        self.stats.state = State.CONNECTED
        self._spawn(self._close(old))
        log.info("eventsub_reconnected", channel_id=self.channel_id, session_id=new.session_id)
        return new

    # --------------------------------------------------------------------------- connections
    async def _open(self, url: str) -> _Connection:
        """Connect and wait for the welcome (the reader is already running meanwhile)."""
        try:
            ws = await self.http.ws_connect(url, autoping=True, heartbeat=None,
                                            max_msg_size=16 * 1024 * 1024, compress=0,
                                            timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_GRACE))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise SessionLost(f"cannot connect to {url.split('?')[0]}: {type(exc).__name__}: "
                              f"{exc}") from None
        conn = _Connection(ws, asyncio.get_running_loop())
        self._conns.add(conn)
        conn.reader = asyncio.create_task(self._read(conn), name=f"eventsub-read-{self.channel_id}")
        self.stats.connections += 1
        try:
            session = await asyncio.wait_for(asyncio.shield(conn.welcome), WELCOME_TIMEOUT)
        except asyncio.TimeoutError:
            session = None
        if session is None:
            await self._close(conn, force=True)
            why = conn.lost.result() if conn.lost.done() else f"none within {WELCOME_TIMEOUT:g} s"
            raise SessionLost(f"no session_welcome: {why}")
        self._last_conn = conn
        conn.welcomed_at = time.monotonic()
        conn.session_id = str(session.get("id") or "")
        conn.keepalive = float(session.get("keepalive_timeout_seconds") or 10)
        self.stats.session_id, self.stats.session_started_at = conn.session_id, time.time()
        return conn

    async def _close(self, conn: _Connection, force: bool = False) -> None:
        """Close; gracefully = our close frame, then the reader goes on until Twitch echoes it,
        so frames already in flight on this socket are read, not dropped (aiohttp's close()
        would discard them)."""
        self._conns.discard(conn)
        ws = conn.ws
        try:
            if not ws.closed and not force:
                await ws.send_frame(struct.pack("!H", 1000), aiohttp.WSMsgType.CLOSE)
                if conn.reader is not None:
                    await asyncio.wait_for(asyncio.shield(conn.reader), CLOSE_GRACE)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            if conn.reader is not None and not conn.reader.done():
                conn.reader.cancel()
                await asyncio.gather(conn.reader, return_exceptions=True)
            conn.end("closed by us")
            if not ws.closed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ws.close(), FORCE_CLOSE_WAIT)

    async def _shutdown(self) -> None:
        for conn in list(self._conns):
            await self._close(conn, force=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("eventsub_side_task_failed", channel_id=self.channel_id,
                      error=repr(task.exception()))

    # --------------------------------------------------------------------------- reader
    async def _read(self, conn: _Connection) -> None:
        ws, on_text = conn.ws, self._on_text
        text_type = aiohttp.WSMsgType.TEXT
        try:
            while True:
                msg = await ws.receive()
                if msg.type is text_type:
                    conn.last_frame = time.monotonic()
                    on_text(conn, msg.data)
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    conn.last_frame = time.monotonic()
                    self._bad("binary frame", msg.data.decode("utf-8", "replace"))
                else:
                    break
            reason = f"closed by Twitch (code {ws.close_code})"
        except Exception as exc:  # noqa: BLE001 - a reader must never die silently
            reason = f"reader failed: {type(exc).__name__}: {exc}"
        conn.end(reason)

    def _on_text(self, conn: _Connection, text: str) -> None:
        self.stats.frames += 1
        try:
            frame = parse_frame(text)
        except BadFrame as exc:
            return self._bad(exc.reason, text)
        kind = frame.kind
        if kind is NOTIFICATION:
            self._on_notification(conn, frame)
        elif kind is KEEPALIVE:
            pass
        elif kind is FrameKind.WELCOME:
            self._on_welcome(conn, frame)
        elif kind is FrameKind.RECONNECT:
            self._on_reconnect(conn, frame)
        elif kind is FrameKind.REVOCATION:
            self._on_revocation(frame)
        else:
            self._bad(f"unknown message_type {frame.message_type[:40]!r}", text)

    def _on_notification(self, conn: _Connection, frame: Frame) -> None:
        if frame.subscription_type not in KNOWN_TYPES:
            return self._bad(f"unknown subscription type {frame.subscription_type[:80]!r}",
                             frame.text)
        sub = frame.subscription
        if sub.get("id") not in self._known and not self._racing_create(conn, sub):
            return self._bad("subscription id we never created", frame.text)
        recent, message_id = self._recent, frame.message_id
        if message_id in recent:
            self.stats.duplicates += 1
            return
        recent[message_id] = None
        if len(recent) > RECENT_IDS:
            recent.popitem(last=False)
        self.stats.notifications += 1
        self.sink.submit(frame)

    def _racing_create(self, conn: _Connection, sub: dict[str, Any]) -> bool:
        # Twitch may deliver before our POST's answer arrives: accept while we are subscribing
        # this very session.
        transport = sub.get("transport") or {}
        if self._subscribing and transport.get("session_id") == self._subscribing == conn.session_id:
            self._known.add(str(sub.get("id")))
            return True
        return False

    def _on_welcome(self, conn: _Connection, frame: Frame) -> None:
        session = frame.session
        if conn.welcome.done() or not session.get("id"):
            return self._bad("unexpected or malformed session_welcome", frame.text)
        conn.welcome.set_result(session)

    def _on_reconnect(self, conn: _Connection, frame: Frame) -> None:
        url = frame.session.get("reconnect_url")
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            return self._bad("session_reconnect without a usable reconnect_url", frame.text)
        if not conn.reconnect.done():
            conn.reconnect.set_result(url)

    def _on_revocation(self, frame: Frame) -> None:
        sub = frame.subscription
        if not sub.get("id"):
            return self._bad("revocation without subscription", frame.text)
        self.stats.revocations += 1
        self._known.discard(sub["id"])
        status = f"revoked:{sub.get('status') or 'unknown'}"
        changed = []
        for result in self.stats.subscriptions.values():
            if result.twitch_id == sub["id"]:
                result.status, result.detail = status, f"revoked by Twitch: {sub.get('status')}"
                changed.append(result)
        log.warning("eventsub_subscription_revoked", channel_id=self.channel_id,
                    type=sub.get("type"), status=sub.get("status"))
        if changed and self.on_subscriptions is not None:
            self._spawn(self.on_subscriptions(changed))

    def _bad(self, reason: str, raw: str) -> None:
        self.stats.bad_frames += 1
        log.warning("eventsub_bad_frame", channel_id=self.channel_id, reason=reason,
                    size=len(raw))
        self.sink.dead_letter("eventsub", f"{reason} (channel {self.channel_id})", raw)

    # --------------------------------------------------------------------------- gaps
    def _open_gap(self, reason: str) -> None:
        """Events may be missed from the last frame of the lost connection on."""
        if self._gap is not None or not self._subscribed_once or self._last_conn is None:
            return
        silent = dt.timedelta(seconds=self._last_conn.silent_for)
        gap = self._gap = Gap(self.channel_id, dt.datetime.now(dt.timezone.utc) - silent, reason)
        self.stats.gaps += 1
        self.stats.last_gap = gap
        self.sink.record_gap_start(self.channel_id, reason[:500], gap.started_at)

    def _close_gap(self) -> None:
        self._subscribed_once = True
        gap, self._gap = self._gap, None
        if gap is None:
            return
        gap.ended_at = dt.datetime.now(dt.timezone.utc)
        self.sink.record_gap_end(self.channel_id, gap.ended_at)
        log.info("eventsub_gap_closed", channel_id=self.channel_id, reason=gap.reason,
                 seconds=round((gap.ended_at - gap.started_at).total_seconds(), 1))
        if self.on_gap is not None:
            self._spawn(self.on_gap(gap))

    # --------------------------------------------------------------------------- subscriptions
    async def _subscribe_all(self, conn: _Connection) -> None:
        """Create every allowed subscription concurrently, inside the keepalive window."""
        scopes = self.scopes()
        self._known = set()
        self._subscribing = conn.session_id
        try:
            results = await self._create_within(conn, scopes)
        finally:
            self._subscribing = None
        self.stats.subscriptions = {r.wanted.label: r for r in results}
        if self.on_subscriptions is not None:
            self._spawn(self.on_subscriptions(results))
        enabled = sum(r.status == "enabled" for r in results)
        failed = [r for r in results if r.status == "error"]
        log.info("eventsub_subscribed", channel_id=self.channel_id, session_id=conn.session_id,
                 enabled=enabled, missing_scope=sum(r.status == "missing_scope" for r in results),
                 failed=len(failed))
        if failed and not enabled:
            raise SessionLost(f"no subscription could be created: {failed[0].detail}")
        if failed:
            self._spawn(self._retry_failed(conn, failed))

    async def _create_within(self, conn: _Connection,
                             scopes: frozenset[str]) -> list[SubscriptionResult]:
        # Twitch closes an unused session (4003) when the keepalive window ends: what is not
        # answered by then is given up here and retried in the background.
        window = max(1.0, conn.keepalive - SUBSCRIBE_MARGIN - conn.since_welcome)
        limit = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)
        tasks = [asyncio.ensure_future(self._create(limit, w, conn.session_id, scopes))
                 for w in self.plan]
        _, pending = await asyncio.wait(tasks, timeout=window)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        results, errors = [], []
        for task, wanted in zip(tasks, self.plan):
            if task in pending:
                results.append(SubscriptionResult(wanted, "error",
                                                  detail="no answer within the keepalive window"))
            elif task.exception() is not None:  # read every one: none is left unretrieved
                errors.append(task.exception())
            else:
                results.append(task.result())
        if errors:
            raise errors[0]
        return results

    async def _create(self, limit: asyncio.Semaphore, wanted: Wanted, session_id: str,
                      scopes: frozenset[str]) -> SubscriptionResult:
        if wanted.scope and wanted.scope not in scopes:
            return SubscriptionResult(wanted, "missing_scope", detail=f"needs {wanted.scope}")
        async with limit:
            try:
                sub = await self.helix.create_subscription(
                    wanted.type, wanted.version, dict(wanted.condition), session_id)
            except HelixError as exc:
                return _failed(wanted, exc)
        self._known.add(str(sub["id"]))
        return SubscriptionResult(wanted, "enabled", str(sub["id"]))

    async def _retry_failed(self, conn: _Connection, failed: list[SubscriptionResult]) -> None:
        for attempt in range(6):
            await asyncio.sleep(backoff(attempt + 2, cap=self.max_backoff))
            if conn.lost.done() or conn not in self._conns:
                return
            limit = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)
            retried = await asyncio.gather(*(self._create(limit, r.wanted, conn.session_id,
                                                          self.scopes()) for r in failed))
            for result in retried:
                self.stats.subscriptions[result.wanted.label] = result
            if self.on_subscriptions is not None:
                await self.on_subscriptions(retried)
            failed = [r for r in retried if r.status == "error"]
            if not failed:
                return

    async def _delete_stale(self) -> None:
        """At start no session of ours exists: every WebSocket subscription of the token is stale."""
        try:
            subs = await self.helix.subscriptions()
        except HelixError as exc:
            log.warning("eventsub_stale_list_failed", channel_id=self.channel_id, error=str(exc))
            return
        stale = [s["id"] for s in subs if (s.get("transport") or {}).get("method") == "websocket"]
        limit = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)

        async def delete(sub_id: str) -> None:
            async with limit:
                try:
                    await self.helix.delete_subscription(sub_id)
                except HelixError as exc:
                    log.warning("eventsub_stale_delete_failed", channel_id=self.channel_id,
                                error=str(exc))

        await asyncio.gather(*(delete(s) for s in stale))
        if stale:
            log.info("eventsub_stale_deleted", channel_id=self.channel_id, count=len(stale))


def _failed(wanted: Wanted, exc: HelixError) -> SubscriptionResult:
    if exc.status == 403:
        return SubscriptionResult(wanted, "missing_scope", detail=exc.message)
    if exc.status == 409:  # already there (a resent POST): it is enabled on this session
        return SubscriptionResult(wanted, "enabled", detail="already existed")
    return SubscriptionResult(wanted, "error", detail=f"{exc.status}: {exc.message}")
