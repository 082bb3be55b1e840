"""One connected channel in the daemon: its token, its EventSub client, its gaps and its status.

`ChannelRunner.start()` validates the channel's token, closes the gap the daemon's downtime left
(backfilling it), then runs the EventSub client and the hourly token validation until stopped.
A revoked grant or unreadable tokens end the runner for good; anything else is retried with
backoff, and a bug in one channel never stops another.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

import aiohttp

from streamerhub.bot import backfill
from streamerhub.bot.eventsub import EventSink, EventSubClient, Gap, State, Stats
from streamerhub.bot.helix import Helix, backoff
from streamerhub.bot.oauth import OAuth, TokenError, TokenRevoked
from streamerhub.bot.subscriptions import (
    SubscriptionResult,
    save_subscriptions,
    summarise_subscriptions,
)
from streamerhub.bot.tokens import ChannelToken, TokenStore, load_channel_token
from streamerhub.db import Database
from streamerhub.errors import CryptoError
from streamerhub.events import history
from streamerhub.log import get_logger

log = get_logger(__name__)

STOP_BUDGET = 5.0
COUNTERS = (
    "connections",
    "reconnects",
    "frames",
    "notifications",
    "duplicates",
    "bad_frames",
    "revocations",
    "gaps",
)


class BotStore(EventSink, backfill.BackfillSink, Protocol):
    """What the bot needs from the event store (events/store.py's EventStore)."""

    async def drain(self) -> None: ...


@dataclass(frozen=True)
class Shared:
    """What every channel of the bot uses: storage, tokens and the Twitch endpoints."""

    db: Database
    store: BotStore
    tokens: TokenStore
    oauth: OAuth
    http: aiohttp.ClientSession
    api_url: str
    eventsub_url: str
    conduit: bool = False  # events come through the daemon's conduit (bot/conduit.py)
    # Is the channel still this daemon's, asked of the database (bot/ownership.py)?
    confirm_owner: Callable[[str], Awaitable[bool]] | None = None


class ChannelState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"  # the EventSub client's own state tells more
    WAITING = "waiting for Twitch"
    RESTARTING = "restarting"
    ERROR = "error"
    STOPPED = "stopped"
    DISCONNECTED = "disconnected"  # the grant is gone: listed with its reason until a new login


class ChannelRunner:
    """One channel: validate its token, run its EventSub client and the hourly validation."""

    def __init__(self, shared: Shared, channel_id: str, connected_at: dt.datetime) -> None:
        self.shared, self.channel_id, self.connected_at = shared, channel_id, connected_at
        self.state = ChannelState.STARTING
        self.reason: str | None = None
        self.token: ChannelToken | None = None
        self.client: EventSubClient | None = None
        self.helix: Helix | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"twitch-channel-{self.channel_id}")

    async def stop(self, why: str = "channel stopped", record_gap: bool = True) -> None:
        """Cancel the channel (bounded); from now on its events are missed unless handed over."""
        client = self.client
        if (
            record_gap
            and client is not None
            and client.stats.state in (State.CONNECTED, State.RECONNECTING)
        ):
            # The next start closes and backfills this gap.
            self.shared.store.record_gap_start(self.channel_id, why)
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait([self.task], timeout=STOP_BUDGET)
        revoked = self.token.revoked if self.token is not None else None
        if self.state is not ChannelState.DISCONNECTED and revoked:
            # Revoked while we stopped it: the revocation's own NOTIFY woke the bot's sync.
            self.state, self.reason = ChannelState.DISCONNECTED, revoked
        elif self.state is not ChannelState.DISCONNECTED:
            self.state = ChannelState.STOPPED

    async def _run(self) -> None:
        attempt = 0
        while not await self._attempt():
            delay = backoff(attempt, base=2.0)
            attempt += 1
            log.warning(
                "twitch_channel_retrying",
                channel_id=self.channel_id,
                reason=self.reason,
                retry_in_s=round(delay, 1),
            )
            await asyncio.sleep(delay)

    async def _attempt(self) -> bool:
        """Run the channel once; True when it ended for good, False to retry."""
        try:
            await self._run_once()
        except TokenRevoked as exc:
            self.state, self.reason = ChannelState.DISCONNECTED, exc.reason
        except CryptoError as exc:
            self.state, self.reason = ChannelState.ERROR, str(exc)
            log.error(
                "twitch_channel_tokens_unreadable", channel_id=self.channel_id, error=str(exc)
            )
        except TokenError as exc:
            self.state, self.reason = ChannelState.WAITING, str(exc)
            return False
        except Exception as exc:
            self.state, self.reason = ChannelState.RESTARTING, f"{type(exc).__name__}: {exc}"
            log.exception("twitch_channel_crashed", channel_id=self.channel_id)
            return False
        return True

    async def _run_once(self) -> None:
        shared = self.shared
        token = self.token = await load_channel_token(shared.tokens, shared.oauth, self.channel_id)
        await token.validate()
        downtime = await missed_since_last_run(shared.db, shared.store, self.channel_id)
        helix = self.helix = Helix(shared.http, shared.api_url, shared.oauth.client_id, token)
        if shared.conduit:
            # Conduit mode: no socket of its own; the channel keeps its token fresh and its Helix.
            self.state, self.reason = ChannelState.RUNNING, None
            await token.validate_forever(first_delay=True)
            return
        self.client = EventSubClient(
            self.channel_id,
            shared.http,
            shared.eventsub_url,
            helix,
            lambda: token.scopes,
            shared.store,
            on_subscriptions=self._subscriptions_changed,
            on_gap=lambda gap: self._backfill(gap, helix),
            on_revoked=token.validate_soon,
            open_gap=downtime,
            confirm_owner=self._confirm_owner(),
        )
        self.state, self.reason = ChannelState.RUNNING, None
        await _first_failure(self.client.run(), token.validate_forever(first_delay=True))

    def _confirm_owner(self) -> Callable[[], Awaitable[bool]] | None:
        confirm = self.shared.confirm_owner
        return None if confirm is None else lambda: confirm(self.channel_id)

    async def _subscriptions_changed(self, _changed: list[SubscriptionResult]) -> None:
        assert self.client is not None
        await save_subscriptions(
            self.shared.db, self.channel_id, list(self.client.stats.subscriptions.values())
        )

    async def _backfill(self, gap: Gap, helix: Helix) -> None:
        """Backfill a closed gap, then note on its row how many events that recovered."""
        assert self.token is not None
        store, db = self.shared.store, self.shared.db
        await store.drain()  # the gap row and the last live stream events are committed
        channel = backfill.Channel(self.channel_id, self.token.login, self.token.display_name)
        ids = await backfill.backfill_gap(
            gap, channel, helix, self.token.scopes, store, history.StreamHistory(db)
        )
        await store.drain()
        # Only what was new: a follow also received live dedupes on its event key.
        count = await history.note_gap_backfilled(db, self.channel_id, gap.started_at, ids)
        log.info(
            "eventsub_gap_backfilled",
            channel_id=self.channel_id,
            submitted=len(ids),
            stored=count,
            started_at=gap.started_at.isoformat(),
        )

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for the dashboard and `twitch status`."""
        stats = self.client.stats if self.client else None
        token = self.token
        return {
            "channel_id": self.channel_id,
            "login": token.login if token else None,
            "state": self._shown_state(stats),
            "reason": self._shown_reason(stats),
            **_session_status(stats),
            "token_refreshes": token.refreshes if token else 0,
        }

    def _shown_state(self, stats: Stats | None) -> str:
        if self.state is ChannelState.RUNNING and stats is not None:
            return stats.attention[0] if stats.attention else stats.state.value
        return self.state

    def _shown_reason(self, stats: Stats | None) -> str | None:
        if self.state is ChannelState.RUNNING and stats is not None and stats.attention:
            return stats.attention[1]
        if self.reason or stats is None or stats.state is State.CONNECTED:
            return self.reason or None
        return stats.last_error


def _session_status(stats: Stats | None) -> dict[str, Any]:
    """The EventSub client's part of a channel's status."""
    if stats is None:
        return {
            "session_id": None,
            "session_age_s": None,
            "subscriptions": summarise_subscriptions([]),
            "last_gap": None,
            "counters": {},
        }
    started = stats.session_started_at
    return {
        "session_id": stats.session_id,
        "session_age_s": round(time.time() - started, 1) if started else None,
        "subscriptions": summarise_subscriptions(list(stats.subscriptions.values())),
        "last_gap": gap_json(stats.last_gap) if stats.last_gap else None,
        "counters": {k: getattr(stats, k) for k in COUNTERS},
    }


def gap_json(gap: Gap) -> dict[str, Any]:
    """A gap for the status file and the dashboard."""
    return {
        "started_at": gap.started_at.isoformat(),
        "reason": gap.reason,
        "ended_at": gap.ended_at.isoformat() if gap.ended_at else None,
    }


async def _first_failure(*coros: Any) -> None:
    """Run side by side until the first one raises (then cancel the others and re-raise)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def missed_since_last_run(db: Database, store: BotStore, channel_id: str) -> Gap | None:
    """The gap this start closes: the one a stop left open, else (after a crash) one from the
    last event received; None on a first start."""
    # A gap mark queued by a stop just before (a channel restarted in this daemon) is committed
    # first, so it is found rather than doubled.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(store.drain(), STOP_BUDGET)
    still_open = await history.open_gap(db, channel_id)
    if still_open is not None:
        return Gap(channel_id, *still_open)
    last = await history.last_received(db, channel_id)
    if last is None:
        return None
    reason = "the daemon was not running (it stopped without notice)"
    store.record_gap_start(channel_id, reason, last)
    return Gap(channel_id, last, reason)
