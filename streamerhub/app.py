"""The composition root: builds the aiohttp Application and wires every part through AppKeys."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from aiohttp import web

from streamerhub import __version__, systemd
from streamerhub.analytics.export import ExportRequest, open_export
from streamerhub.analytics.periods import Calendar
from streamerhub.analytics.pollers import AnalyticsPollers, PollerConfig
from streamerhub.backup.service import BackupService, backup_before_upgrade
from streamerhub.bot.accounts import BotTwitchAccounts
from streamerhub.bot.botaccount import TwitchBotAccount
from streamerhub.bot.chat import BotChannelFacts, BotChatSender, ChatTap, Runners
from streamerhub.bot.credentials import TwitchApp
from streamerhub.bot.link import TwitchChannelLink, TwitchOverviewFacts
from streamerhub.bot.registry import all_channels
from streamerhub.bot.service import (
    BotChannelUpdater,
    BotDeps,
    BotHelixStats,
    TwitchBot,
    bot_ctx,
)
from streamerhub.chatbot.service import TIMER_TICK_S, ChatBot
from streamerhub.chatbot.store import ChatbotStore
from streamerhub.clock import Clock, StreamerClock
from streamerhub.config import Settings
from streamerhub.crypto import Keyring, load_keyring
from streamerhub.db import Database, open_database
from streamerhub.events.retention import chat_retention
from streamerhub.events.store import STALL_S, EventStore
from streamerhub.ffmpeg.jobstore import RunHistory
from streamerhub.ffmpeg.linked import StreamKeyUnavailable
from streamerhub.ffmpeg.service import Multistream
from streamerhub.keys import has_sealed_secrets
from streamerhub.log import get_logger
from streamerhub.looplag import LoopLag, monitoring
from streamerhub.pubsub import Hub
from streamerhub.web.api import AUTHORIZERS, PREFIX, bearer_authorizer, build_api
from streamerhub.web.auth import api_token
from streamerhub.web.chatbot_page import API_ROUTES as CHATBOT_ROUTES
from streamerhub.web.chatbot_page import CHATBOT
from streamerhub.web.openapi import openapi_json
from streamerhub.web.preferences import load as load_clock_choice

log = get_logger(__name__)

SETTINGS = web.AppKey("settings", Settings)
# The streamer's time zone and day start for every part: config.toml's until the choice made in
# the browser is loaded (database_ctx); Settings changes it at once (streamerhub/clock.py).
CLOCK = web.AppKey("clock", StreamerClock)
DB = web.AppKey("db", Database)
KEYRING = web.AppKey("keyring", Keyring)
STARTED_AT = web.AppKey("started_at", float)
HUB = web.AppKey("hub", Hub)
MULTISTREAM = web.AppKey("multistream", Multistream)
EVENTS = web.AppKey("events", EventStore)
TWITCH = web.AppKey("twitch", TwitchBot)
# The dashboard's Twitch link (sign-in, connecting channels, category search); demo.py connects
# its fake channel through it too.
CHANNEL_LINK = web.AppKey("channel_link", TwitchChannelLink)
# The Twitch application's credentials in effect (config, else entered on the dashboard).
TWITCH_APP = web.AppKey("twitch_app", TwitchApp)
# Set by demo.py (the only module that loads the fake Twitch) when `run --demo` adds it.
DEMO_MODE = web.AppKey("demo_mode", bool)
BACKUPS = web.AppKey("backups", BackupService)
LOOP_LAG = web.AppKey("loop_lag", LoopLag)
# Between the EventSub reader and the store: hands the chat bot its copy of chat and support events.
CHAT_TAP = web.AppKey("chat_tap", ChatTap)


async def looplag_ctx(app: web.Application) -> AsyncIterator[None]:
    async with monitoring(app[LOOP_LAG]):
        yield


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start or reach PostgreSQL, migrate, and stop the embedded cluster last."""
    async with contextlib.AsyncExitStack() as stack:
        # minutes on a big history (a backup, then migrations that backfill rollups)
        async with systemd.starting("starting the database; backup and migrations if needed"):
            db = await stack.enter_async_context(open_database(app[SETTINGS]))
            app[BACKUPS] = BackupService(
                app[SETTINGS], db, embedded=not app[SETTINGS].database.url, clock=app[CLOCK]
            )
            await backup_before_upgrade(app[BACKUPS])
            await db.upgrade()
            app[DB] = db
            # The zone chosen in the browser, before any part reads a time (jobs, backups).
            app[CLOCK].set(await load_clock_choice(db))
        yield


async def crypto_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the master key; create one only while the database holds no sealed secret yet."""
    settings = app[SETTINGS]
    has_secrets = await has_sealed_secrets(app[DB])
    app[KEYRING] = load_keyring(settings.data_dir, os.environ, create=not has_secrets)
    yield


async def multistream_ctx(app: web.Application) -> AsyncIterator[None]:
    """Targets, library, jobs: running jobs restored after db + keys; children stopped first."""
    async with app[MULTISTREAM].running(app[DB], app[KEYRING]):
        yield


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """The event store: batched commits (spooled to disk while PostgreSQL is away), published
    to the hub after commit; stopped after the bot, so what it received is flushed."""
    async with (
        EventStore(app[DB], app[SETTINGS].data_dir, app[HUB].events) as store,
        chat_retention(app[DB], app[SETTINGS].events.chat_text_days),
    ):
        app[EVENTS] = store
        yield


async def analytics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Viewer samples while live and follower/sub totals, through the bot's Helix clients;
    started after the bot, stopped before it."""
    settings = app[SETTINGS]
    config = PollerConfig(
        sample_interval_s=settings.analytics.sample_interval,
        totals_interval_s=settings.analytics.totals_interval,
    )
    clock = app[CLOCK]
    pollers = AnalyticsPollers(
        app[DB].pool, BotHelixStats(app[TWITCH]), Calendar.from_clock(clock.current), config
    )

    def follow(chosen: Clock) -> None:  # "yesterday" of the daily follower check
        pollers.totals.calendar = Calendar.from_clock(chosen)

    clock.listeners.append(follow)
    await pollers.start()
    yield
    clock.listeners.remove(follow)
    await pollers.stop()


async def channel_link_ctx(app: web.Application) -> AsyncIterator[None]:
    """The one Twitch link of this daemon, over the bot's token store (once keys are loaded),
    and the application credentials it and the bot use (a change on the dashboard reloads
    the bot: no restart)."""
    twitch_app = app[TWITCH_APP] = TwitchApp(app[SETTINGS], app[DB], app[KEYRING])
    await twitch_app.load()

    async def reload_bot() -> None:
        if (bot := app.get(TWITCH)) is not None:
            await bot.reload()

    twitch_app.listeners.append(reload_bot)
    app[CHANNEL_LINK] = TwitchChannelLink(
        app[SETTINGS], app[DB], app[KEYRING], lambda: app.get(TWITCH), twitch_app
    )
    yield


async def backup_ctx(app: web.Application) -> AsyncIterator[None]:
    """The daily backup; started last, so a backup being taken stops before anything else."""
    task = asyncio.create_task(app[BACKUPS].run_schedule())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _exporter(app: web.Application) -> Any:
    async def open_for(request: ExportRequest) -> Any:
        db = app[DB]
        return await open_export(
            db.pool, Calendar.from_clock(app[CLOCK].current), lambda: all_channels(db), request
        )

    return open_for


def _bot_deps(app: web.Application) -> BotDeps:
    app[CHAT_TAP] = ChatTap(app[EVENTS])
    return BotDeps(app[SETTINGS], app[DB], app[KEYRING], app[CHAT_TAP], app[TWITCH_APP])


async def chatbot_ctx(app: web.Application) -> AsyncIterator[None]:
    """The chat bot: started after the bot (it speaks through the bot's channels), stopped
    before it; the tap offers it events only while it runs."""
    runners = Runners(lambda: app.get(TWITCH))
    minute = app[SETTINGS].chatbot.minute_s
    account = TwitchBotAccount(app[SETTINGS], app[DB], app[KEYRING])
    await account.start()
    sender = BotChatSender(runners, account)
    chatbot = ChatBot(
        ChatbotStore(app[DB]),
        sender,
        BotChannelFacts(runners),
        minute_s=minute,
        timer_tick_s=min(TIMER_TICK_S, minute / 2),
        account=account,
        speakers=sender,
    )
    await chatbot.start()
    app[CHATBOT] = chatbot
    app[CHAT_TAP].offer = chatbot.offer
    yield
    app[CHAT_TAP].offer = None
    await chatbot.stop()
    await account.stop()


async def systemd_ctx(app: web.Application) -> AsyncIterator[None]:
    """WATCHDOG=1 pings while the loop and the writer progress; STOPPING=1 when shutdown begins."""
    interval = systemd.watchdog_interval()
    task = asyncio.create_task(_watchdog(app, interval)) if interval else None
    yield
    systemd.notify("STOPPING=1")
    if task:
        task.cancel()


async def _watchdog(app: web.Application, interval: float) -> None:
    # The ping runs on the loop, so a blocked loop sends none. A writer that has work and has
    # moved nothing for STALL_S is hung (every commit and spool write has a timeout): let
    # systemd restart us. A *wedged* writer (database and disk both refusing) is waiting on
    # resources, not hung: a restart would drop what it holds, so /healthz reports it instead.
    while True:
        store = app.get(EVENTS)
        if store is None or store.mode == "wedged" or store.stalled_for() < STALL_S:
            systemd.notify("WATCHDOG=1")
        else:
            log.error("watchdog_withheld", writer_stalled_s=store.stalled_for())
        await asyncio.sleep(interval)


async def _arm_forced_exit(app: web.Application) -> None:
    # A second SIGINT/SIGTERM during the graceful stop means "now": skip the rest of teardown.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _force_exit, sig)


def _force_exit(sig: signal.Signals) -> None:
    log.warning("forced_exit", signal=sig.name)
    os._exit(128 + sig)


async def healthz(request: web.Request) -> web.Response:
    """Overall status and each part's state; 503 whenever capture is at risk (with why)."""
    app = request.app
    db = app[DB]
    db_ok = await db.ping()
    state = db.state
    risks: list[str] = []
    if not db_ok:
        risks.append(
            f"the database is down{_since(state.down_since)}: events are kept in the spool on disk"
            + ("; the embedded server is being restarted" if state.embedded else "")
        )
    body: dict[str, Any] = {
        "version": __version__,
        "uptime_s": round(time.monotonic() - app[STARTED_AT], 1),
        "database": {
            "ok": db_ok,
            "down_since": _iso(state.down_since),
            "embedded": state.embedded,
            "restarts": state.restarts,
        },
        "loop_lag": app[LOOP_LAG].snapshot(),
    }
    store = app.get(EVENTS)
    if store is not None:
        store.note_database(db_ok)
        health = await store.health()
        risks += health.pop("at_risk")
        body["store"] = {
            "mode": health["mode"],
            "received": health["received"],
            "stored": health["stored"],
            "queued": health["queued"],
            "memory_window": health["memory_window"],
            "spool_items": health["spool_items"],
            "spool_oldest_age_s": health["spool_oldest_age_s"],
            "spool_error": health["spool_error"],
            "dropped": health["dropped"],
            "writer_stalled_s": health["writer_stalled_s"],
        }
    bot = app.get(TWITCH)
    if bot is not None:
        body["channels"] = [_channel_health(c) for c in bot.status()]
        risks += [
            f"channel {c['login'] or c['channel_id']}: {c['state']}"
            + (f" ({c['reason']})" if c.get("reason") else "")
            for c in body["channels"]
            if c["state"] in AT_RISK_STATES
        ]
        if bot.conduit is not None:
            body["conduit"] = bot.conduit.status()
            risks += bot.conduit.risks()
    body = {"status": "at_risk" if risks else "ok", "problems": risks, **body}
    return web.json_response(body, status=503 if risks else 200)


AT_RISK_STATES = ("waiting to reconnect", "disconnected")


def capture_problems(app: web.Application) -> list[str]:
    """The dashboard banner: what /healthz would report, from the last known states (no I/O)."""
    problems = []
    state = app[DB].state
    if not state.up:
        problems.append(
            f"The database is down{_since(state.down_since)}: events are kept on disk and "
            "stored once it is back."
        )
    store = app.get(EVENTS)
    return problems + (store.risks() if store is not None else [])


def capture_state(app: web.Application) -> dict[str, Any]:
    """Database and write-path state for the Settings page."""
    state = app[DB].state
    store = app.get(EVENTS)
    bot = app.get(TWITCH)
    return {
        "database_up": state.up,
        "database_down_since": _iso(state.down_since),
        "restarts": state.restarts,
        "store": store.status() if store is not None else None,
        "conduit": bot.conduit.status() if bot is not None and bot.conduit is not None else None,
    }


def _channel_health(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "channel_id": status["channel_id"],
        "login": status.get("login"),
        "state": status["state"],
        "reason": status.get("reason"),
        "last_gap": status.get("last_gap"),
    }


def _since(at: float | None) -> str:
    return f" since {_iso(at)}" if at is not None else ""


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")


def build_app(settings: Settings) -> web.Application:
    """Build the daemon: each part is a cleanup context, started in order, stopped in reverse."""
    app = web.Application()
    app[SETTINGS] = settings
    app[CLOCK] = StreamerClock.from_settings(settings)
    app[STARTED_AT] = time.monotonic()
    app[HUB] = Hub()
    app[LOOP_LAG] = LoopLag()
    app[MULTISTREAM] = Multistream(settings, publish=app[HUB].streams.publish, clock=app[CLOCK])
    # A job's title/category/tags go to its connected Twitch channels through the bot's Helix
    # "modify channel information" call (ffmpeg/channels.py ChannelUpdater).
    app[MULTISTREAM].channel_updater = BotChannelUpdater(lambda: app.get(TWITCH), lambda: app[DB])
    # Linked Twitch accounts of targets (who they are, live on Twitch, the stream key).
    app[MULTISTREAM].accounts = BotTwitchAccounts(
        lambda: app.get(TWITCH), lambda: app[DB], StreamKeyUnavailable
    )
    app.cleanup_ctx.extend(
        [
            systemd_ctx,
            looplag_ctx,
            database_ctx,
            crypto_ctx,
            channel_link_ctx,
            multistream_ctx,
            events_ctx,
            bot_ctx(_bot_deps, TWITCH),
            chatbot_ctx,
            analytics_ctx,
            backup_ctx,
        ]
    )
    app.on_shutdown.append(_arm_forced_exit)
    app.router.add_get("/healthz", healthz)
    # /api/v1: each authorizer may let a request in; the dashboard appends its session check.
    app[AUTHORIZERS] = [bearer_authorizer(api_token(settings.data_dir))]
    multistream: Multistream = app[MULTISTREAM]
    app.add_subapp(PREFIX, build_api(multistream, _exporter(app), CHATBOT_ROUTES))
    app.router.add_get("/api/openapi.json", openapi_json)
    add_dashboard(app, settings)
    return app


def add_dashboard(app: web.Application, settings: Settings) -> None:
    """The dashboard (web/): pages, sessions and the live feed over the parts above."""
    from streamerhub.log import MASK
    from streamerhub.web import auth, setup_web
    from streamerhub.web.context import Services

    def resolve(app: web.Application) -> Services:
        keyring, token = app[KEYRING], api_token(settings.data_dir)
        key_info = {
            "id": keyring.current_id,
            "source": keyring.source,
            "retired": len(keyring.retired),
        }
        link = app[CHANNEL_LINK]
        return Services(
            settings,
            app[DB],
            app[HUB],
            link,
            clock=app[CLOCK],
            multistream=MULTISTREAM in app,
            demo=app.get(DEMO_MODE, False),
            extra={
                "key_info": key_info,
                "api_token_hint": MASK + token[-4:],
                "capture_problems": lambda: capture_problems(app),
                "capture_state": lambda: capture_state(app),
            },
            twitch_auth=link,
            twitch_app=app[TWITCH_APP],
            twitch_overview=TwitchOverviewFacts(app[DB], lambda: app.get(TWITCH)),
            multistream_history=RunHistory(
                app[DB], linked_gap_s=settings.ffmpeg.twitch_check_interval * 4 * 3
            ),
            backups=app.get(BACKUPS),
        )

    app[AUTHORIZERS].append(auth.api_session_check)
    setup_web(app, settings, resolve)


def on_ready(settings: Settings) -> Any:
    """Called by web.run_app once the sockets listen: log the URL and tell systemd."""

    def ready(_message: str) -> None:
        host = settings.web.host
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{settings.web.port}/"
        log.info(
            "ready",
            url=url,
            data_dir=str(settings.data_dir),
            version=__version__,
            next=f"open {url} in a browser (the first visit creates the owner account)",
        )
        systemd.notify("READY=1")
        systemd.notify(f"STATUS=ready: {url}")

    return ready
