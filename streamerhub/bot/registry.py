"""The channel registry (twitch_channels) as the rest of the daemon reads it.

`connected_channels()` is the one definition of a connected channel: marked connected and holding
a sealed access token. The bot runs exactly these; the analytics pollers, the multistream jobs'
channel updates, the demo and the category search get them from here, through app.py's wiring
where their wing may not import bot/. Writes (logins, refreshes, disconnects) are in bot/tokens.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from streamerhub.db import Database


@dataclass(frozen=True)
class ConnectedChannel:
    """A channel the bot should capture."""

    channel_id: str
    login: str
    display_name: str
    connected_at: dt.datetime


@dataclass(frozen=True)
class ChannelRecord:
    """One row of the registry, connected or not, tokens left out."""

    channel_id: str
    login: str
    display_name: str
    status: str
    status_reason: str | None
    scopes: tuple[str, ...]
    connected_at: dt.datetime
    validated_at: dt.datetime | None


async def connected_channels(db: Database) -> list[ConnectedChannel]:
    """Every connected channel, oldest connection first."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(CONNECTED)
    return [
        ConnectedChannel(r["channel_id"], r["login"], r["display_name"], r["connected_at"])
        for r in rows
    ]


async def all_channels(db: Database) -> list[ChannelRecord]:
    """Every channel ever connected (disconnected ones with their reason), oldest first."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(ALL)
    return [
        ChannelRecord(
            r["channel_id"],
            r["login"],
            r["display_name"],
            r["status"],
            r["status_reason"],
            tuple(r["scopes"]),
            r["connected_at"],
            r["validated_at"],
        )
        for r in rows
    ]


async def is_channel_login(db: Database, login: str) -> bool:
    """Whether `login` (lower case) is a channel in the registry, connected or not."""
    async with db.pool.acquire() as conn:
        found: bool = await conn.fetchval(LOGIN_KNOWN, login)
    return found


async def has_channels(db: Database) -> bool:
    """Whether any channel was ever connected."""
    async with db.pool.acquire() as conn:
        found: bool = await conn.fetchval(ANY_CHANNEL)
    return found


CONNECTED = """
SELECT channel_id, login, display_name, connected_at FROM twitch_channels
 WHERE status = 'connected' AND access_token_sealed IS NOT NULL ORDER BY connected_at"""

ALL = """
SELECT channel_id, login, display_name, status, status_reason, scopes, connected_at, validated_at
  FROM twitch_channels ORDER BY connected_at, channel_id"""

LOGIN_KNOWN = "SELECT EXISTS (SELECT 1 FROM twitch_channels WHERE lower(login) = $1)"

ANY_CHANNEL = "SELECT EXISTS (SELECT 1 FROM twitch_channels)"
