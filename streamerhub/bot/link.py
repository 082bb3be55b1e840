"""What the dashboard gets from the bot: web/context.py's Twitch protocols over the bot's parts.

- `TwitchChannelLink` is web's `TwitchAuth` and `ChannelLink`: every OAuth call goes through
  bot/oauth.py's client (the running bot's, or a short-lived one when the bot is not running), a
  channel connected in the browser is stored sealed like one from `streamerhub twitch login`, and
  the category search uses the running bot's token holder for the channel, so a refresh the
  search needs is the bot's one refresh of that grant.
- `TwitchOverviewFacts` is web's `TwitchOverview`: the registry, the stored subscriptions and the
  event log's gaps, read through their owners' functions.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import aiohttp

from streamerhub.bot import registry
from streamerhub.bot.credentials import TwitchApp
from streamerhub.bot.helix import Helix, HelixError
from streamerhub.bot.oauth import (
    LOGIN_SCOPES,
    CodeRejected,
    Grant,
    Identity,
    OAuth,
    TokenError,
    TwitchUnreachable,
    authorize_url,
)
from streamerhub.bot.service import TwitchBot
from streamerhub.bot.subscriptions import (
    StoredSubscription,
    SubscriptionHealth,
    stored_subscriptions,
    subscription_health,
)
from streamerhub.bot.tokens import ChannelToken, TokenStore, load_channel_token
from streamerhub.config import Settings
from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.errors import StreamerHubError
from streamerhub.events import history
from streamerhub.log import get_logger

log = get_logger(__name__)

CATEGORY_RESULTS = "10"


class LinkError(StreamerHubError):
    """A Twitch round trip started in the browser failed; the message is shown on the page."""


@dataclass(frozen=True)
class LinkedChannel:
    """A channel just connected from the browser."""

    channel_id: str
    login: str
    display_name: str


def _unreachable(exc: TwitchUnreachable) -> LinkError:
    return LinkError(f"Twitch could not be reached ({exc.cause}). Check the network and try again.")


class TwitchChannelLink:
    """web's TwitchAuth and ChannelLink over the bot's OAuth client, token store and registry."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        keyring: Keyring,
        bot: Callable[[], TwitchBot | None],
        app: TwitchApp | None = None,
    ) -> None:
        self.settings, self.db, self.bot, self.app = settings, db, bot, app
        self.scopes = LOGIN_SCOPES
        self.store = TokenStore(db, keyring)
        self.auth_url = settings.twitch.auth_url

    @property
    def client_id(self) -> str:
        """The application in effect now (the dashboard may set it while the daemon runs)."""
        return (self.app.twitch if self.app else self.settings.twitch).client_id

    @property
    def client_secret(self) -> str:
        return (self.app.twitch if self.app else self.settings.twitch).client_secret

    def _running_bot(self) -> TwitchBot | None:
        bot = self.bot()
        return bot if bot is not None and bot.running else None

    @contextlib.asynccontextmanager
    async def _oauth(self) -> AsyncIterator[OAuth]:
        """The running bot's OAuth client, else one on a session for this call only."""
        bot = self._running_bot()
        if bot is not None:
            yield bot.oauth
            return
        async with aiohttp.ClientSession(headers={"User-Agent": "StreamerHub"}) as http:
            yield OAuth(http, self.auth_url, self.client_id, self.client_secret)

    # ------------------------------------------------------------------------- TwitchAuth

    def authorize_url(
        self, redirect_uri: str, scopes: tuple[str, ...], state: str, force_verify: bool = False
    ) -> str:
        return authorize_url(
            self.auth_url, self.client_id, redirect_uri, scopes, state, force_verify
        )

    async def exchange_code(self, code: str, redirect_uri: str) -> Grant:
        try:
            async with self._oauth() as oauth:
                return await oauth.exchange_code(code, redirect_uri)
        except CodeRejected as exc:
            raise LinkError(
                f"Twitch refused the sign-in code ({exc.status}: {exc.message}). "
                "Check the application's Client ID and secret (Settings → Twitch application) "
                "and the redirect URL registered with Twitch, then try again."
            ) from None
        except TwitchUnreachable as exc:
            raise _unreachable(exc) from None

    async def validate(self, access_token: str) -> Identity:
        try:
            async with self._oauth() as oauth:
                info = await oauth.validate(access_token)
        except TwitchUnreachable as exc:
            raise _unreachable(exc) from None
        except TokenError:
            info = None
        if not info or not info.get("login"):
            raise LinkError("Twitch issued a token it does not validate: try again.")
        return Identity(str(info.get("user_id") or ""), str(info["login"]))

    async def revoke(self, access_token: str) -> None:
        try:
            async with self._oauth() as oauth:
                await oauth.revoke(access_token)
        except TwitchUnreachable as exc:  # the token expires on its own; signing in goes on
            log.warning("twitch_revoke_failed", error=str(_unreachable(exc)))

    # ------------------------------------------------------------------------- ChannelLink

    async def connect(self, code: str, redirect_uri: str) -> LinkedChannel:
        grant = await self.exchange_code(code, redirect_uri)
        return await self.connect_grant(grant, await self.validate(grant.access_token))

    async def connect_grant(self, grant: Grant, identity: Identity) -> LinkedChannel:
        """Store a grant for `identity`'s channel and have the bot start it now."""
        channel_id, login = identity.user_id, identity.login
        await self.store.save_login(channel_id, login, login, grant)
        await self._sync()
        return LinkedChannel(channel_id, login, login)

    async def disconnect(self, channel_id: str) -> None:
        """Forget the channel here, stop it, then revoke the grant at Twitch so the tokens stop
        working there too (not only in our database)."""
        try:
            stored = await self.store.load(channel_id)
        except StreamerHubError as exc:  # unreadable tokens: nothing to revoke with
            log.warning("twitch_revoke_skipped", channel_id=channel_id, error=str(exc))
            stored = None
        await self.store.disconnect(channel_id, "disconnected by the owner on the dashboard")
        await self._sync()
        if stored is not None and stored.access_token:
            await self.revoke(stored.access_token)

    async def _sync(self) -> None:
        # Start (or stop) the channel's EventSub client now rather than at the bot's next sync.
        if (bot := self.bot()) is not None:
            await bot.sync()

    async def is_channel_login(self, login: str) -> bool:
        return await registry.is_channel_login(self.db, login)

    async def search_categories(self, query: str) -> list[dict[str, str]]:
        channels = await registry.connected_channels(self.db)
        if not channels:
            return []
        params = {"query": query, "first": CATEGORY_RESULTS}
        bot = self._running_bot()
        live = [t for t in (bot.live_token(c.channel_id) for c in channels) if t] if bot else []
        if bot is not None and live:
            helix = Helix(bot.http, bot.api_url, bot.client_id, live[0], retries=1)
            body = await helix.request("GET", "/search/categories", params)
        else:
            # No bot of this process runs the channel: its stored token, never refreshed here,
            # since the grant's one refresher (a bot, maybe in another daemon) holds the refresh
            # token in memory and a second refresh would retire it under its feet.
            async with self._oauth() as oauth:
                token = _NoRefresh(
                    await load_channel_token(self.store, oauth, channels[0].channel_id)
                )
                helix = Helix(
                    oauth.session, self.settings.twitch.api_url, oauth.client_id, token, retries=1
                )
                try:
                    body = await helix.request("GET", "/search/categories", params)
                except (HelixError, TokenError) as exc:
                    raise LinkError(
                        "Twitch refused the category search with the stored token; it is "
                        "renewed by the running daemon: try again in a minute."
                    ) from exc
        return [{"id": str(c["id"]), "name": str(c["name"])} for c in body.get("data") or []]


class _NoRefresh:
    """A stored token used as is: a 401 is an error, not a refresh (see search_categories)."""

    def __init__(self, token: ChannelToken) -> None:
        self.channel_id, self._token = token.channel_id, token

    def access_token(self) -> str:
        return self._token.access_token()

    async def refresh(self, stale: str) -> str:
        raise TokenError(f"channel {self.channel_id}: token expired; its holder renews it")


class TwitchOverviewFacts:
    """web's TwitchOverview: the Settings page's channels, subscriptions, gaps, and what the
    running bot says of each channel's capture (a revocation's "reconnect Twitch", …)."""

    def __init__(self, db: Database, bot: Callable[[], TwitchBot | None] = lambda: None) -> None:
        self.db = db
        self.bot = bot

    def capture(self) -> dict[str, tuple[str, str | None]]:
        running = self.bot()
        if running is None:
            return {}
        return {s["channel_id"]: (str(s["state"]), s.get("reason")) for s in running.status()}

    async def channels(self) -> list[registry.ChannelRecord]:
        return await registry.all_channels(self.db)

    async def subscription_health(self) -> dict[str, SubscriptionHealth]:
        return await subscription_health(self.db)

    async def subscription_problems(self) -> list[StoredSubscription]:
        return await stored_subscriptions(self.db, problems_only=True)

    async def recent_gaps(self, limit: int) -> list[history.GapRecord]:
        return await history.recent_gaps(self.db, limit)

    async def events_stored(self) -> int:
        return await history.events_stored(self.db)
