"""Conduit mode: every channel's subscriptions on one EventSub conduit, read through shards.

A conduit holds the subscriptions independently of any socket (dev.twitch.tv/docs/eventsub/
handling-conduit-events): Twitch sends each notification to one enabled shard and, when that shard
did not get it, retries it on one other shard. So a dropped socket disables only its shard and
loses nothing as long as another shard is up, which is why each daemon keeps at least two
(settings.conduit.shards). The lost shard gets a new session, assigned with PATCH
/eventsub/conduits/shards within 10 s of its welcome.

The conduit's id is kept in twitch_conduits, so a restart (or a second daemon) adopts it and the
subscriptions on it. Which daemon reads which shard is bot/shards.py; each shard's socket reuses
bot/session.py's reader. Notifications are deduplicated on message_id across shards (Twitch's
retry of a frame that did arrive) before the sink; the events table's key covers the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from streamerhub.bot.eventsub import EventSink
from streamerhub.bot.helix import Helix, HelixError, backoff
from streamerhub.bot.oauth import AppToken, OAuth, TokenError
from streamerhub.bot.session import Session, SessionLost, open_socket
from streamerhub.bot.shards import ShardClaims, ShardRow
from streamerhub.bot.subscriptions import (
    KNOWN_TYPES,
    SubscriptionResult,
    allowed,
    build_plan,
    save_subscriptions,
)
from streamerhub.config import ConduitSettings
from streamerhub.db import Database
from streamerhub.events.frames import BadFrame, FrameKind, parse_frame
from streamerhub.events.seen import RecentIds
from streamerhub.log import get_logger

log = get_logger(__name__)

SHARD_DISABLED = "conduit.shard.disabled"
KEEPALIVE_SLACK = 3.0
RECENT_IDS = 50_000
TAKEOVER_GRACE = 2.0  # a disabled shard of another daemon gets this long to come back by itself
SUBSCRIBE_CONCURRENCY = 8


def daemon_identity() -> str:
    """This process's name in the shard table: host, pid and a random tail (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def conduit_mode(settings_mode: str, client_secret: str) -> bool:
    """conduit / websocket as configured; auto is conduit when there is a secret to use."""
    if settings_mode == "auto":
        return bool(client_secret)
    return settings_mode == "conduit"


@dataclass
class ShardStats:
    """One shard this daemon runs, as status pages show it."""

    shard_id: int
    state: str = "connecting"
    session_id: str | None = None
    connections: int = 0
    last_error: str | None = None


@dataclass
class ConduitStats:
    state: str = "starting"
    conduit_id: str | None = None
    shard_count: int = 0
    notifications: int = 0
    duplicates: int = 0
    bad_frames: int = 0
    shards_disabled_seen: int = 0
    takeovers: int = 0
    last_error: str | None = None
    channels: dict[str, dict[str, int]] = field(default_factory=dict)


class ConduitRunner:
    """The daemon's side of the conduit: adopt or create it, hold shards, subscribe channels."""

    def __init__(
        self,
        db: Database,
        sink: EventSink,
        http: aiohttp.ClientSession,
        oauth: OAuth,
        api_url: str,
        eventsub_url: str,
        settings: ConduitSettings,
        app_token: AppToken | None = None,
    ) -> None:
        self.db, self.sink, self.http, self.settings = db, sink, http, settings
        self.client_id = oauth.client_id
        self.eventsub_url = eventsub_url
        self.daemon_id = daemon_identity()
        self.app_token = app_token or AppToken(oauth)  # the bot's one, when it passes it
        self.helix = Helix(http, api_url, oauth.client_id, self.app_token)
        self.claims = ShardClaims(db, oauth.client_id, self.daemon_id, settings.lease_seconds)
        self.stats = ConduitStats()
        self.links: dict[int, ShardLink] = {}
        self.channels: dict[str, frozenset[str]] = {}  # wanted: channel -> granted scopes
        self._subscribed: dict[str, frozenset[str]] = {}
        self._recent = RecentIds(RECENT_IDS)  # compact: a flood leaves no scattered strings
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.shard_rows: list[ShardRow] = []

    # --------------------------------------------------------------------------- supervisor
    async def run(self) -> None:
        """Forever: set up, then claim shards and subscribe channels every round or when woken."""
        attempt = 0
        try:
            while True:
                try:
                    await self._run_once()
                except (HelixError, TokenError, OSError) as exc:
                    self.stats.state, self.stats.last_error = "waiting for Twitch", str(exc)
                except Exception as exc:  # noqa: BLE001 - database blips and the like: retry
                    self.stats.state = "retrying"
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                delay = backoff(attempt, base=1.0, cap=30.0)
                attempt += 1
                log.warning(
                    "conduit_retrying", reason=self.stats.last_error, retry_in_s=round(delay, 1)
                )
                await asyncio.sleep(delay)
        finally:
            await self._stop_links(list(self.links))
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run_once(self) -> None:
        await self.app_token.ensure()
        conduit_id = await self._conduit()
        self.stats.conduit_id, self.stats.state = conduit_id, "running"
        await self._subscribe_shard_disabled(conduit_id)
        self._subscribed = {}
        while True:
            await self._round(conduit_id)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.lease_seconds / 3)
            self._wake.clear()

    def wake(self) -> None:
        """Claim and subscribe now rather than at the next round."""
        self._wake.set()

    async def _round(self, conduit_id: str) -> None:
        try:
            held = await self.claims.claim(self.settings.shards)
            self.shard_rows = await self.claims.rows()
        except Exception as exc:  # noqa: BLE001 - database unreachable: keep reading
            # Sockets already assigned keep capturing (events go to the spool); only a new
            # assignment needs a live lease (ShardLink), so a cut-off daemon never takes a shard
            # back from one that claimed it meanwhile.
            held = list(self.links)
            self.stats.last_error = f"shard leases not renewed: {type(exc).__name__}: {exc}"
            log.warning("conduit_lease_renewal_failed", error=str(exc), shards=held)
        if held and max(held) >= self.stats.shard_count:
            await self._grow(conduit_id, max(held) + 1)
        gone = [s for s in self.links if s not in held]
        if gone:
            log.warning("conduit_shards_released", shards=gone)
        await self._stop_links(gone)
        for shard_id in held:
            if shard_id not in self.links:
                self._start_link(conduit_id, shard_id)
        await self._sync_subscriptions(conduit_id)

    def _start_link(self, conduit_id: str, shard_id: int) -> None:
        link = self.links[shard_id] = ShardLink(self, conduit_id, shard_id)
        link.task = asyncio.create_task(link.run(), name=f"conduit-shard-{shard_id}")

    async def _stop_links(self, shard_ids: list[int]) -> None:
        links = [self.links.pop(s) for s in shard_ids if s in self.links]
        await asyncio.gather(*(link.stop() for link in links), return_exceptions=True)

    # --------------------------------------------------------------------------- conduit
    async def _conduit(self) -> str:
        """The stored conduit if Twitch still has it, else a new one (stored); shard count read."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            # One daemon at a time decides, so two starting together share one conduit.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                "streamerhub:conduit-create:" + self.client_id,
            )
            stored = await conn.fetchval(STORED, self.client_id)
            existing = {
                c["id"]: int(c.get("shard_count") or 0)
                for c in (await self.helix.request("GET", "/eventsub/conduits")).get("data") or []
            }
            if stored in existing:
                self.stats.shard_count = existing[stored]
                log.info("conduit_adopted", conduit_id=stored, shard_count=existing[stored])
                return str(stored)
            body = {"shard_count": self.settings.shards}
            created = (await self.helix.request("POST", "/eventsub/conduits", json=body))["data"][0]
            await conn.execute(STORE, self.client_id, created["id"])
            await conn.execute(FORGET_SHARDS, self.client_id)  # leases of the old conduit
            self.stats.shard_count = int(created.get("shard_count") or self.settings.shards)
            log.info("conduit_created", conduit_id=created["id"], replaced=stored)
            return str(created["id"])

    async def _grow(self, conduit_id: str, count: int) -> None:
        body = {"id": conduit_id, "shard_count": count}
        answer = await self.helix.request("PATCH", "/eventsub/conduits", json=body)
        self.stats.shard_count = int((answer.get("data") or [{}])[0].get("shard_count") or count)
        log.info("conduit_grown", conduit_id=conduit_id, shard_count=self.stats.shard_count)

    async def assign(self, conduit_id: str, shard_id: int, session_id: str) -> None:
        """PATCH the shard onto this session; SessionLost when Twitch refuses."""
        body = {
            "conduit_id": conduit_id,
            "shards": [
                {
                    "id": str(shard_id),
                    "transport": {"method": "websocket", "session_id": session_id},
                }
            ],
        }
        try:
            answer = await self.helix.request("PATCH", "/eventsub/conduits/shards", json=body)
        except (HelixError, TokenError) as exc:
            raise SessionLost(f"shard {shard_id} not assigned: {exc}") from None
        if answer.get("errors"):
            raise SessionLost(f"shard {shard_id} not assigned: {answer['errors'][0]}")

    # --------------------------------------------------------------------------- subscriptions
    def set_channels(self, channels: dict[str, frozenset[str]]) -> None:
        """The connected channels and their scopes (the bot's sync); subscribed next round."""
        if channels != self.channels:
            self.channels = dict(channels)
            self.wake()

    async def _subscribe_shard_disabled(self, conduit_id: str) -> None:
        condition = {"client_id": self.client_id, "conduit_id": conduit_id}
        await self._create(SHARD_DISABLED, "1", condition, conduit_id)

    async def _sync_subscriptions(self, conduit_id: str) -> None:
        for channel_id in [c for c in self._subscribed if c not in self.channels]:
            del self._subscribed[channel_id]  # its grant is gone: Twitch revokes those itself
        for channel_id, scopes in self.channels.items():
            if self._subscribed.get(channel_id) == scopes:
                continue
            results = await self._subscribe_channel(conduit_id, channel_id, scopes)
            await save_subscriptions(self.db, channel_id, results)
            counts: dict[str, int] = {}
            for result in results:
                counts[result.status] = counts.get(result.status, 0) + 1
            self.stats.channels[channel_id] = counts
            if not counts.get("error"):
                self._subscribed[channel_id] = scopes
            log.info("conduit_channel_subscribed", channel_id=channel_id, **counts)

    async def _subscribe_channel(
        self, conduit_id: str, channel_id: str, scopes: frozenset[str]
    ) -> list[SubscriptionResult]:
        limit = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)

        async def one(wanted: Any) -> SubscriptionResult:
            if not allowed(wanted.scope, scopes):
                return SubscriptionResult(wanted, "missing_scope", detail=f"needs {wanted.scope}")
            async with limit:
                try:
                    sub_id = await self._create(
                        wanted.type, wanted.version, dict(wanted.condition), conduit_id
                    )
                except HelixError as exc:
                    return SubscriptionResult(wanted, "error", detail=str(exc))
            return SubscriptionResult(wanted, "enabled", sub_id)

        return list(await asyncio.gather(*(one(w) for w in build_plan(channel_id))))

    async def _create(
        self, type_: str, version: str, condition: dict[str, str], conduit_id: str
    ) -> str | None:
        """Create one conduit subscription; None when it exists already (409: ours, kept)."""
        body = {
            "type": type_,
            "version": version,
            "condition": condition,
            "transport": {"method": "conduit", "conduit_id": conduit_id},
        }
        try:
            created = await self.helix.request("POST", "/eventsub/subscriptions", json=body)
        except HelixError as exc:
            if exc.status == 409:
                return None
            raise
        return str(created["data"][0]["id"])

    # --------------------------------------------------------------------------- frames
    def on_text(self, conn: Session, text: str) -> None:
        """Every frame of every shard, synchronously from its reader."""
        try:
            frame = parse_frame(text)
        except BadFrame as exc:
            return self._bad(exc.reason, text)
        kind = frame.kind
        if kind is FrameKind.NOTIFICATION:
            if frame.subscription_type == SHARD_DISABLED:
                return self._on_shard_disabled(frame.payload.get("event") or {})
            if frame.subscription_type not in KNOWN_TYPES:
                return self._bad(
                    f"unknown subscription type {(frame.subscription_type or '')[:80]!r}", text
                )
            if not self._recent.add(frame.message_id):
                self.stats.duplicates += 1  # Twitch's retry of a frame that did arrive
                return
            self.stats.notifications += 1
            self.sink.submit(frame)
        elif kind is FrameKind.WELCOME:
            if not conn.accept_welcome(frame.session):
                self._bad("unexpected or malformed session_welcome", text)
        elif kind is FrameKind.RECONNECT:
            url = frame.session.get("reconnect_url")
            if isinstance(url, str) and url.startswith(("ws://", "wss://")):
                conn.ask_reconnect(url)
            else:
                self._bad("session_reconnect without a usable reconnect_url", text)
        elif kind is FrameKind.REVOCATION:
            sub = frame.subscription
            log.warning(
                "conduit_subscription_revoked", type=sub.get("type"), status=sub.get("status")
            )
            self.wake()  # resubscribed next round if the grant still allows it
        elif kind is not FrameKind.KEEPALIVE:
            self._bad(f"unknown message_type {frame.message_type[:40]!r}", text)

    def bad(self, reason: str, raw: str) -> None:
        """The reader's callback for frames it cannot even hand over (binary)."""
        self._bad(reason, raw)

    def _bad(self, reason: str, raw: str) -> None:
        self.stats.bad_frames += 1
        log.warning("conduit_bad_frame", reason=reason, size=len(raw))
        self.sink.dead_letter("eventsub", f"{reason} (conduit)", raw)

    def _on_shard_disabled(self, event: dict[str, Any]) -> None:
        """A shard went down. Ours: its link reconnects by itself. Another daemon's: if it does
        not come back shortly, that daemon is gone and this one takes the shard over."""
        self.stats.shards_disabled_seen += 1
        shard = str(event.get("shard_id") or "")
        log.info("conduit_shard_disabled", shard_id=shard, status=event.get("status"))
        if not shard.isdigit() or int(shard) in self.links:
            return
        self.spawn(self._maybe_take_over(int(shard)))

    def spawn(self, coro: Any) -> None:
        """A side task, cancelled when the runner stops."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _maybe_take_over(self, shard_id: int) -> None:
        await asyncio.sleep(TAKEOVER_GRACE)
        conduit_id = self.stats.conduit_id
        if conduit_id is None or shard_id in self.links:
            return
        try:
            if await self._shard_enabled(conduit_id, shard_id):
                return  # its daemon reconnected it
            owner = await self.claims.owner(shard_id)
            if owner is None or owner == self.daemon_id:
                self.wake()  # lapsed or free: the next claim round may take it
                return
            if not await self.claims.take_over(shard_id, owner):
                return
        except Exception as exc:  # noqa: BLE001 - leave it to the leases
            log.warning("conduit_takeover_failed", shard_id=shard_id, error=str(exc))
            return
        self.stats.takeovers += 1
        log.warning("conduit_shard_taken_over", shard_id=shard_id, from_daemon=owner)
        self._start_link(conduit_id, shard_id)
        await self._check_siblings(owner)

    async def _check_siblings(self, owner: str) -> None:
        """A daemon that lost one shard has usually lost them all, and the notification of a
        sibling's loss may have gone to a shard of that same daemon and been dropped: ask
        Twitch about each of its other shards too, rather than wait for their leases."""
        with contextlib.suppress(Exception):  # the leases still hand them over
            for row in await self.claims.rows():
                if row.daemon_id == owner and row.shard_id not in self.links:
                    self.spawn(self._maybe_take_over(row.shard_id))

    async def _shard_enabled(self, conduit_id: str, shard_id: int) -> bool:
        answer = await self.helix.request(
            "GET", "/eventsub/conduits/shards", params={"conduit_id": conduit_id, "first": "100"}
        )
        for shard in answer.get("data") or []:
            if str(shard.get("id")) == str(shard_id):
                return bool(shard.get("status") == "enabled")
        return False

    # --------------------------------------------------------------------------- status
    def risks(self) -> list[str]:
        """For /healthz: this daemon reads no shard (others may, see all_shards)."""
        if any(link.stats.state == "enabled" for link in self.links.values()):
            return []
        why = f" ({self.stats.last_error})" if self.stats.last_error else ""
        return [f"conduit: no shard enabled in this daemon{why}"]

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for the dashboard, /healthz and `twitch status`."""
        stats = self.stats
        return {
            "mode": "conduit",
            "daemon_id": self.daemon_id,
            "state": stats.state,
            "conduit_id": stats.conduit_id,
            "shard_count": stats.shard_count,
            "notifications": stats.notifications,
            "duplicates": stats.duplicates,
            "bad_frames": stats.bad_frames,
            "shards_disabled_seen": stats.shards_disabled_seen,
            "takeovers": stats.takeovers,
            "last_error": stats.last_error,
            "shards": [vars(link.stats).copy() for link in self.links.values()],
            "all_shards": [vars(row).copy() for row in self.shard_rows],
            "channels": dict(stats.channels),
        }


class ShardLink:
    """One shard read by this daemon: connect, assign within the deadline, read, repeat."""

    def __init__(self, runner: ConduitRunner, conduit_id: str, shard_id: int) -> None:
        self.runner, self.conduit_id, self.shard_id = runner, conduit_id, shard_id
        self.stats = ShardStats(shard_id)
        self.task: asyncio.Task[None] | None = None
        self._conns: set[Session] = set()

    async def run(self) -> None:
        attempt = 0
        try:
            while True:
                started = time.monotonic()
                try:
                    reason = await self._session()
                except SessionLost as exc:
                    reason = str(exc)
                self.stats.state, self.stats.last_error = "reconnecting", reason
                self._report(None, "reconnecting")
                log.warning("conduit_shard_lost", shard_id=self.shard_id, reason=reason)
                if time.monotonic() - started >= 30:
                    attempt = 0
                # The first retry is at once: the other shards carry the load meanwhile.
                await asyncio.sleep(0 if attempt == 0 else backoff(attempt, base=0.5, cap=30))
                attempt += 1
        finally:
            for conn in list(self._conns):
                await conn.close(force=True)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _open(self, url: str) -> Session:
        conn = Session(await open_socket(self.runner.http, url), asyncio.get_running_loop())
        self._conns.add(conn)
        conn.start_reading(self.runner.on_text, self.runner.bad, f"conduit-read-{self.shard_id}")
        self.stats.connections += 1
        try:
            await conn.wait_welcome()
        except SessionLost:
            self._conns.discard(conn)
            await conn.close(force=True)
            raise
        return conn

    async def _session(self) -> str:
        self.stats.state = "connecting"
        if not self.runner.claims.still_held(self.shard_id):
            raise SessionLost("lease not renewed (database unreachable?): not reassigning")
        conn = await self._open(self.runner.eventsub_url)
        stopping = False
        try:
            await self.runner.assign(self.conduit_id, self.shard_id, conn.session_id)
            self._enabled(conn)
            while True:
                reason = await conn.watch(KEEPALIVE_SLACK)
                if reason is not None:
                    return reason
                # session_reconnect: Twitch moves the shard to the new session by itself.
                conn = await self._hand_over(conn, conn.reconnect.result())
        except asyncio.CancelledError:
            stopping = True
            raise
        finally:
            # A stop closes gracefully: frames Twitch wrote before it saw our close frame are
            # still read and stored; from then on it retries them on another shard. Frames left
            # unread in the socket's buffer by a forced close would be lost (Twitch counts them
            # delivered). A lost or silent socket is dropped at once, so the shard comes back.
            for other in list(self._conns):
                self._conns.discard(other)
                await other.close(force=not stopping)

    async def _hand_over(self, old: Session, url: str) -> Session:
        try:
            new = await self._open(url)
        except SessionLost as exc:
            old.end(f"session_reconnect failed: {exc}")
            return old
        self._conns.discard(old)
        await old.close()  # gracefully: frames in flight on the old socket are still read
        self._enabled(new)
        return new

    def _enabled(self, conn: Session) -> None:
        self.stats.state, self.stats.session_id = "enabled", conn.session_id
        self.stats.last_error = None
        log.info("conduit_shard_enabled", shard_id=self.shard_id, session_id=conn.session_id)
        self._report(conn.session_id, "enabled")

    def _report(self, session_id: str | None, status: str) -> None:
        self.runner.spawn(self._report_now(session_id, status))

    async def _report_now(self, session_id: str | None, status: str) -> None:
        with contextlib.suppress(Exception):  # status only: a database blip must not matter
            await self.runner.claims.report(self.shard_id, session_id, status)


STORED = "SELECT conduit_id FROM twitch_conduits WHERE client_id = $1"
STORE = """
INSERT INTO twitch_conduits (client_id, conduit_id) VALUES ($1, $2)
    ON CONFLICT (client_id) DO UPDATE SET conduit_id = EXCLUDED.conduit_id, created_at = now()"""
FORGET_SHARDS = "DELETE FROM twitch_conduit_shards WHERE client_id = $1"
