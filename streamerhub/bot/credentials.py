"""The Twitch application's credentials in effect: [twitch] client_id / client_secret from
config.toml or the environment when set there (they win), else the ones the owner entered on the
dashboard, stored in twitch_app with the secret sealed like every other secret.

Saving checks them with Twitch first (a client-credentials grant: a wrong secret is refused
there, with a message saying what to do), then tells the listeners (the running bot reloads its
OAuth client, token refreshers and conduit mode), so no restart is needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Awaitable, Callable

import aiohttp

from streamerhub.bot.oauth import ClientMisconfigured, OAuth, TokenError, TwitchUnreachable
from streamerhub.config import Settings, TwitchSettings
from streamerhub.crypto import Keyring, aad_for
from streamerhub.db import Database
from streamerhub.errors import CryptoError, StreamerHubError
from streamerhub.log import get_logger, register_secret

log = get_logger(__name__)

CONSOLE_URL = "https://dev.twitch.tv/console/apps"
AAD = aad_for("twitch_app", 1, "client_secret_sealed")

LOAD = "SELECT client_id, client_secret_sealed FROM twitch_app WHERE id = 1"
STORE = """
INSERT INTO twitch_app (id, client_id, client_secret_sealed) VALUES (1, $1, $2)
    ON CONFLICT (id) DO UPDATE SET client_id = EXCLUDED.client_id,
        client_secret_sealed = EXCLUDED.client_secret_sealed, updated_at = now()"""


class AppRejected(StreamerHubError):
    """The credentials typed in cannot be used; the message says why and what to do."""


class TwitchApp:
    """The credentials in effect, and saving the dashboard's (web/context.py's TwitchAppSetup)."""

    def __init__(self, settings: Settings, db: Database, keyring: Keyring) -> None:
        self.settings, self.db, self.keyring = settings, db, keyring
        self._stored: tuple[str, str] | None = None
        self.listeners: list[Callable[[], Awaitable[None]]] = []

    @property
    def source(self) -> str:
        """config (config.toml or the environment), dashboard, or "" when none is set."""
        configured = self.settings.twitch
        if configured.client_id or configured.client_secret:
            return "config"
        return "dashboard" if self._stored else ""

    @property
    def twitch(self) -> TwitchSettings:
        """[twitch] with the credentials in effect (the URLs and client type as configured)."""
        if self.source != "dashboard" or self._stored is None:
            return self.settings.twitch
        client_id, secret = self._stored
        return dataclasses.replace(self.settings.twitch, client_id=client_id, client_secret=secret)

    @property
    def client_id(self) -> str:
        return self.twitch.client_id

    @property
    def secret_set(self) -> bool:
        return bool(self.twitch.client_secret)

    async def load(self) -> None:
        """Read the dashboard's credentials; a secret that will not open is logged and ignored
        (the page then asks for it again) rather than stopping the daemon."""
        async with self.db.pool.acquire() as conn:
            row = await conn.fetchrow(LOAD)
        if row is None:
            self._stored = None
            return
        try:
            secret = self.keyring.open_str(row["client_secret_sealed"], AAD)
        except CryptoError as exc:
            log.warning("twitch_app_secret_unreadable", error=str(exc))
            self._stored = None
            return
        register_secret(secret)
        self._stored = (row["client_id"], secret)

    async def save(self, client_id: str, client_secret: str) -> None:
        """Check with Twitch, store (secret sealed), and have the bot use them now.

        An empty secret keeps the stored one (the page never shows it back)."""
        client_id, client_secret = client_id.strip(), client_secret.strip()
        if self.source == "config":
            raise AppRejected(
                "The Twitch application is set in config.toml or the environment, which win: "
                "change it there (and restart), or remove it there to manage it here."
            )
        if not client_secret and self._stored is not None:
            client_secret = self._stored[1]
        if not client_id or not client_secret:
            raise AppRejected(
                f"Give both the Client ID and the Client secret of your application ({CONSOLE_URL}"
                " → Manage: the Client ID is shown there, New Secret makes a secret)."
            )
        register_secret(client_secret)
        await self.check(client_id, client_secret)
        blob = self.keyring.seal(client_secret, AAD)
        async with self.db.pool.acquire() as conn:
            await conn.execute(STORE, client_id, blob)
        self._stored = (client_id, client_secret)
        log.info("twitch_app_saved", client_id=client_id)
        for listener in self.listeners:
            await listener()

    async def check(self, client_id: str, client_secret: str) -> None:
        """Ask Twitch for an app access token with them: refused means they are wrong."""
        async with aiohttp.ClientSession(headers={"User-Agent": "StreamerHub"}) as http:
            oauth = OAuth(http, self.settings.twitch.auth_url, client_id, client_secret)
            try:
                grant = await oauth.client_credentials()
            except TwitchUnreachable as exc:
                raise AppRejected(
                    f"Twitch could not be reached ({exc.cause}) to check the application. "
                    "Check the network and try again."
                ) from None
            except ClientMisconfigured as exc:
                raise AppRejected(_refused(str(exc))) from None
            except TokenError as exc:
                raise AppRejected(
                    f"Twitch could not check the application just now ({exc}). Try again."
                ) from None
            with contextlib.suppress(TokenError):  # it only proved the pair: none left behind
                await oauth.revoke(grant.access_token)


def _refused(detail: str) -> str:
    reason = detail.split("app access token: ", 1)[-1].split(")", 1)[0]
    return (
        f"Twitch refused this Client ID and Client secret ({reason}). Copy both again from "
        f"{CONSOLE_URL} → your application → Manage (New Secret makes a new secret; the old "
        "one stops working) and save again."
    )
