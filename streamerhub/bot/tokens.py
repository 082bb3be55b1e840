"""The bot's OAuth tokens: sealed storage in twitch_channels, refresh on 401, hourly validation.

Refresh runs behind a real `asyncio.Lock` per channel: concurrent 401s cause one refresh, the
others reuse its result, and a refresh that fails (network, 5xx, cancellation) releases the lock
so the next caller tries again. twitchAPI's flag-based "lock" stays set after one failure and
hangs every later refresh, which is why none of this goes through twitchAPI. The endpoints
themselves are in bot/oauth.py.

A login or disconnect NOTIFYs CHANNELS_CHANGED in the same statement, so a running daemon
(bot/ownership.py listens) starts or stops the channel at once, whichever process wrote it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aiohttp

from streamerhub.bot.oauth import (
    LOGIN_SCOPES,
    OAUTH_TIMEOUT,
    DeviceCode,
    Grant,
    OAuth,
    TokenError,
    TokenRevoked,
    in_seconds,
)
from streamerhub.crypto import Keyring, aad_for
from streamerhub.db import Database
from streamerhub.log import get_logger, register_secret

log = get_logger(__name__)

VALIDATE_EVERY = 3600.0  # Twitch requires validating at start and every hour
REFRESH_AHEAD = 300  # refresh proactively when validation says fewer seconds are left
CHANNELS_CHANGED = "streamerhub_twitch_channels"  # NOTIFY channel: a channel (dis)connected


# ----------------------------------------------------------------------------- storage


@dataclass
class StoredToken:
    """One channel's row of twitch_channels with the tokens opened."""

    channel_id: str
    login: str
    display_name: str
    scopes: tuple[str, ...]
    access_token: str
    refresh_token: str
    status: str
    status_reason: str | None


class TokenStore:
    """twitch_channels: tokens sealed with the row's id as associated data."""

    TABLE = "twitch_channels"  # a sealed token's associated data names its table, id and column

    def __init__(self, db: Database, keyring: Keyring) -> None:
        self.db, self.keyring = db, keyring

    def _aad(self, channel_id: str, column: str) -> str:
        return aad_for(self.TABLE, channel_id, column)

    def _seal(self, channel_id: str, grant: Grant) -> tuple[bytes, bytes | None]:
        access = self.keyring.seal(grant.access_token, self._aad(channel_id, "access_token_sealed"))
        refresh = (
            self.keyring.seal(grant.refresh_token, self._aad(channel_id, "refresh_token_sealed"))
            if grant.refresh_token
            else None
        )
        return access, refresh

    async def save_login(
        self, channel_id: str, login: str, display_name: str, grant: Grant
    ) -> None:
        """Insert or replace a channel after a login: connected, with fresh sealed tokens."""
        access, refresh = self._seal(channel_id, grant)
        async with self.db.pool.acquire() as conn:
            await conn.execute(
                SAVE_LOGIN,
                channel_id,
                login,
                display_name,
                list(grant.scopes),
                access,
                refresh,
                grant.expires_at,
                CHANNELS_CHANGED,
            )

    async def save_refresh(self, channel_id: str, grant: Grant) -> None:
        """Store a refreshed pair (Twitch rotates the refresh token every time)."""
        access, refresh = self._seal(channel_id, grant)
        async with self.db.pool.acquire() as conn:
            await conn.execute(
                SAVE_REFRESH,
                channel_id,
                access,
                refresh,
                grant.expires_at,
                list(grant.scopes) or None,
            )

    async def save_validation(
        self, channel_id: str, login: str, scopes: tuple[str, ...], expires_in: int
    ) -> None:
        async with self.db.pool.acquire() as conn:
            await conn.execute(
                SAVE_VALIDATION,
                channel_id,
                login,
                list(scopes),
                in_seconds(expires_in) if expires_in else None,
            )

    async def disconnect(self, channel_id: str, reason: str) -> None:
        """Mark the channel disconnected with the reason and forget its dead tokens."""
        async with self.db.pool.acquire() as conn:
            await conn.execute(DISCONNECT, channel_id, reason, CHANNELS_CHANGED)
        log.warning("twitch_channel_disconnected", channel_id=channel_id, reason=reason)

    async def load(self, channel_id: str) -> StoredToken | None:
        async with self.db.pool.acquire() as conn:
            row = await conn.fetchrow(LOAD, channel_id)
        if row is None:
            return None
        access = refresh = ""
        if row["access_token_sealed"] is not None:
            access = self.keyring.open_str(
                row["access_token_sealed"], self._aad(channel_id, "access_token_sealed")
            )
        if row["refresh_token_sealed"] is not None:
            refresh = self.keyring.open_str(
                row["refresh_token_sealed"], self._aad(channel_id, "refresh_token_sealed")
            )
        register_secret(access)
        register_secret(refresh)
        return StoredToken(
            channel_id,
            row["login"],
            row["display_name"],
            tuple(row["scopes"]),
            access,
            refresh,
            row["status"],
            row["status_reason"],
        )


# Login and disconnect NOTIFY in the same statement: delivered on commit, never before.
SAVE_LOGIN = """
WITH saved AS (
INSERT INTO twitch_channels (channel_id, login, display_name, scopes, access_token_sealed,
                             refresh_token_sealed, token_expires_at, status, status_reason,
                             connected_at, validated_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'connected', NULL, now(), now(), now())
ON CONFLICT (channel_id) DO UPDATE SET
    login = EXCLUDED.login, display_name = EXCLUDED.display_name, scopes = EXCLUDED.scopes,
    access_token_sealed = EXCLUDED.access_token_sealed,
    refresh_token_sealed = EXCLUDED.refresh_token_sealed,
    token_expires_at = EXCLUDED.token_expires_at, status = 'connected', status_reason = NULL,
    connected_at = now(), validated_at = now(), updated_at = now()
RETURNING channel_id)
SELECT pg_notify($8, channel_id) FROM saved"""

SAVE_REFRESH = """
UPDATE twitch_channels SET access_token_sealed = $2, refresh_token_sealed = $3,
       token_expires_at = $4, scopes = COALESCE($5, scopes), updated_at = now()
 WHERE channel_id = $1"""

SAVE_VALIDATION = """
UPDATE twitch_channels SET login = $2, scopes = $3,
       token_expires_at = COALESCE($4, token_expires_at),
       validated_at = now(), updated_at = now()
 WHERE channel_id = $1"""

DISCONNECT = """
WITH gone AS (
UPDATE twitch_channels SET status = 'disconnected', status_reason = $2,
       access_token_sealed = NULL, refresh_token_sealed = NULL, updated_at = now()
 WHERE channel_id = $1
RETURNING channel_id)
SELECT pg_notify($3, channel_id) FROM gone"""

LOAD = """
SELECT login, display_name, scopes, access_token_sealed, refresh_token_sealed, status, status_reason
  FROM twitch_channels WHERE channel_id = $1"""


# ----------------------------------------------------------------------------- live token


class ChannelToken:
    """A connected channel's tokens in memory: Helix's TokenSource, refreshed under one lock."""

    def __init__(self, stored: StoredToken, oauth: OAuth, store: TokenStore) -> None:
        self.channel_id = stored.channel_id
        self.login = stored.login
        self.display_name = stored.display_name
        self.scopes = frozenset(stored.scopes)
        self._access = stored.access_token
        self._refresh = stored.refresh_token
        self._oauth, self._store = oauth, store
        self._lock = asyncio.Lock()
        self.revoked: str | None = None
        self._unsaved: Grant | None = None
        self.refreshes = 0
        self.validated_at: float | None = None
        self._wake = asyncio.Event()  # validate now (a revocation may mean the grant is gone)

    def access_token(self) -> str:
        if self.revoked:
            raise TokenRevoked(self.channel_id, self.revoked)
        return self._access

    async def refresh(self, stale: str) -> str:
        """A fresh access token; callers pass the one that failed so only one refresh happens."""
        async with self._lock:
            if self.revoked:
                raise TokenRevoked(self.channel_id, self.revoked)
            if self._access != stale:
                return self._access  # another caller refreshed while we waited
            try:
                grant = await self._oauth.refresh(self.channel_id, self._refresh)
            except TokenRevoked as exc:
                await self._revoke(exc.reason)
                raise
            # Memory first: Twitch has already retired the old refresh token, so the new pair
            # must survive a database hiccup (it is saved again at the next validation).
            self._access, self._refresh = grant.access_token, grant.refresh_token or self._refresh
            if grant.scopes:
                self.scopes = frozenset(grant.scopes)
            self._unsaved = grant
            self.refreshes += 1
            log.info(
                "twitch_token_refreshed", channel_id=self.channel_id, expires_in=grant.expires_in
            )
            await self._save_pending()
            return self._access

    async def _save_pending(self) -> None:
        grant = self._unsaved
        if grant is None:
            return
        try:
            await self._store.save_refresh(self.channel_id, grant)
        except Exception as exc:  # noqa: BLE001 - any database failure; retried later
            log.error("twitch_token_save_failed", channel_id=self.channel_id, error=str(exc))
            return
        if self._unsaved is grant:
            self._unsaved = None

    async def _revoke(self, reason: str) -> None:
        self.revoked = f"{reason}: run `streamerhub twitch login` again"
        await self._store.disconnect(self.channel_id, self.revoked)

    async def validate(self) -> dict[str, Any]:
        """GET /validate (refreshing once on 401); updates scopes and the stored row."""
        await self._save_pending()
        access = self.access_token()
        info = await self._oauth.validate(access)
        if info is None:
            await self.refresh(access)
            info = await self._oauth.validate(self.access_token())
            if info is None:
                await self._revoke("Twitch rejects the freshly refreshed token")
                raise TokenRevoked(self.channel_id, self.revoked or "")
        if str(info.get("user_id") or self.channel_id) != self.channel_id:
            await self._revoke(f"the token belongs to user {info.get('user_id')}, not this channel")
            raise TokenRevoked(self.channel_id, self.revoked or "")
        self.scopes = frozenset(info.get("scopes") or ())
        self.login = str(info.get("login") or self.login)
        expires_in = int(info.get("expires_in") or 0)
        await self._store.save_validation(
            self.channel_id, self.login, tuple(sorted(self.scopes)), expires_in
        )
        self.validated_at = time.time()
        if 0 < expires_in < REFRESH_AHEAD:
            await self.refresh(self.access_token())
        return info

    async def validate_forever(
        self,
        every: float = VALIDATE_EVERY,
        first_delay: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Validate every hour as Twitch requires; transient failures are retried sooner."""
        if first_delay:
            await self._pause(every, sleep)
        while True:
            try:
                await self.validate()
                delay = every
            except TokenRevoked:
                raise
            except TokenError as exc:
                log.warning(
                    "twitch_token_validate_failed", channel_id=self.channel_id, error=str(exc)
                )
                delay = min(every, 60.0)
            await self._pause(delay, sleep)

    async def validate_soon(self, _why: str = "") -> None:
        """Wake `validate_forever` now instead of at the next hour."""
        self._wake.set()

    async def _pause(self, delay: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        napping = asyncio.ensure_future(sleep(delay))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((napping, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            napping.cancel()
            woken.cancel()
            self._wake.clear()


async def load_channel_token(store: TokenStore, oauth: OAuth, channel_id: str) -> ChannelToken:
    """The live token of a connected channel (TokenError when it has none)."""
    stored = await store.load(channel_id)
    if stored is None or stored.status != "connected" or not stored.access_token:
        raise TokenError(f"channel {channel_id} is not connected: run `streamerhub twitch login`")
    return ChannelToken(stored, oauth, store)


async def login_with_device_code(
    oauth: OAuth,
    store: TokenStore,
    api_url: str,
    show: Callable[[DeviceCode], None],
    scopes: tuple[str, ...] = LOGIN_SCOPES,
) -> StoredToken:
    """The whole device flow: show the code, wait for approval, store the sealed tokens."""
    code = await oauth.start_device(scopes)
    show(code)
    grant = await oauth.wait_device(code, scopes)
    info = await oauth.validate(grant.access_token)
    if not info or not info.get("user_id"):
        raise TokenError("Twitch issued a token it does not validate: try the login again")
    channel_id, login = str(info["user_id"]), str(info.get("login") or "")
    display = await _display_name(oauth, api_url, grant.access_token, login)
    granted = tuple(info.get("scopes") or grant.scopes)
    await store.save_login(
        channel_id,
        login,
        display,
        Grant(
            grant.access_token,
            grant.refresh_token,
            int(info.get("expires_in") or grant.expires_in),
            granted,
        ),
    )
    log.info("twitch_channel_connected", channel_id=channel_id, login=login, scopes=len(granted))
    return StoredToken(channel_id, login, display, granted, "", "", "connected", None)


async def _display_name(oauth: OAuth, api_url: str, access: str, login: str) -> str:
    headers = {"Authorization": f"Bearer {access}", "Client-Id": oauth.client_id}
    try:
        async with oauth.session.get(
            api_url.rstrip("/") + "/users", headers=headers, timeout=OAUTH_TIMEOUT
        ) as resp:
            body = await resp.json(content_type=None) if resp.ok else {}
        data = body.get("data") or []
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, AttributeError):
        data = []
    return str(data[0].get("display_name") or login) if data else login
