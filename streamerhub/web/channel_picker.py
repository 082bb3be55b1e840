"""The channel selector every dashboard page shows: the channels there are and the one chosen."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamerhub.web.context import services


async def channels(request: web.Request) -> list[dict[str, Any]]:
    """Connected (and formerly connected) channels, for the channel selector."""
    overview = services(request).twitch_overview
    known = await overview.channels() if overview is not None else []
    return [
        {
            "channel_id": c.channel_id,
            "login": c.login,
            "display_name": c.display_name,
            "status": c.status,
        }
        for c in known
    ]


def chosen_channel(request: web.Request, known: list[dict[str, Any]]) -> str | None:
    """The channel the query asks for if it is known, else the first one (None: no channel)."""
    wanted = request.query.get("channel")
    ids = [c["channel_id"] for c in known]
    if wanted in ids:
        return wanted
    return ids[0] if ids else None
