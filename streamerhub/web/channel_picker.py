"""The channel selector every dashboard page shows: the channels there are and the one chosen."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamerhub.web.context import services

# twitch_channels belongs to bot/ (the ownership check reports this line): the read stays here until
# the dashboard gets channels through a service protocol, as it gets multistream runs
# (web/services.py).
CHANNELS = """
SELECT channel_id, login, display_name, status FROM twitch_channels
 ORDER BY connected_at, channel_id"""


async def channels(request: web.Request) -> list[dict[str, Any]]:
    """Connected (and formerly connected) channels, for the channel selector."""
    async with services(request).db.pool.acquire() as conn:
        rows = await conn.fetch(CHANNELS)
    return [dict(r) for r in rows]


def chosen_channel(request: web.Request, known: list[dict[str, Any]]) -> str | None:
    """The channel the query asks for if it is known, else the first one (None: no channel)."""
    wanted = request.query.get("channel")
    ids = [c["channel_id"] for c in known]
    if wanted in ids:
        return wanted
    return ids[0] if ids else None
