"""Our EventSub WebSocket client: one connection per channel, on the main loop, forever.

The Twitch protocol facts this relies on are in docs/twitch-eventsub.md. What this module
guarantees:
- subscriptions are (re)created on every fresh session, within the welcome's keepalive window;
- `session_reconnect` opens the new URL while the old socket is still read; the old one is closed
  only after the new welcome, with a close handshake so frames still in flight are read, not lost;
- a connection with no frame for keepalive + slack is dead: reconnect with capped backoff;
- every loss → resubscribe window is a gap, stored and handed to the backfill, bounded by
  Twitch's own clock (`message_timestamp`): from the latest frame read before the loss to the
  first notification or keepalive after resubscribing, so a skewed host clock or a reader that
  fell behind neither shortens the gap nor shifts the backfill window;
- with several daemons, no session subscribes (and no stale subscription is deleted) before the
  daemon has confirmed, in the database, that it still owns the channel: a daemon cut off from
  the database whose socket Twitch closes stays silent instead of capturing beside the daemon
  that took the channel over (which deleted this one's subscriptions when it did);
- bad frames become dead letters and the connection carries on; we never send a data frame.
The reader never awaits the database: notifications go to the sink's synchronous `submit`.
One socket's reading and keepalive watch live in bot/session.py, subscribing in
bot/subscriptions.py; this module supervises them and decides what each frame means.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import aiohttp

from streamerhub.bot.helix import Helix, HelixError, backoff
from streamerhub.bot.oauth import TokenError, TokenRevoked
from streamerhub.bot.session import Session, SessionLost, open_socket
from streamerhub.bot.subscriptions import (
    KNOWN_TYPES,
    WITHDRAWN,
    Subscriber,
    SubscriptionResult,
)
from streamerhub.events.frames import BadFrame, Frame, FrameKind, parse_frame
from streamerhub.events.seen import RecentIds
from streamerhub.log import get_logger

log = get_logger(__name__)

KEEPALIVE_SLACK = 3.0
STABLE_AFTER = 30.0  # a session that lived this long resets the backoff
SUBSCRIBE_MARGIN = 1.5  # seconds kept from the keepalive window for the answers to land
SUBSCRIBE_RETRIES = 6
RECENT_IDS = 20_000
CONFIRM_EVERY = 2.0  # seconds between ownership checks while the database does not confirm
NOTIFICATION, KEEPALIVE = FrameKind.NOTIFICATION, FrameKind.KEEPALIVE


class EventSink(Protocol):
    """The storage side (events/store.py's EventStore): every method returns without waiting."""

    def submit(self, item: Any) -> None: ...

    def dead_letter(self, source: str, reason: str, raw_text: str) -> None: ...

    def record_gap_start(
        self, channel_id: str, reason: str, at: dt.datetime | None = None
    ) -> dt.datetime: ...

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
    # What the user must do after a revocation: ("reconnect Twitch" | "update StreamerHub", why)
    attention: tuple[str, str] | None = None
    subscriptions: dict[str, SubscriptionResult] = field(default_factory=dict)


OnSubscriptions = Callable[[list[SubscriptionResult]], Awaitable[None]]


class EventSubClient:
    """Runs one channel's EventSub session forever: `await client.run()` until cancelled."""

    def __init__(
        self,
        channel_id: str,
        http: aiohttp.ClientSession,
        url: str,
        helix: Helix,
        scopes: Callable[[], frozenset[str]],
        sink: EventSink,
        on_subscriptions: OnSubscriptions | None = None,
        on_gap: Callable[[Gap], Awaitable[None]] | None = None,
        on_revoked: Callable[[str], Awaitable[None]] | None = None,
        open_gap: Gap | None = None,
        keepalive_slack: float = KEEPALIVE_SLACK,
        max_backoff: float = 60.0,
        confirm_owner: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.channel_id = channel_id
        self.confirm_owner = confirm_owner
        self.http, self.url, self.helix = http, url, helix
        self.scopes, self.sink = scopes, sink
        self.on_subscriptions, self.on_gap, self.on_revoked = on_subscriptions, on_gap, on_revoked
        self.keepalive_slack, self.max_backoff = keepalive_slack, max_backoff
        self.stats = Stats(last_gap=open_gap)
        self.subscriber = Subscriber(channel_id, helix, scopes)
        self._recent = RecentIds(RECENT_IDS)  # compact: a flood leaves no scattered ids
        # A gap already recorded (the daemon's downtime): closed and backfilled once subscribed.
        self._gap: Gap | None = open_gap
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns: set[Session] = set()
        self._last_conn: Session | None = None
        self._subscribed_once = open_gap is not None
        # Twitch's message_timestamp of the latest frame read (RFC3339 UTC, compared as text:
        # same format, so order holds to the second); a stale resend never moves it back.
        self._latest_stamp = ""
        # Subscribed again with a gap open: it ends at the first notification or keepalive
        # stamped at or after this (the new session's welcome or later: no stale resend).
        self._end_after: str | None = None

    # --------------------------------------------------------------------------- supervisor
    async def run(self) -> None:
        """Connect, subscribe and serve forever; returns only by cancellation or revocation."""
        try:
            await self._wait_for_ownership()
            await self.subscriber.delete_stale()
            attempt = 0
            while True:
                await self._wait_for_ownership()
                started = time.monotonic()
                try:
                    reason = await self._session()
                except SessionLost as exc:
                    reason = str(exc)
                self._open_gap(reason)
                if time.monotonic() - started >= STABLE_AFTER:
                    attempt = 0
                await self._back_off(reason, attempt)
                attempt += 1
        except TokenRevoked as exc:
            self.stats.state, self.stats.last_error = State.DISCONNECTED, exc.reason
            raise
        finally:
            if self.stats.state is not State.DISCONNECTED:
                self.stats.state = State.STOPPED
            await self._shutdown()

    async def _wait_for_ownership(self) -> None:
        """Subscribe only as the channel's confirmed owner (see the module's docstring)."""
        if self.confirm_owner is None:
            return
        waiting = False
        while not await self.confirm_owner():
            if not waiting:
                waiting = True
                self.stats.state = State.BACKOFF
                self.stats.last_error = "waiting for the database to confirm this daemon owns it"
                log.warning("eventsub_resubscribe_withheld", channel_id=self.channel_id)
            await asyncio.sleep(CONFIRM_EVERY)

    async def _back_off(self, reason: str, attempt: int) -> None:
        self.stats.last_error = reason
        delay = backoff(attempt, base=0.5, cap=self.max_backoff)
        self.stats.state = State.BACKOFF
        log.warning(
            "eventsub_connection_lost",
            channel_id=self.channel_id,
            reason=reason,
            retry_in_s=round(delay, 2),
            attempt=attempt + 1,
        )
        await asyncio.sleep(delay)

    async def _session(self) -> str:
        """One fresh session: open, subscribe, serve until lost; returns why it ended."""
        self.stats.state = State.CONNECTING
        conn = await self._open(self.url)
        stopping = False
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
        except asyncio.CancelledError:
            stopping = True
            raise
        finally:
            self.subscriber.cancel_inflight()
            # A stop closes gracefully: what Twitch wrote before it saw our close frame is still
            # read and stored (bounded by CLOSE_GRACE); a lost socket is dropped at once.
            for other in list(self._conns):
                await self._close(other, force=not stopping)

    async def _serve(self, conn: Session) -> str:
        """Wait for loss, keepalive stall or session_reconnect (then hand over and go on)."""
        while True:
            reason = await conn.watch(self.keepalive_slack)
            if reason is not None:
                return reason
            conn = await self._hand_over(conn, conn.reconnect.result())

    async def _hand_over(self, old: Session, url: str) -> Session:
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
    async def _open(self, url: str) -> Session:
        """Connect and wait for the welcome (the reader is already running meanwhile)."""
        conn = Session(await open_socket(self.http, url), asyncio.get_running_loop())
        self._conns.add(conn)
        conn.start_reading(self._on_text, self._bad, f"eventsub-read-{self.channel_id}")
        self.stats.connections += 1
        try:
            await conn.wait_welcome()
        except SessionLost:
            await self._close(conn, force=True)
            raise
        self._last_conn = conn
        self.stats.session_id, self.stats.session_started_at = conn.session_id, time.time()
        return conn

    async def _close(self, conn: Session, force: bool = False) -> None:
        self._conns.discard(conn)
        await conn.close(force)

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
            log.error(
                "eventsub_side_task_failed",
                channel_id=self.channel_id,
                error=repr(task.exception()),
            )

    # --------------------------------------------------------------------------- frames
    def _on_text(self, conn: Session, text: str) -> None:
        self.stats.frames += 1
        try:
            frame = parse_frame(text)
        except BadFrame as exc:
            return self._bad(exc.reason, text)
        kind, stamp = frame.kind, frame.message_timestamp
        if stamp is not None and stamp[10:11] != "T":
            stamp = None  # not RFC3339: it must not order against the real ones
        if stamp is not None and stamp > self._latest_stamp:
            self._latest_stamp = stamp
        if kind is NOTIFICATION or kind is KEEPALIVE:
            if self._end_after is not None and stamp is not None and stamp >= self._end_after:
                self._end_gap(stamp)
            if kind is NOTIFICATION:
                self._on_notification(conn, frame)
        elif kind is FrameKind.WELCOME:
            if not conn.accept_welcome(frame.session):
                self._bad("unexpected or malformed session_welcome", frame.text)
        elif kind is FrameKind.RECONNECT:
            self._on_reconnect(conn, frame)
        elif kind is FrameKind.REVOCATION:
            self._on_revocation(frame)
        else:
            self._bad(f"unknown message_type {frame.message_type[:40]!r}", text)

    def _on_notification(self, conn: Session, frame: Frame) -> None:
        if frame.subscription_type not in KNOWN_TYPES:
            return self._bad(
                f"unknown subscription type {(frame.subscription_type or '')[:80]!r}", frame.text
            )
        sub, subscriber = frame.subscription, self.subscriber
        if sub.get("id") not in subscriber.known and not subscriber.racing(sub, conn.session_id):
            return self._bad("subscription id we never created", frame.text)
        if not self._recent.add(frame.message_id):
            self.stats.duplicates += 1
            return
        self.stats.notifications += 1
        self.sink.submit(frame)

    def _on_reconnect(self, conn: Session, frame: Frame) -> None:
        url = frame.session.get("reconnect_url")
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            return self._bad("session_reconnect without a usable reconnect_url", frame.text)
        conn.ask_reconnect(url)

    def _on_revocation(self, frame: Frame) -> None:
        sub = frame.subscription
        if not sub.get("id"):
            return self._bad("revocation without subscription", frame.text)
        self.stats.revocations += 1
        self.subscriber.known.discard(sub["id"])
        status = f"revoked:{sub.get('status') or 'unknown'}"
        changed = []
        for result in self.stats.subscriptions.values():
            if result.twitch_id == sub["id"]:
                result.status, result.detail = status, f"revoked by Twitch: {sub.get('status')}"
                changed.append(result)
        log.warning(
            "eventsub_subscription_revoked",
            channel_id=self.channel_id,
            type=sub.get("type"),
            status=sub.get("status"),
        )
        if changed and self.on_subscriptions is not None:
            self._spawn(self.on_subscriptions(changed))
        self._revoked(
            str(sub.get("type") or "?"),
            str(sub.get("version") or "?"),
            str(sub.get("status") or "unknown"),
        )

    def _revoked(self, type_: str, version: str, status: str) -> None:
        """A revoked type misses its events from now on: a gap of its own, a state the user
        sees, and (when the grant may be gone) the token checked now rather than within the
        hour."""
        self.stats.gaps += 1
        self.sink.record_gap_start(
            self.channel_id, f"{type_}: subscription revoked by Twitch ({status})"[:500]
        )
        if status == "version_removed":
            self.stats.attention = (
                "update StreamerHub",
                f"Twitch withdrew {type_} version {version}: "
                "update StreamerHub to capture it again",
            )
            return
        if status in ("authorization_revoked", "user_removed") and not self.stats.attention:
            self.stats.attention = (
                "reconnect Twitch",
                f"Twitch revoked {type_} ({status}): reconnect the channel "
                "(`streamerhub twitch login` or Settings → Connect a Twitch channel)",
            )
        if self.on_revoked is not None:
            self._spawn(self.on_revoked(status))

    def _bad(self, reason: str, raw: str) -> None:
        self.stats.bad_frames += 1
        log.warning("eventsub_bad_frame", channel_id=self.channel_id, reason=reason, size=len(raw))
        self.sink.dead_letter("eventsub", f"{reason} (channel {self.channel_id})", raw)

    # --------------------------------------------------------------------------- gaps
    def _open_gap(self, reason: str) -> None:
        """Events may be missed from the last frame of the lost connection on, by Twitch's clock.

        A gap still waiting for its end (resubscribed, lost again before a frame came) just goes
        on from where it started."""
        self._end_after = None
        if self._gap is not None or not self._subscribed_once or self._last_conn is None:
            return
        started = _twitch_time(self._latest_stamp)
        if started is None:  # no stamped frame ever read: the reader's clock is all there is
            silent = dt.timedelta(seconds=self._last_conn.silent_for)
            started = dt.datetime.now(dt.timezone.utc) - silent
        gap = self._gap = Gap(self.channel_id, started, reason)
        self.stats.gaps += 1
        self.stats.last_gap = gap
        self.sink.record_gap_start(self.channel_id, reason[:500], gap.started_at)

    def _close_gap(self) -> None:
        """Subscribed again: the open gap ends at Twitch's stamp of the next frame after now."""
        self._subscribed_once = True
        if self._gap is not None:
            self._end_after = self._latest_stamp

    def _end_gap(self, stamp: str) -> None:
        gap, self._gap, self._end_after = self._gap, None, None
        if gap is None:
            return
        gap.ended_at = _twitch_time(stamp) or dt.datetime.now(dt.timezone.utc)
        self.sink.record_gap_end(self.channel_id, gap.ended_at)
        log.info(
            "eventsub_gap_closed",
            channel_id=self.channel_id,
            reason=gap.reason,
            seconds=round((gap.ended_at - gap.started_at).total_seconds(), 1),
        )
        if self.on_gap is not None:
            self._spawn(self.on_gap(gap))

    # --------------------------------------------------------------------------- subscriptions
    async def _subscribe_all(self, conn: Session) -> None:
        """Create every allowed subscription concurrently, inside the keepalive window."""
        # Twitch closes an unused session (4003) when the keepalive window ends.
        window = max(1.0, conn.keepalive - SUBSCRIBE_MARGIN - conn.since_welcome)
        results = await self.subscriber.create_all(conn.session_id, window)
        self.stats.subscriptions = {r.wanted.label: r for r in results}
        if self.on_subscriptions is not None:
            self._spawn(self.on_subscriptions(results))
        enabled = sum(r.status == "enabled" for r in results)
        failed = [r for r in results if r.status == "error"]
        if withdrawn := [r for r in results if r.status == WITHDRAWN]:
            self.stats.attention = (
                "update StreamerHub",
                f"{withdrawn[0].wanted.label}: {withdrawn[0].detail}",
            )
        log.info(
            "eventsub_subscribed",
            channel_id=self.channel_id,
            session_id=conn.session_id,
            enabled=enabled,
            missing_scope=sum(r.status == "missing_scope" for r in results),
            failed=len(failed),
        )
        if failed and not enabled:
            raise SessionLost(f"no subscription could be created: {failed[0].detail}")
        if failed:
            self._spawn(self._retry_failed(conn, failed))

    async def _retry_failed(self, conn: Session, failed: list[SubscriptionResult]) -> None:
        for attempt in range(SUBSCRIBE_RETRIES):
            await asyncio.sleep(backoff(attempt + 2, cap=self.max_backoff))
            if conn.lost.done() or conn not in self._conns:
                return
            retried = await self.subscriber.create_each([r.wanted for r in failed], conn.session_id)
            for result in retried:
                self.stats.subscriptions[result.wanted.label] = result
            if self.on_subscriptions is not None:
                await self.on_subscriptions(retried)
            failed = [r for r in retried if r.status == "error"]
            if not failed:
                return


def _twitch_time(stamp: str) -> dt.datetime | None:
    """A message_timestamp as an aware datetime (microseconds); None when absent or malformed."""
    try:
        at = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.timezone.utc)
