"""The bot as a daemon part: one EventSub connection per connected channel, and its status.

`bot_ctx(deps, key)` builds the cleanup context app.py installs; the running `TwitchBot` hangs on
the app under `key` and `TwitchBot.status()` is what the dashboard shows. Channels are read from
twitch_channels when a login or disconnect NOTIFYs (bot/ownership.py listens), and every
SYNC_EVERY seconds in case a notification was missed, so a `streamerhub twitch login` done while
the daemon runs is picked up at once without a restart. A revoked grant disconnects that channel
only. One channel's life is bot/channel.py; which daemon owns a channel is bot/ownership.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

import aiohttp
from aiohttp import web

from streamerhub.bot.channel import (
    BotStore,
    ChannelRunner,
    ChannelState,
    Shared,
)
from streamerhub.bot.conduit import ConduitRunner, conduit_mode
from streamerhub.bot.credentials import TwitchApp
from streamerhub.bot.helix import Helix
from streamerhub.bot.oauth import AppToken, OAuth
from streamerhub.bot.ownership import Ownership
from streamerhub.bot.registry import all_channels, connected_channels
from streamerhub.bot.tokens import ChannelToken, TokenStore
from streamerhub.config import Settings, TwitchSettings
from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.errors import StreamerHubError
from streamerhub.log import get_logger

log = get_logger(__name__)

SYNC_EVERY = 15.0  # a safety net: logins and disconnects NOTIFY the bot at once
STATUS_EVERY = 5.0  # rewrite the status file `streamerhub twitch status` reads
STATUS_FILE = "twitch-status.json"
MANAGE_SCOPE = "channel:manage:broadcast"


class TwitchError(StreamerHubError):
    """A request to the bot that cannot be done (channel not connected, scope missing)."""


@dataclass(frozen=True)
class BotDeps:
    """Everything the bot takes from the composition root."""

    settings: Settings
    db: Database
    keyring: Keyring
    store: BotStore
    # The credentials in effect (config, else the dashboard's); None: [twitch] as configured.
    app: TwitchApp | None = None


class TwitchBot:
    """All channels of this daemon; `status()` for the dashboard."""

    def __init__(self, deps: BotDeps) -> None:
        self.deps = deps
        settings = deps.settings
        self.api_url = settings.twitch.api_url
        self.eventsub_url = settings.twitch.eventsub_url
        self.auth_url = settings.twitch.auth_url
        self.status_path = settings.data_dir / STATUS_FILE
        self.tokens = TokenStore(deps.db, deps.keyring)
        self.runners: dict[str, ChannelRunner] = {}
        # Set by start(), before the bot is handed to anyone (bot_ctx): never read as None.
        self.http: aiohttp.ClientSession = None  # type: ignore[assignment]  # see above
        self.oauth: OAuth = None  # type: ignore[assignment]  # see above
        self.shared: Shared = None  # type: ignore[assignment]  # see above
        # The app's own token (public data, the conduit): one per bot, when a secret is set.
        self.app_token: AppToken | None = None
        self._wake = asyncio.Event()
        self.ownership = Ownership(deps.db, self._wake.set)
        # One sync at a time: the dashboard's, a NOTIFY's and the timer's may coincide.
        self._syncing = asyncio.Lock()
        self._reloading = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None
        self.conduit: ConduitRunner | None = None
        self._conduit_task: asyncio.Task[None] | None = None
        self._unreachable_since: float | None = None  # first failed sync of the current outage
        self._configure()

    @property
    def twitch(self) -> TwitchSettings:
        """[twitch] with the application credentials in effect now."""
        app = self.deps.app
        return app.twitch if app is not None else self.deps.settings.twitch

    def _configure(self) -> None:
        """Take the credentials in effect (at start, and again on reload)."""
        twitch = self.twitch
        self.client_id = twitch.client_id
        self.conduit_mode = conduit_mode(self.deps.settings.conduit.mode, twitch.client_secret)

    async def reload(self) -> None:
        """New application credentials (saved on the dashboard): stop everything built on the
        old ones (OAuth client, token refreshers, conduit) and start again on the new."""
        async with self._reloading:
            if not self.running:  # not started yet, or stopping: start() reads them anyway
                self._configure()
                return
            log.info("twitch_app_reloading")
            await self.stop("the Twitch application changed")
            self.conduit, self._unreachable_since = None, None
            self.runners = {}
            self._configure()
            await self.start()

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(headers={"User-Agent": "StreamerHub"})
        secret = self.twitch.client_secret
        self.oauth = OAuth(self.http, self.auth_url, self.client_id, secret)
        self.app_token = AppToken(self.oauth) if self.client_id and secret else None
        self.shared = Shared(
            self.deps.db,
            self.deps.store,
            self.tokens,
            self.oauth,
            self.http,
            self.api_url,
            self.eventsub_url,
            conduit=self.conduit_mode,
            confirm_owner=self.ownership.confirm,
        )
        if self.client_id and self.conduit_mode:
            self.conduit = ConduitRunner(
                self.deps.db,
                self.deps.store,
                self.http,
                self.oauth,
                self.api_url,
                self.eventsub_url,
                self.deps.settings.conduit,
                self.app_token,
            )
            self._conduit_task = asyncio.create_task(self.conduit.run(), name="twitch-conduit")
            log.info("twitch_conduit_mode", daemon_id=self.conduit.daemon_id)
        if not self.client_id:
            log.info(
                "twitch_not_configured",
                hint="enter the Twitch application on the dashboard (Settings) or set [twitch] "
                "client_id, then connect a channel (dashboard or `streamerhub twitch login`)",
            )
        elif problem := self.twitch.client_problem():
            log.warning("twitch_client_misconfigured", hint=problem)
        await self.sync()
        self._loop_task = asyncio.create_task(self._sync_forever(), name="twitch-sync")

    async def stop(self, why: str = "daemon stopped") -> None:
        """Stop every channel (bounded), release the channel locks, close HTTP; idempotent."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self._conduit_task is not None and self.conduit is not None:
            self._conduit_task.cancel()
            await asyncio.gather(self._conduit_task, return_exceptions=True)
            with contextlib.suppress(Exception):  # the leases lapse by themselves anyway
                await self.conduit.claims.release()
        async with self._syncing:
            await asyncio.gather(*(r.stop(why) for r in self.runners.values()))
            self.write_status()
            await self.ownership.close()
        if self.http is not None and not self.http.closed:
            await self.http.close()

    async def sync(self) -> None:
        """Start runners for newly connected channels; stop those disconnected, re-logged, or
        whose lock another daemon holds now."""
        if not self.client_id:
            return
        async with self._syncing:
            for channel_id in await self.ownership.ensure():
                await self._hand_over(channel_id)
            wanted = {c.channel_id: c.connected_at for c in await connected_channels(self.deps.db)}
            if self.conduit is not None:
                # Every daemon subscribes every channel on the shared conduit (a repeat is a 409).
                self.conduit.set_channels(
                    {
                        c.channel_id: frozenset(c.scopes)
                        for c in await all_channels(self.deps.db)
                        if c.channel_id in wanted
                    }
                )
            await self._stop_changed(wanted)
            await self._start_new(wanted)

    async def _stop_changed(self, wanted: dict[str, Any]) -> None:
        for channel_id, runner in list(self.runners.items()):
            current = wanted.get(channel_id)
            if current == runner.connected_at and runner.state != ChannelState.DISCONNECTED:
                continue
            await runner.stop()
            await self.ownership.release(channel_id)
            # A revoked channel stays listed (with its reason) until it is connected again.
            if current is not None or runner.state != ChannelState.DISCONNECTED:
                del self.runners[channel_id]

    async def _start_new(self, wanted: dict[str, Any]) -> None:
        for channel_id, connected_at in wanted.items():
            if channel_id not in self.runners and await self.ownership.take(channel_id):
                runner = self.runners[channel_id] = ChannelRunner(
                    self.shared, channel_id, connected_at
                )
                runner.start()

    async def _hand_over(self, channel_id: str) -> None:
        """Our lock went with its connection and another daemon took it: it captures now."""
        runner = self.runners.pop(channel_id, None)
        log.warning("twitch_channel_taken_over", channel_id=channel_id)
        if runner is not None:
            await runner.stop("another daemon took the channel over", record_gap=False)

    async def _sync_forever(self) -> None:
        synced = time.monotonic()
        while True:
            self.write_status()
            if not await self._sync_due(synced):
                continue
            synced = time.monotonic()
            try:
                await self.sync()
                self._unreachable_since = None
            except Exception as exc:  # noqa: BLE001 - database blips: try again next round
                log.warning("twitch_sync_failed", error=str(exc))
                synced = -SYNC_EVERY  # ...the next round, not a whole SYNC_EVERY later
                await self._fence()

    async def _fence(self) -> None:
        """Conduit mode: a daemon that cannot reach the database for lease_seconds lets its
        channels go (token refreshes, Helix polls), since their locks went with its connection
        and another daemon may hold them now. Capture goes on through the conduit's shards; the
        channels come back with the next successful sync."""
        if not self.conduit_mode or not self.runners:
            return
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        if now - self._unreachable_since < self.deps.settings.conduit.lease_seconds:
            return
        log.warning(
            "twitch_channels_released",
            reason="database unreachable",
            channels=sorted(self.runners),
        )
        async with self._syncing:
            runners, self.runners = list(self.runners.values()), {}
            await asyncio.gather(
                *(r.stop("database unreachable", record_gap=False) for r in runners)
            )
            self.ownership.let_go()

    async def _sync_due(self, synced: float) -> bool:
        """Wait one status round, or less when woken; True when a sync is due."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), STATUS_EVERY)
        woken = self._wake.is_set()
        self._wake.clear()
        return woken or time.monotonic() - synced >= SYNC_EVERY

    async def update_channel(self, channel_id: str, wanted: dict[str, Any]) -> str:
        """Set title / category (a name or id) / tags of a connected channel; says what was set.

        The multistream jobs' ChannelUpdater (app.py wires it)."""
        runner = self.runners.get(channel_id)
        if runner is None or runner.helix is None or runner.token is None:
            raise TwitchError(f"channel {channel_id} is not connected in this daemon")
        if MANAGE_SCOPE not in runner.token.scopes:
            raise TwitchError(f"the token lacks {MANAGE_SCOPE}: run `streamerhub twitch login`")
        changes = await _channel_changes(runner.helix, wanted)
        if changes:
            await runner.helix.modify_channel(channel_id, changes)
        shown = {**changes, **({"category": wanted["category"]} if "game_id" in changes else {})}
        return "set " + ", ".join(f"{k}={v!r}" for k, v in shown.items() if k != "game_id")

    @property
    def running(self) -> bool:
        """Started and not stopped: its HTTP session (and OAuth client) may be used."""
        return self.http is not None and not self.http.closed

    def live_token(self, channel_id: str) -> ChannelToken | None:
        """The token holder of a channel this daemon runs (its one refresher), if usable."""
        runner = self.runners.get(channel_id)
        token = runner.token if runner is not None else None
        return token if token is not None and not token.revoked else None

    def status(self) -> list[dict[str, Any]]:
        """One entry per channel this daemon runs (see ChannelRunner.status)."""
        return [runner.status() for runner in self.runners.values()]

    def write_status(self) -> None:
        """Publish the status for `streamerhub twitch status` (atomic replace, 0600)."""
        body = {
            "pid": os.getpid(),
            "written_at": time.time(),
            "channels": self.status(),
            "conduit": self.conduit.status() if self.conduit is not None else None,
        }
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
        runners = (
            [self.bot.runners.get(channel_id)] if channel_id else list(self.bot.runners.values())
        )
        for runner in runners:
            if (
                runner is not None
                and runner.helix is not None
                and runner.state is ChannelState.RUNNING
            ):
                return runner.helix
        raise TwitchError(f"channel {channel_id or '(any)'} is not connected in this daemon")

    async def connected_channel_ids(self) -> list[str]:
        """The connected channels (bot/registry.py) this daemon runs, by id: with several
        daemons, each channel is polled by the one holding its lock, never twice."""
        ours = self.bot.runners
        return sorted(
            c.channel_id for c in await connected_channels(self.bot.deps.db) if c.channel_id in ours
        )

    async def fetch_streams(self, channel_ids: Sequence[str]) -> list[dict[str, Any]]:
        return await self._helix().streams(list(channel_ids)) if channel_ids else []

    async def fetch_follower_total(self, channel_id: str) -> int:
        return await self._helix(channel_id).follower_total(channel_id)

    async def fetch_subscriptions(self, channel_id: str) -> dict[str, int]:
        return await self._helix(channel_id).subscription_totals(channel_id)


class BotChannelUpdater:
    """ffmpeg/channels.py's ChannelUpdater: a multistream job's title / category / tags go to
    its connected channels through the running bot (TwitchBot.update_channel)."""

    def __init__(self, bot: Callable[[], TwitchBot | None], db: Callable[[], Database]) -> None:
        self.bot, self.db = bot, db

    async def __call__(self, channel_id: str, wanted: dict[str, Any]) -> str:
        bot = self.bot()
        if bot is None:
            raise TwitchError("the Twitch bot is not running in this daemon")
        return await bot.update_channel(channel_id, wanted)

    async def connected_channel_ids(self) -> list[str]:
        """Every connected channel (bot/registry.py), by id."""
        return [c.channel_id for c in await connected_channels(self.db())]


async def _channel_changes(helix: Helix, wanted: dict[str, Any]) -> dict[str, Any]:
    """The PATCH /channels body for a wanted title / category / tags."""
    changes: dict[str, Any] = {}
    if wanted.get("title"):
        changes["title"] = str(wanted["title"])[:140]
    if wanted.get("category"):
        category = await _category(helix, str(wanted["category"]))
        changes["game_id"] = category["id"]
    if wanted.get("tags") is not None:
        changes["tags"] = [str(t) for t in wanted["tags"]][:10]
    return changes


async def _category(helix: Helix, name: str) -> dict[str, Any]:
    if name.isdigit():
        return {"id": name}
    found = await helix.find_category(name)
    if found is None:
        raise TwitchError(f"Twitch has no category matching {name!r}")
    return found


def bot_ctx(
    deps: Callable[[web.Application], BotDeps], key: web.AppKey[TwitchBot]
) -> Callable[[web.Application], AsyncIterator[None]]:
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
        body = json.loads((data_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None
