"""The app's own Helix token (OAuth client credentials), for public data of any account.

Linking an account by login (one the streamer does not connect) reads only public data: the
user, its follower total, whether it is live. Twitch gives that to an app access token, which
needs the client secret and no user's consent. The token is fetched on first use and again
when Helix answers 401 (`Helix` calls `refresh`).
"""

from __future__ import annotations

import asyncio

import aiohttp

from streamerhub.bot.oauth import OAUTH_TIMEOUT, TokenError, TwitchUnreachable
from streamerhub.log import register_secret

APP_CHANNEL = "app"  # what Helix logs as the "channel" of app-token calls


class AppToken:
    """helix.TokenSource for an app access token (grant_type=client_credentials)."""

    channel_id = APP_CHANNEL

    def __init__(
        self, session: aiohttp.ClientSession, auth_url: str, client_id: str, client_secret: str
    ) -> None:
        self.session, self.auth_url = session, auth_url.rstrip("/")
        self.client_id, self.client_secret = client_id, client_secret
        self._token = ""
        self._lock = asyncio.Lock()

    def access_token(self) -> str:
        return self._token

    async def ready(self) -> AppToken:
        """Fetch the first token (once); later calls return at once."""
        if not self._token:
            await self.refresh("")
        return self

    async def refresh(self, stale: str) -> str:
        """A fresh app token, unless another caller already replaced `stale`."""
        async with self._lock:
            if self._token and self._token != stale:
                return self._token
            form = {
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
            }
            try:
                async with self.session.post(
                    f"{self.auth_url}/token", data=form, timeout=OAUTH_TIMEOUT
                ) as resp:
                    body = await resp.json(content_type=None)
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                raise TwitchUnreachable("Twitch OAuth /token unreachable", exc) from None
            token = body.get("access_token") if isinstance(body, dict) else None
            if status != 200 or not isinstance(token, str) or not token:
                said = body.get("message") if isinstance(body, dict) else None
                raise TokenError(f"the app token was refused ({status}: {said or 'no token'})")
            register_secret(token)
            self._token = token
            return token
