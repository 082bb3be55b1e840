"""What the dashboard needs from the rest of the daemon, handed over by app.py (the only root).

web/ never imports bot/ or ffmpeg/: connecting a Twitch channel goes through `ChannelLink`, a small
protocol app.py implements with the bot's token store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from streamerhub.config import Settings
from streamerhub.db import Database
from streamerhub.pubsub import Hub


class ChannelLink(Protocol):
    """Connect or disconnect a Twitch channel from a token grant got in the browser."""

    scopes: tuple[str, ...]

    async def connect(self, grant: dict[str, Any]) -> dict[str, str]:
        """Store the grant sealed; return {"channel_id", "login", "display_name"}."""

    async def disconnect(self, channel_id: str) -> None:
        """Revoke and forget the channel's tokens; its history stays."""

    async def search_categories(self, query: str) -> list[dict[str, str]]:
        """Twitch categories matching `query` ([{"id", "name"}]), asked with a connected
        channel's token; [] when no channel is connected."""


@dataclass
class Services:
    """The daemon's parts the dashboard uses, resolved once the database is up."""

    settings: Settings
    db: Database
    hub: Hub
    channel_link: ChannelLink | None = None
    multistream: bool = False   # the /api/v1 multistream service is mounted
    demo: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


SERVICES = web.AppKey("web_services", Services)


def services(request: web.Request) -> Services:
    return request.config_dict[SERVICES]
