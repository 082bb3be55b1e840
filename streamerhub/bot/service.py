"""The bot as a daemon part: one EventSub connection per connected channel, and its status.

`bot_ctx(deps, key)` builds the cleanup context app.py installs; the running `TwitchBot` hangs on
the app under `key` and `TwitchBot.status()` is what the dashboard shows. Channels are read from
twitch_channels every SYNC_EVERY seconds, so a `streamerhub twitch login` done while the daemon
runs is picked up without a restart. A revoked grant disconnects that channel only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Protocol

import aiohttp
from aiohttp import web

from streamerhub.bot import backfill
from streamerhub.bot.eventsub import EventSink, EventSubClient, Gap, State, SubscriptionResult
from streamerhub.bot.helix import Helix, backoff
from streamerhub.bot.tokens import (ChannelToken, OAuth, TokenError, TokenRevoked, TokenStore,
                                    load_channel_token)
from streamerhub.config import Settings
from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.errors import CryptoError, StreamerHubError
from streamerhub.log import get_logger

log = get_logger(__name__)

SYNC_EVERY = 15.0  # look for channels connected or disconnected by the CLI / dashboard
STATUS_EVERY = 5.0  # rewrite the status file `streamerhub twitch status` reads
STOP_BUDGET = 5.0
STATUS_FILE = "twitch-status.json"
MANAGE_SCOPE = "channel:manage:broadcast"
LOCK_SPACE = "streamerhub:eventsub:"  # advisory lock key prefix: one daemon per channel


class TwitchError(StreamerHubError):
    """A request to the bot that cannot be done (channel not connected, scope missing)."""


class BotStore(EventSink, backfill.BackfillSink, Protocol):
    """What the bot needs from the event store (bot/store.py's EventStore)."""

    async def drain(self) -> None: ...


@dataclass(frozen=True)
class BotDeps:
    """Everything the bot takes from the composition root."""

    settings: Settings
    db: Database
    keyring: Keyring
    store: BotStore


class ChannelRunner:
    """One channel: validate its token, run its EventSub client and the hourly validation."""

    def __init__(self, bot: "TwitchBot", channel_id: str, connected_at: dt.datetime) -> None:
        self.bot, self.channel_id, self.connected_at = bot, channel_id, connected_at
        self.state = "starting"
        self.reason: str | None = None
        self.token: ChannelToken | None = None
        self.client: EventSubClient | None = None
        self.helix: Helix | None = None
        self.task: asyncio.Task[None] | None = None
        self.locked = False  # holds the channel's advisory lock

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"twitch-channel-{self.channel_id}")

    async def stop(self, why: str = "channel stopped") -> None:
        client = self.client
        if client is not None and client.stats.state in (State.CONNECTED, State.RECONNECTING):
            # From now on events are missed: the next start closes and backfills this gap.
            self.bot.deps.store.record_gap_start(self.channel_id, why)
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait([self.task], timeout=STOP_BUDGET)
        self.state = "disconnected" if self.state == "disconnected" else "stopped"

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._run_once()
                return
            except TokenRevoked as exc:
                self.state, self.reason = "disconnected", exc.reason
                return
            except CryptoError as exc:
                self.state, self.reason = "error", str(exc)
                log.error("twitch_channel_tokens_unreadable", channel_id=self.channel_id,
                          error=str(exc))
                return
            except TokenError as exc:
                self.state, self.reason = "waiting for Twitch", str(exc)
            except Exception as exc:  # noqa: BLE001 - a bug in one channel must not stop others
                self.state, self.reason = "restarting", f"{type(exc).__name__}: {exc}"
                log.exception("twitch_channel_crashed", channel_id=self.channel_id)
            delay = backoff(attempt, base=2.0)
            attempt += 1
            log.warning("twitch_channel_retrying", channel_id=self.channel_id, reason=self.reason,
                        retry_in_s=round(delay, 1))
            await asyncio.sleep(delay)

    async def _run_once(self) -> None:
        bot = self.bot
        token = self.token = await load_channel_token(bot.tokens, bot.oauth, self.channel_id)
        await token.validate()
        downtime = await missed_since_last_run(self.bot.deps.db, self.bot.deps.store,
                                               self.channel_id)
        helix = self.helix = Helix(bot.http, bot.api_url, bot.oauth.client_id, token)
        self.client = EventSubClient(
            self.channel_id, bot.http, bot.eventsub_url, helix, lambda: token.scopes,
            bot.deps.store, on_subscriptions=self._subscriptions_changed,
            on_gap=lambda gap: self._backfill(gap, helix), open_gap=downtime)
        self.state, self.reason = "running", None
        tasks = [asyncio.create_task(self.client.run()),
                 asyncio.create_task(token.validate_forever(first_delay=True))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _subscriptions_changed(self, _changed: list[SubscriptionResult]) -> None:
        assert self.client is not None
        await save_subscriptions(self.bot.deps.db, self.channel_id,
                                 list(self.client.stats.subscriptions.values()))

    async def _backfill(self, gap: Gap, helix: Helix) -> None:
        """Backfill a closed gap, then note on its row how many events that recovered."""
        assert self.token is not None
        store, db = self.bot.deps.store, self.bot.deps.db
        await store.drain()  # the gap row and the last live stream events are committed
        channel = backfill.Channel(self.channel_id, self.token.login, self.token.display_name)
        ids = await backfill.backfill_gap(gap, channel, helix, self.token.scopes, store,
                                          StreamHistory(db))
        await store.drain()
        async with db.pool.acquire() as conn:
            # Only what was new: a follow also received live dedupes on its event key.
            count = await conn.fetchval(GAP_BACKFILLED, self.channel_id, gap.started_at, ids)
        log.info("eventsub_gap_backfilled", channel_id=self.channel_id, submitted=len(ids),
                 stored=count, started_at=gap.started_at.isoformat())

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for the dashboard and `twitch status`."""
        stats = self.client.stats if self.client else None
        state = self.state
        if state == "running" and stats is not None:
            state = stats.state.value
        subs = list(stats.subscriptions.values()) if stats else []
        now = time.time()
        return {
            "channel_id": self.channel_id,
            "login": self.token.login if self.token else None,
            "state": state,
            "reason": self.reason or (stats.last_error if stats and
                                      stats.state is not State.CONNECTED else None),
            "session_id": stats.session_id if stats else None,
            "session_age_s": round(now - stats.session_started_at, 1)
            if stats and stats.session_started_at else None,
            "subscriptions": summarise_subscriptions(subs),
            "last_gap": _gap_json(stats.last_gap) if stats and stats.last_gap else None,
            "counters": {k: getattr(stats, k) for k in (
                "connections", "reconnects", "frames", "notifications", "duplicates",
                "bad_frames", "revocations", "gaps")} if stats else {},
            "token_refreshes": self.token.refreshes if self.token else 0,
        }


def summarise_subscriptions(results: list[SubscriptionResult]) -> dict[str, Any]:
    """enabled count plus the labels that are missing a scope, revoked or failing."""
    out: dict[str, Any] = {"enabled": 0, "missing_scope": [], "revoked": [], "error": []}
    for result in results:
        if result.status == "enabled":
            out["enabled"] += 1
        elif result.status.startswith("revoked"):
            out["revoked"].append(result.wanted.label)
        elif result.status == "missing_scope":
            out["missing_scope"].append(result.wanted.label)
        else:
            out["error"].append(result.wanted.label)
    return out


def _gap_json(gap: Gap) -> dict[str, Any]:
    return {"started_at": gap.started_at.isoformat(), "reason": gap.reason,
            "ended_at": gap.ended_at.isoformat() if gap.ended_at else None}


class TwitchBot:
    """All channels of this daemon; `status()` for the dashboard."""

    def __init__(self, deps: BotDeps) -> None:
        self.deps = deps
        settings = deps.settings
        self.client_id = settings.get("twitch", "client_id")
        self.api_url = settings.get("twitch", "api_url")
        self.eventsub_url = settings.get("twitch", "eventsub_url")
        self.auth_url = settings.get("twitch", "auth_url")
        self.status_path = settings.data_dir / STATUS_FILE
        self.tokens = TokenStore(deps.db, deps.keyring)
        self.runners: dict[str, ChannelRunner] = {}
        self.http: aiohttp.ClientSession = None  # type: ignore[assignment]
        self.oauth: OAuth = None  # type: ignore[assignment]
        self._lock_conn: Any = None
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(headers={"User-Agent": "StreamerHub"})
        self.oauth = OAuth(self.http, self.auth_url, self.client_id,
                           self.deps.settings.get("twitch", "client_secret"))
        self._lock_conn = await self.deps.db.pool.acquire()
        if not self.client_id:
            log.info("twitch_not_configured", hint="set [twitch] client_id, then run "
                                                   "`streamerhub twitch login`")
        await self.sync()
        self._loop_task = asyncio.create_task(self._sync_forever(), name="twitch-sync")

    async def stop(self) -> None:
        """Stop every channel (bounded), release the channel locks, close HTTP; idempotent."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        await asyncio.gather(*(r.stop("daemon stopped") for r in self.runners.values()))
        self.write_status()
        if self._lock_conn is not None:
            conn, self._lock_conn = self._lock_conn, None
            await self.deps.db.pool.release(conn)
        if self.http is not None and not self.http.closed:
            await self.http.close()

    async def sync(self) -> None:
        """Start runners for newly connected channels; stop those disconnected or re-logged."""
        if not self.client_id:
            return
        async with self.deps.db.pool.acquire() as conn:
            rows = await conn.fetch(CONNECTED_CHANNELS)
        wanted = {r["channel_id"]: r["connected_at"] for r in rows}
        for channel_id, runner in list(self.runners.items()):
            current = wanted.get(channel_id)
            if current == runner.connected_at and runner.state != "disconnected":
                continue
            await runner.stop()
            await self._unlock(runner)
            # A revoked channel stays listed (with its reason) until it is connected again.
            if current is not None or runner.state != "disconnected":
                del self.runners[channel_id]
        for channel_id, connected_at in wanted.items():
            if channel_id not in self.runners and await self._lock(channel_id):
                runner = self.runners[channel_id] = ChannelRunner(self, channel_id, connected_at)
                runner.locked = True
                runner.start()

    async def _sync_forever(self) -> None:
        synced = time.monotonic()
        while True:
            self.write_status()
            await asyncio.sleep(STATUS_EVERY)
            if time.monotonic() - synced < SYNC_EVERY:
                continue
            synced = time.monotonic()
            try:
                await self.sync()
            except Exception as exc:  # noqa: BLE001 - database blips: try again next round
                log.warning("twitch_sync_failed", error=str(exc))

    async def _lock(self, channel_id: str) -> bool:
        got = await self._lock_conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", LOCK_SPACE + channel_id)
        if not got:
            log.info("twitch_channel_owned_elsewhere", channel_id=channel_id)
        return bool(got)

    async def _unlock(self, runner: ChannelRunner) -> None:
        if runner.locked and self._lock_conn is not None:
            runner.locked = False
            await self._lock_conn.fetchval("SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                                           LOCK_SPACE + runner.channel_id)

    async def update_channel(self, channel_id: str, wanted: dict[str, Any]) -> str:
        """Set title / category (a name or id) / tags of a connected channel; says what was set.

        The multistream jobs' ChannelUpdater (app.py wires it)."""
        runner = self.runners.get(channel_id)
        if runner is None or runner.helix is None or runner.token is None:
            raise TwitchError(f"channel {channel_id} is not connected in this daemon")
        if MANAGE_SCOPE not in runner.token.scopes:
            raise TwitchError(f"the token lacks {MANAGE_SCOPE}: run `streamerhub twitch login`")
        changes: dict[str, Any] = {}
        if wanted.get("title"):
            changes["title"] = str(wanted["title"])[:140]
        if wanted.get("category"):
            category = await _category(runner.helix, str(wanted["category"]))
            changes["game_id"] = category["id"]
        if wanted.get("tags") is not None:
            changes["tags"] = [str(t) for t in wanted["tags"]][:10]
        if changes:
            await runner.helix.modify_channel(channel_id, changes)
        shown = {**changes, **({"category": wanted["category"]} if "game_id" in changes else {})}
        return "set " + ", ".join(f"{k}={v!r}" for k, v in shown.items() if k != "game_id")

    def status(self) -> list[dict[str, Any]]:
        """One entry per channel this daemon runs (see ChannelRunner.status)."""
        return [runner.status() for runner in self.runners.values()]

    def write_status(self) -> None:
        """Publish the status for `streamerhub twitch status` (atomic replace, 0600)."""
        body = {"pid": os.getpid(), "written_at": time.time(), "channels": self.status()}
        tmp = self.status_path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(body, fh, default=str)
            os.replace(tmp, self.status_path)
        except OSError as exc:
            log.warning("twitch_status_write_failed", path=str(self.status_path), error=str(exc))


class BotHelixStats:
    """analytics.pollers.HelixStats over the bot's channels: each call uses the channel's own
    token (GET /streams any connected one). HelixError carries `.status`."""

    def __init__(self, bot: TwitchBot) -> None:
        self.bot = bot

    def _helix(self, channel_id: str | None = None) -> Helix:
        runners = [self.bot.runners.get(channel_id)] if channel_id else list(
            self.bot.runners.values())
        for runner in runners:
            if runner is not None and runner.helix is not None and runner.state == "running":
                return runner.helix
        raise TwitchError(f"channel {channel_id or '(any)'} is not connected in this daemon")

    async def fetch_streams(self, channel_ids: Any) -> list[dict[str, Any]]:
        return await self._helix().streams(list(channel_ids)) if channel_ids else []

    async def fetch_follower_total(self, channel_id: str) -> int:
        return await self._helix(channel_id).follower_total(channel_id)

    async def fetch_subscriptions(self, channel_id: str) -> dict[str, int]:
        return await self._helix(channel_id).subscription_totals(channel_id)


async def _category(helix: Helix, name: str) -> dict[str, Any]:
    if name.isdigit():
        return {"id": name}
    found = await helix.find_category(name)
    if found is None:
        raise TwitchError(f"Twitch has no category matching {name!r}")
    return found


async def missed_since_last_run(db: Database, store: BotStore, channel_id: str) -> Gap | None:
    """The gap this start closes: the one a stop left open, else (after a crash) one from the
    last event received; None on a first start."""
    # A gap mark queued by a stop just before (a channel restarted in this daemon) is committed
    # first, so it is found rather than doubled.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(store.drain(), STOP_BUDGET)
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow(OPEN_GAP, channel_id)
        if row is not None:
            return Gap(channel_id, row["started_at"], row["reason"])
        last = await conn.fetchval(LAST_RECEIVED, channel_id)
    if last is None:
        return None
    reason = "the daemon was not running (it stopped without notice)"
    store.record_gap_start(channel_id, reason, last)
    return Gap(channel_id, last, reason)


class StreamHistory:
    """The newest stored stream.online/offline of a channel, for stream reconciliation."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def last_stream(self, channel_id: str) -> tuple[str, str | None] | None:
        async with self.db.pool.acquire() as conn:
            row = await conn.fetchrow(LAST_STREAM, channel_id)
        return (row["kind"], row["stream_id"]) if row else None


async def save_subscriptions(db: Database, channel_id: str,
                             results: list[SubscriptionResult]) -> None:
    """Upsert eventsub_subscriptions; the two raid subscriptions share one (type, version) row."""
    rows: dict[tuple[str, str], list[SubscriptionResult]] = {}
    for result in results:
        rows.setdefault((result.wanted.type, result.wanted.version), []).append(result)
    args = []
    for (type_, version), group in rows.items():
        worst = next((r for r in group if r.status != "enabled"), group[0])
        ids = ",".join(r.twitch_id for r in group if r.twitch_id) or None
        details = "; ".join(f"{r.wanted.label}: {r.detail}" if len(group) > 1 else r.detail
                            for r in group if r.detail) or None
        args.append((channel_id, type_, version, worst.status, ids, details))
    async with db.pool.acquire() as conn:
        await conn.executemany(SAVE_SUBSCRIPTION, args)


def bot_ctx(deps: Callable[[web.Application], BotDeps],
            key: web.AppKey[TwitchBot]) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context: start the bot after the store, stop it before the store drains."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        bot = TwitchBot(deps(app))
        await bot.start()
        app[key] = bot
        try:
            yield
        finally:
            await bot.stop()

    return ctx


def read_status_file(data_dir: Path) -> dict[str, Any] | None:
    """The daemon's last published status, or None when there is none."""
    try:
        return json.loads((data_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


CONNECTED_CHANNELS = """
SELECT channel_id, connected_at FROM twitch_channels
 WHERE status = 'connected' AND access_token_sealed IS NOT NULL ORDER BY connected_at"""

SAVE_SUBSCRIPTION = """
INSERT INTO eventsub_subscriptions (channel_id, subscription_type, version, status, twitch_id,
                                    detail, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (channel_id, subscription_type, version) DO UPDATE SET
    status = EXCLUDED.status, twitch_id = EXCLUDED.twitch_id, detail = EXCLUDED.detail,
    updated_at = now()"""

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
SELECT greatest((SELECT max(received_at) FROM twitch_events
                  WHERE channel_id = $1 AND NOT backfilled),
                (SELECT max(ended_at) FROM eventsub_gaps WHERE channel_id = $1))"""

LAST_STREAM = """
SELECT kind, stream_id FROM twitch_streams WHERE channel_id = $1
 ORDER BY occurred_at DESC LIMIT 1"""
