"""Connecting a Twitch channel from the dashboard: web/'s ChannelLink over the bot's token store."""

from __future__ import annotations

from typing import Any, Callable

from streamerhub.config import Settings
from streamerhub.crypto import Keyring
from streamerhub.db import Database


class TwitchChannelLink:
    """web/'s ChannelLink over the bot's token store: a channel connected in the browser is
    stored sealed like one from `streamerhub twitch login`, and the bot is asked to sync at once."""

    def __init__(self, settings: Settings, db: Database, keyring: Keyring,
                 bot: Callable[[], Any]) -> None:
        from streamerhub.bot.oauth import LOGIN_SCOPES
        from streamerhub.bot.tokens import TokenStore

        self.settings, self.scopes, self.db, self.bot = settings, LOGIN_SCOPES, db, bot
        self.store = TokenStore(db, keyring)

    async def connect(self, grant: dict[str, Any]) -> dict[str, str]:
        from streamerhub.bot.oauth import Grant

        who = grant["validated"]
        channel_id, login = str(who["user_id"]), str(who["login"])
        await self.store.save_login(channel_id, login, login, Grant.from_json(grant))
        await self._sync()
        return {"channel_id": channel_id, "login": login, "display_name": login}

    async def disconnect(self, channel_id: str) -> None:
        await self.store.disconnect(channel_id, "disconnected by the owner on the dashboard")
        await self._sync()

    async def _sync(self) -> None:
        # Start (or stop) the channel's EventSub client now rather than at the bot's next sync.
        if (bot := self.bot()) is not None:
            await bot.sync()

    async def search_categories(self, query: str) -> list[dict[str, str]]:
        import aiohttp

        from streamerhub.bot.helix import Helix
        from streamerhub.bot.oauth import OAuth
        from streamerhub.bot.tokens import load_channel_token

        channel = await self.db.pool.fetchval(
            "SELECT channel_id FROM twitch_channels WHERE status = 'connected' "
            "AND access_token_sealed IS NOT NULL ORDER BY connected_at LIMIT 1")
        if channel is None:
            return []
        get = self.settings.get
        async with aiohttp.ClientSession() as http:
            oauth = OAuth(http, get("twitch", "auth_url"), get("twitch", "client_id"),
                          get("twitch", "client_secret"))
            token = await load_channel_token(self.store, oauth, channel)
            helix = Helix(http, get("twitch", "api_url"), get("twitch", "client_id"), token,
                          retries=1)
            body = await helix.request("GET", "/search/categories", {"query": query, "first": "10"})
        return [{"id": str(c["id"]), "name": str(c["name"])} for c in body.get("data") or []]
