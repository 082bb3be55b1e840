"""`streamerhub twitch login` (device code in the terminal) and `streamerhub twitch status`.

Imports of aiohttp, asyncpg and the bot happen inside the commands: building the parser must
stay cheap for every other `streamerhub` command.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import time
import zoneinfo
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from streamerhub.bot.oauth import LOGIN_SCOPES
from streamerhub.config import Settings
from streamerhub.errors import ConfigError

if TYPE_CHECKING:
    from streamerhub.bot.oauth import DeviceCode
    from streamerhub.db import Database


STATUS_FRESH_S = 60.0  # the daemon rewrites its status file every few seconds


def add_twitch_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `twitch login` and `twitch status` on the top-level subparsers."""
    twitch = sub.add_parser("twitch", parents=[common], help="Twitch channels and EventSub")
    actions = twitch.add_subparsers(dest="twitch_command", required=True, metavar="ACTION")
    login = actions.add_parser(
        "login",
        parents=[common],
        help="connect a Twitch channel (device code, no browser redirect)",
    )
    login.add_argument(
        "--scopes",
        nargs="+",
        metavar="SCOPE",
        default=list(LOGIN_SCOPES),
        help="scopes to ask for (default: every one StreamerHub can use)",
    )
    login.add_argument(
        "--fill-key",
        action="store_true",
        help="also let StreamerHub read the channel's stream key (channel:read:stream_key), to "
        "fill a multistream target's key for you",
    )
    login.set_defaults(handler=cmd_login)
    status = actions.add_parser(
        "status",
        parents=[common],
        help="per channel: connection, subscriptions, gaps, events today",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=cmd_status)


# ----------------------------------------------------------------------------- login


def _scopes(args: argparse.Namespace) -> tuple[str, ...]:
    from streamerhub.bot.oauth import STREAM_KEY_SCOPE

    asked = tuple(args.scopes)
    return (*asked, STREAM_KEY_SCOPE) if args.fill_key and STREAM_KEY_SCOPE not in asked else asked


def cmd_login(args: argparse.Namespace, settings: Settings) -> int:
    from streamerhub.bot.oauth import TokenError

    try:
        code: int = asyncio.run(_with_db(settings, lambda db: _login(db, settings, _scopes(args))))
        return code
    except TokenError as exc:
        print(f"streamerhub: Twitch login failed: {exc}")
        return 1


async def _login(db: Database, settings: Settings, scopes: tuple[str, ...]) -> int:
    import aiohttp

    from streamerhub.bot.credentials import TwitchApp
    from streamerhub.bot.oauth import OAuth
    from streamerhub.bot.tokens import TokenStore, login_with_device_code
    from streamerhub.crypto import load_keyring
    from streamerhub.keys import has_sealed_secrets

    await db.upgrade()
    # Like app.crypto_ctx: a new master key only while nothing is sealed under an old one.
    keyring = load_keyring(settings.data_dir, os.environ, create=not await has_sealed_secrets(db))
    # The application of config.toml / the environment, else the one entered on the dashboard.
    app = TwitchApp(settings, db, keyring)
    await app.load()
    twitch = app.twitch
    if problem := twitch.client_problem():
        raise ConfigError(problem)
    async with aiohttp.ClientSession(headers={"User-Agent": "StreamerHub"}) as http:
        oauth = OAuth(http, twitch.auth_url, twitch.client_id, twitch.client_secret)
        stored = await login_with_device_code(
            oauth, TokenStore(db, keyring), settings.twitch.api_url, _show_code, scopes
        )
    print(
        f"Connected Twitch channel {stored.display_name} (login {stored.login}, id "
        f"{stored.channel_id}) with {len(stored.scopes)} scope(s)."
    )
    missing = sorted(set(scopes) - set(stored.scopes))
    if missing:
        print(f"Not granted: {', '.join(missing)} (those events will not be captured).")
    print(
        "A running daemon picks the channel up within a few seconds; tokens are stored encrypted."
    )
    return 0


def _show_code(code: DeviceCode) -> None:
    print(
        "To connect your Twitch account, open this page in any browser:\n"
        f"    {code.verification_uri}\n"
        f"and check that it shows the code:  {code.user_code}\n"
        f"Waiting for your approval (the code expires in {code.expires_in // 60} min; "
        "Ctrl-C cancels)…",
        flush=True,
    )


async def _with_db(settings: Settings, action: Callable[[Database], Awaitable[Any]]) -> Any:
    from streamerhub.db import open_database

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    async with open_database(settings, own_cluster=False) as db:
        await db.check_not_newer()
        return await action(db)


# ----------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    report = asyncio.run(_with_db(settings, lambda db: _status(db, settings)))
    live = _live_status(settings)
    channels = [_merge(row, live) for row in report]
    health = _daemon_health(settings) if live is not None else None
    conduit = _live_conduit(settings) if live is not None else None
    if args.json:
        body = {
            "daemon_running": live is not None,
            "channels": channels,
            "health": health,
            "conduit": conduit,
        }
        print(json.dumps(body, default=str, indent=2))
    else:
        print(render_status(channels, live is not None))
        if conduit:
            print(render_conduit(conduit))
        if health is not None:
            print(render_health(health))
    return 0


def _daemon_health(settings: Settings) -> dict[str, Any] | None:
    """The running daemon's /healthz (database and write path state), if it answers."""
    import urllib.error
    import urllib.request

    from streamerhub.commands.run import client_url, read_listen_file

    found = read_listen_file(settings.data_dir)  # the daemon of this data dir, on any port
    url = f"{found or client_url(settings.web.host, settings.web.port)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            body: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 still carries the report
        body = json.loads(exc.read())
    except (OSError, ValueError):
        return None
    return body


def render_health(health: dict[str, Any]) -> str:
    """Capture health: the database and the write path, from the daemon's /healthz."""
    lines = [f"capture: {health.get('status')}"]
    lines += [f"  problem: {p}" for p in health.get("problems") or []]
    db = health.get("database") or {}
    down = f"down since {db.get('down_since')}" if not db.get("ok") else "up"
    lines.append(f"  database: {down}, restarts of the embedded server: {db.get('restarts', 0)}")
    store = health.get("store")
    if store:
        age = store.get("spool_oldest_age_s")
        lines.append(
            f"  store: {store['mode']}, {store['queued']} queued in memory"
            f" (at most {store['memory_window']}), spool backlog {store['spool_items']}"
            + (f" (oldest {_age(age)} old)" if age else "")
            + (f", {store['dropped']} dropped" if store.get("dropped") else "")
        )
    return "\n".join(lines)


async def _status(db: Database, settings: Settings) -> list[dict[str, Any]]:
    """Per channel, the stored state: registry row, latest gap, events today, subscriptions."""
    from streamerhub.bot.registry import all_channels
    from streamerhub.bot.subscriptions import stored_subscriptions
    from streamerhub.events.history import events_received_since, latest_gaps
    from streamerhub.web.preferences import in_effect

    clock = await in_effect(db, settings)  # the zone chosen in Settings, else config.toml's
    since = day_start(clock.timezone, clock.day_start_hour)
    registry = await all_channels(db)
    gaps = await latest_gaps(db)
    today = await events_received_since(db, since)
    subs = await stored_subscriptions(db)
    channels = []
    for c in registry:
        gap = gaps.get(c.channel_id)
        mine = [s for s in subs if s.channel_id == c.channel_id]
        channels.append(
            {
                "channel_id": c.channel_id,
                "login": c.login,
                "display_name": c.display_name,
                "status": c.status,
                "status_reason": c.status_reason,
                "scopes": list(c.scopes),
                "validated_at": c.validated_at,
                "gap_started_at": gap.started_at if gap else None,
                "gap_ended_at": gap.ended_at if gap else None,
                "gap_reason": gap.reason if gap else None,
                "gap_backfilled_at": gap.backfilled_at if gap else None,
                "gap_backfilled": gap.backfilled if gap else None,
                "events_today": today.get(c.channel_id, 0),
                "subscriptions": {
                    "enabled": sum(s.status == "enabled" for s in mine),
                    "missing_scope": [
                        s.subscription_type for s in mine if s.status == "missing_scope"
                    ],
                    "revoked": [
                        f"{s.subscription_type} ({s.status.split(':', 1)[-1]})"
                        for s in mine
                        if s.status.startswith("revoked")
                    ],
                    "error": [s.subscription_type for s in mine if s.status == "error"],
                },
            }
        )
    return channels


def day_start(timezone: str, hour: int, now: dt.datetime | None = None) -> dt.datetime:
    """The start of the streamer's current day (time zone and day_start_hour)."""
    local = (now or dt.datetime.now(dt.timezone.utc)).astimezone(zoneinfo.ZoneInfo(timezone))
    start = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    return start if start <= local else start - dt.timedelta(days=1)


def _live_status(settings: Settings) -> dict[str, dict[str, Any]] | None:
    from streamerhub.bot.service import read_status_file

    body = read_status_file(settings.data_dir)
    if not body or time.time() - float(body.get("written_at") or 0) > STATUS_FRESH_S:
        return None
    try:
        os.kill(int(body["pid"]), 0)
    except PermissionError:
        pass  # alive, run by another user (e.g. the systemd service)
    except (OSError, ValueError, KeyError):
        return None
    return {c["channel_id"]: c for c in body.get("channels") or []}


def _live_conduit(settings: Settings) -> dict[str, Any] | None:
    """The daemon's conduit (conduit mode), as its status file last said."""
    from streamerhub.bot.service import read_status_file

    conduit = (read_status_file(settings.data_dir) or {}).get("conduit")
    return conduit if isinstance(conduit, dict) else None


def render_conduit(conduit: dict[str, Any]) -> str:
    """Conduit mode: the conduit, this daemon's shards and every daemon's, in text."""
    lines = [
        f"conduit: {conduit.get('conduit_id') or '(not yet)'} — {conduit.get('state')}, "
        f"{conduit.get('shard_count')} shard(s) on Twitch; this daemon is "
        f"{conduit.get('daemon_id')}"
        + (f" (last error: {conduit['last_error']})" if conduit.get("last_error") else "")
    ]
    for shard in conduit.get("shards") or []:
        lines.append(
            f"  shard {shard['shard_id']} (this daemon): {shard['state']}, session "
            f"{shard.get('session_id') or '-'}, {shard.get('connections', 0)} connection(s)"
        )
    for row in conduit.get("all_shards") or []:
        lease = "lease live" if row.get("live") else "lease lapsed"
        lines.append(
            f"  shard {row['shard_id']}: held by {row['daemon_id']} ({lease}), {row.get('status')}"
        )
    lines.append(
        f"  notifications: {conduit.get('notifications', 0):,}, Twitch retries dropped as "
        f"duplicates: {conduit.get('duplicates', 0):,}, shards taken over: "
        f"{conduit.get('takeovers', 0)}"
    )
    return "\n".join(lines)


def _merge(row: dict[str, Any], live: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    runtime = (live or {}).get(row["channel_id"])
    out = {
        **row,
        "connection": runtime["state"] if runtime else "not running",
        "session_age_s": runtime.get("session_age_s") if runtime else None,
    }
    if runtime and runtime.get("subscriptions"):
        out["subscriptions"] = runtime["subscriptions"]
    if runtime and runtime.get("reason") and not out.get("status_reason"):
        out["connection_reason"] = runtime["reason"]
    return out


def render_status(channels: list[dict[str, Any]], daemon_running: bool) -> str:
    """The human-readable `twitch status` text."""
    if not channels:
        return "No Twitch channel connected: run `streamerhub twitch login`."
    lines = [] if daemon_running else ["(the daemon is not running: showing stored state only)"]
    for c in channels:
        lines.append(
            f"{c['display_name']} ({c['login']}, id {c['channel_id']}): {c['status']}"
            + (f" — {c['status_reason']}" if c.get("status_reason") else "")
        )
        age = f", session age {_age(c['session_age_s'])}" if c.get("session_age_s") else ""
        why = f" ({c['connection_reason']})" if c.get("connection_reason") else ""
        lines.append(f"  connection: {c['connection']}{age}{why}")
        s = c["subscriptions"]
        lines.append(
            f"  subscriptions: {s['enabled']} enabled"
            f"; missing scope: {', '.join(map(_needs, s['missing_scope'])) or 'none'}"
            f"; revoked: {', '.join(s['revoked']) or 'none'}"
            + (f"; failing: {', '.join(s['error'])}" if s.get("error") else "")
        )
        lines.append(f"  last gap: {_gap(c)}")
        lines.append(f"  events stored today: {c['events_today']:,}")
    return "\n".join(lines)


def _needs(label: str) -> str:
    """A type that lacks a scope, with the scope: `channel.chat.message (needs user:read:chat)`."""
    from streamerhub.bot.subscriptions import SCOPE_OF

    scope = SCOPE_OF.get(label.split(" ", 1)[0])
    return f"{label} (needs {scope})" if scope else label


def _gap(c: dict[str, Any]) -> str:
    if not c.get("gap_started_at"):
        return "none"
    start, end = c["gap_started_at"], c.get("gap_ended_at")
    span = f"{_age((end - start).total_seconds())}" if end else "still open"
    filled = f", {c['gap_backfilled']} event(s) backfilled" if c.get("gap_backfilled_at") else ""
    return f"{start:%Y-%m-%d %H:%M:%S %Z} ({span}: {c['gap_reason']}){filled}"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
