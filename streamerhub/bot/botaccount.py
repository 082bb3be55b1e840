"""The chat bot's own Twitch account: a second "bot" account connected in the browser, whose
messages carry Twitch's "Chat Bot" badge.

Twitch's rules for that path ("Send Chat Message" with an app access token): the bot account
grants this app `user:bot` and `user:write:chat`; the broadcaster grants `channel:bot` (asked
for when the channel is connected) or makes the bot a moderator. Nothing more is asked of the
bot account.

Its tokens are sealed in twitch_bot_accounts like a channel's, and one holder (`BotToken`, a
ChannelToken on that table) refreshes and validates them every hour as Twitch requires; when
Twitch rejects the grant the row says so and the page asks to connect the account again. The
messages themselves go with the app's own token (client credentials), which needs the client
secret.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from streamerhub.bot.oauth import (
    AppToken,
    CodeRejected,
    Grant,
    OAuth,
    TokenError,
    TokenRevoked,
    TwitchUnreachable,
    in_seconds,
)
from streamerhub.bot.tokens import ChannelToken, StoredToken, TokenStore
from streamerhub.config import Settings
from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.errors import StreamerHubError
from streamerhub.log import get_logger, register_secret

log = get_logger(__name__)

TABLE = "twitch_bot_accounts"
BOT_SCOPES: tuple[str, ...] = ("user:bot", "user:write:chat")
CHANNEL_BOT_SCOPE = "channel:bot"


class BotAccountError(StreamerHubError):
    """Connecting the bot account failed; the message is shown on the page."""


class BotAccountStore(TokenStore):
    """twitch_bot_accounts: the same sealing and statements as twitch_channels, on its table."""

    TABLE = TABLE

    async def save_login(
        self, channel_id: str, login: str, display_name: str, grant: Grant
    ) -> None:
        """The one bot account: any other row is replaced."""
        access, refresh = self._seal(channel_id, grant)
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(REPLACE_OTHERS, channel_id)
            await conn.execute(
                SAVE_LOGIN,
                channel_id,
                login,
                display_name,
                list(grant.scopes),
                access,
                refresh,
                grant.expires_at,
            )

    async def save_refresh(self, channel_id: str, grant: Grant) -> None:
        access, refresh = self._seal(channel_id, grant)
        async with self.db.pool.acquire() as conn:
            await conn.execute(
                SAVE_REFRESH, channel_id, access, refresh, grant.expires_at, list(grant.scopes)
            )

    async def save_validation(
        self, channel_id: str, login: str, scopes: tuple[str, ...], expires_in: int
    ) -> None:
        expires = in_seconds(expires_in) if expires_in else None
        async with self.db.pool.acquire() as conn:
            await conn.execute(SAVE_VALIDATION, channel_id, login, list(scopes), expires)

    async def disconnect(self, channel_id: str, reason: str) -> None:
        async with self.db.pool.acquire() as conn:
            await conn.execute(DISCONNECT, channel_id, reason)
        log.warning("chatbot_account_disconnected", account_id=channel_id, reason=reason)

    async def current(self) -> StoredToken | None:
        """The bot account (connected or not), its tokens opened."""
        async with self.db.pool.acquire() as conn:
            return await self.current_on(conn)

    async def current_on(self, conn: Any) -> StoredToken | None:
        row = await conn.fetchrow(CURRENT)
        if row is None:
            return None
        account, opened = row["account_id"], {}
        for column in ("access_token_sealed", "refresh_token_sealed"):
            blob = row[column]
            opened[column] = (
                self.keyring.open_str(blob, self._aad(account, column)) if blob is not None else ""
            )
            register_secret(opened[column])
        return StoredToken(
            account,
            row["login"],
            row["display_name"],
            tuple(row["scopes"]),
            opened["access_token_sealed"],
            opened["refresh_token_sealed"],
            row["status"],
            row["status_reason"],
        )

    async def load(self, channel_id: str) -> StoredToken | None:
        found = await self.current()
        return found if found is not None and found.channel_id == channel_id else None

    async def forget(self) -> None:
        async with self.db.pool.acquire() as conn:
            await conn.execute("DELETE FROM twitch_bot_accounts")


REPLACE_OTHERS = "DELETE FROM twitch_bot_accounts WHERE account_id <> $1"

SAVE_LOGIN = """
INSERT INTO twitch_bot_accounts (account_id, login, display_name, scopes, access_token_sealed,
                                 refresh_token_sealed, token_expires_at, status, status_reason,
                                 connected_at, validated_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'connected', NULL, now(), now(), now())
ON CONFLICT (account_id) DO UPDATE SET
    login = EXCLUDED.login, display_name = EXCLUDED.display_name, scopes = EXCLUDED.scopes,
    access_token_sealed = EXCLUDED.access_token_sealed,
    refresh_token_sealed = EXCLUDED.refresh_token_sealed,
    token_expires_at = EXCLUDED.token_expires_at, status = 'connected', status_reason = NULL,
    connected_at = now(), validated_at = now(), updated_at = now()"""

SAVE_REFRESH = """
UPDATE twitch_bot_accounts SET access_token_sealed = $2, refresh_token_sealed = $3,
       token_expires_at = $4, scopes = COALESCE(NULLIF($5::text[], '{}'), scopes),
       updated_at = now()
 WHERE account_id = $1"""

SAVE_VALIDATION = """
UPDATE twitch_bot_accounts SET login = $2, scopes = $3,
       token_expires_at = COALESCE($4, token_expires_at), validated_at = now(), updated_at = now()
 WHERE account_id = $1"""

DISCONNECT = """
UPDATE twitch_bot_accounts SET status = 'disconnected', status_reason = $2,
       access_token_sealed = NULL, refresh_token_sealed = NULL, updated_at = now()
 WHERE account_id = $1"""

CURRENT = """
SELECT account_id, login, display_name, scopes, access_token_sealed, refresh_token_sealed,
       status, status_reason
  FROM twitch_bot_accounts ORDER BY connected_at DESC LIMIT 1"""


class BotToken(ChannelToken):
    """The bot account's token holder: refresh under one lock, hourly validation.

    Every daemon sharing the database holds the bot account (it is not a channel that one
    daemon owns), so a refresh also takes a database lock on the grant and first looks whether
    another daemon already refreshed it: Twitch retires a refresh token once used, and a second
    refresh with it would look like a revoked grant."""

    async def refresh(self, stale: str) -> str:
        async with self._lock:
            if self.revoked:
                raise TokenRevoked(self.channel_id, self.revoked)
            if self._access != stale:
                return self._access  # another caller refreshed while we waited
            try:
                await self._refresh_shared(stale)
            except TokenRevoked as exc:
                await self._revoke(exc.reason)
                raise
            except TokenError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database: Twitch was not asked, or
                # it was and the new pair is kept in memory, saved at the next validation
                if self._access == stale:
                    raise TokenError(f"bot account token refresh: database: {exc!r}") from None
                log.error("chatbot_account_token_save_failed", error=repr(exc))
            return self._access

    async def _refresh_shared(self, stale: str) -> None:
        store = self._store
        assert isinstance(store, BotAccountStore)  # BotTokens are made only over one
        async with store.db.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{TABLE}:refresh")
            stored = await store.current_on(conn)
            if stored is not None and stored.access_token not in ("", stale):
                self._access, self._refresh = stored.access_token, stored.refresh_token
                log.info("chatbot_account_token_adopted", account_id=self.channel_id)
                return
            grant = await self._oauth.refresh(self.channel_id, self._refresh)
            self._access, self._refresh = grant.access_token, grant.refresh_token or self._refresh
            if grant.scopes:
                self.scopes = frozenset(grant.scopes)
            self.refreshes += 1
            self._unsaved = grant  # until the commit: _save_pending stores it otherwise
            access, refresh = store._seal(self.channel_id, grant)
            await conn.execute(
                SAVE_REFRESH,
                self.channel_id,
                access,
                refresh,
                grant.expires_at,
                list(grant.scopes),
            )
        self._unsaved = None
        log.info("chatbot_account_token_refreshed", account_id=self.channel_id)

    async def _revoke(self, reason: str) -> None:
        self.revoked = f"{reason}: connect the bot account again on the Chat bot page"
        await self._store.disconnect(self.channel_id, self.revoked)


@dataclass(frozen=True)
class Speaker:
    """Who speaks in one channel, how, and what is missing for it (chatbot.ports.Speaker)."""

    channel_id: str
    login: str
    how: str
    missing: tuple[str, ...] = ()


@dataclass
class AccountView:
    """The bot account as the page shows it (chatbot.ports.AccountView)."""

    login: str | None
    status: str | None
    reason: str | None
    scopes: tuple[str, ...] = ()
    speakers: list[Speaker] = field(default_factory=list)


class TwitchBotAccount:
    """chatbot.ports.BotAccount: connect, hold, describe and disconnect the bot account."""

    scopes = BOT_SCOPES

    def __init__(self, settings: Settings, db: Database, keyring: Keyring) -> None:
        self.settings = settings
        self.store = BotAccountStore(db, keyring)
        self.token: BotToken | None = None
        self.app_token: AppToken | None = None
        self.http: aiohttp.ClientSession | None = None
        self.oauth: OAuth | None = None
        self._task: asyncio.Task[Any] | None = None
        # The account the owner chose, connected or not: while it is set the bot never falls
        # back to speaking as the streamer (a revoked bot grant is said, not papered over).
        self.chosen: str | None = None

    # life ---------------------------------------------------------------------------------
    async def start(self) -> None:
        twitch = self.settings.twitch
        self.http = aiohttp.ClientSession(headers={"User-Agent": "StreamerHub"})
        self.oauth = OAuth(self.http, twitch.auth_url, twitch.client_id, twitch.client_secret)
        self.app_token = AppToken(self.oauth)
        stored = await self.store.current()
        self.chosen = stored.login if stored is not None else None
        if stored is not None and stored.status == "connected" and stored.access_token:
            self._hold(stored)

    async def stop(self) -> None:
        await self._release()
        if self.http is not None:
            await self.http.close()

    def _hold(self, stored: StoredToken) -> None:
        assert self.oauth is not None  # started
        self.token = BotToken(stored, self.oauth, self.store)
        self._task = asyncio.create_task(self._validate(self.token))

    async def _validate(self, token: BotToken) -> None:
        try:
            await token.validate_forever()
        except TokenRevoked as exc:
            log.warning("chatbot_account_revoked", account_id=token.channel_id, reason=str(exc))

    async def _release(self) -> None:
        task, self._task, self.token = self._task, None, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # the browser's round trip ---------------------------------------------------------------
    async def connect(self, code: str, redirect_uri: str) -> str:
        """Swap the code for the bot's grant, check it, store it sealed, hold it; its login."""
        oauth = self._oauth()
        try:
            grant = await oauth.exchange_code(code, redirect_uri)
            info = await oauth.validate(grant.access_token)
        except CodeRejected as exc:
            raise BotAccountError(
                f"Twitch refused the sign-in code ({exc.status}: {exc.message}): try again"
            ) from None
        except TwitchUnreachable as exc:
            raise BotAccountError(f"Twitch could not be reached ({exc.cause}): try again") from None
        if not info or not info.get("user_id"):
            raise BotAccountError("Twitch issued a token it does not validate: try again")
        granted = tuple(info.get("scopes") or grant.scopes)
        lacking = [s for s in BOT_SCOPES if s not in granted]
        if lacking:
            with contextlib.suppress(TokenError):
                await oauth.revoke(grant.access_token)
            raise BotAccountError(
                f"The bot account did not grant {', '.join(lacking)}: connect it again and "
                "approve every permission Twitch lists"
            )
        account, login = str(info["user_id"]), str(info.get("login") or "")
        expires = int(info.get("expires_in") or grant.expires_in)
        await self.store.save_login(
            account,
            login,
            login,
            Grant(grant.access_token, grant.refresh_token, expires, granted),
        )
        await self._release()
        stored = await self.store.current()
        if stored is not None:
            self._hold(stored)
        self.chosen = login
        log.info("chatbot_account_connected", account_id=account, login=login)
        return login

    async def disconnect(self) -> None:
        """Forget the bot account here and revoke its grant at Twitch; the bot speaks as each
        channel's own account again."""
        stored = await self.store.current()
        await self._release()
        await self.store.forget()
        self.chosen = None
        if stored is not None and stored.access_token:
            with contextlib.suppress(TokenError):
                await self._oauth().revoke(stored.access_token)
        log.info("chatbot_account_forgotten")

    def _oauth(self) -> OAuth:
        if self.oauth is None:
            raise BotAccountError("the chat bot is not running in this daemon")
        return self.oauth

    # speaking -------------------------------------------------------------------------------
    def speaking(self) -> BotToken | None:
        """The bot account's live holder, when it is connected and Twitch still accepts it."""
        token = self.token
        return token if token is not None and not token.revoked else None

    def problems(self, channel_id: str, channel_scopes: frozenset[str]) -> list[str]:
        """What stops (or may stop) the bot account speaking in a channel, in words."""
        token = self.speaking()
        if token is None:
            return [
                f"the bot account {self.chosen or ''} is disconnected: connect it again here, "
                "or disconnect it to speak as the channel"
            ]
        missing = []
        if not self.settings.twitch.client_secret:
            missing.append(
                "[twitch] client_secret: the bot account speaks with the app's own token, "
                "which needs the app's Client Secret"
            )
        lacking = [s for s in BOT_SCOPES if s not in token.scopes]
        if lacking:
            missing.append(f"the bot account's {', '.join(lacking)}: connect it again")
        if token.channel_id != channel_id and CHANNEL_BOT_SCOPE not in channel_scopes:
            missing.append(
                f"{CHANNEL_BOT_SCOPE} from the channel: connect the channel again on Settings, "
                f"or make {token.login} a moderator (/mod {token.login})"
            )
        return missing

    async def describe(self) -> AccountView:
        stored = await self.store.current()
        if stored is None:
            return AccountView(None, None, None)
        live = self.speaking()
        scopes = tuple(sorted(live.scopes)) if live is not None else stored.scopes
        return AccountView(stored.login, stored.status, stored.status_reason, scopes)
