"""Twitch's OAuth endpoints, the one client for all of them: the browser's authorization-code flow
(authorize URL, code exchange), the terminal's device-code login, refresh, validation, revocation.

Plain aiohttp, as in bot/helix.py: twitchAPI's flag-based refresh "lock" stays set after one
failure and hangs every later refresh (see bot/tokens.py for the lock that replaces it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

import aiohttp

from streamerhub.errors import StreamerHubError
from streamerhub.log import register_secret

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
OAUTH_TIMEOUT = aiohttp.ClientTimeout(total=20, sock_connect=10)

# Every scope an EventSub type in subscriptions.SUBSCRIPTIONS needs, plus channel:manage:broadcast
# (a multistream job sets the title/category), user:write:chat (the chat bot speaks as the
# streamer) and channel:bot (a separate bot account may speak in the channel, bot/botaccount.py).
# Nothing more: no scope we would not use.
LOGIN_SCOPES: tuple[str, ...] = (
    "bits:read",
    "channel:bot",
    "channel:manage:broadcast",
    "channel:read:ads",
    "channel:read:charity",
    "channel:read:goals",
    "channel:read:hype_train",
    "channel:read:polls",
    "channel:read:predictions",
    "channel:read:redemptions",
    "channel:read:subscriptions",
    "moderator:read:followers",
    "moderator:read:shoutouts",
    "user:read:chat",
    "user:write:chat",
)
# Asked for only when the streamer chooses "fill the key for me" for a multistream target:
# reading a channel's stream key is more than StreamerHub needs otherwise.
STREAM_KEY_SCOPE = "channel:read:stream_key"
FILL_KEY_SCOPES: tuple[str, ...] = (*LOGIN_SCOPES, STREAM_KEY_SCOPE)


class TokenError(StreamerHubError):
    """Twitch's OAuth endpoint failed in a way that may pass (network, 5xx)."""


class TwitchUnreachable(TokenError):
    """The OAuth endpoint could not be reached (network error or timeout)."""

    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(f"{what}: {type(exc).__name__}: {exc}")
        self.cause = type(exc).__name__


class CodeRejected(TokenError):
    """The token endpoint refused an authorization code (or answered without a token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Twitch refused the authorization code ({status}: {message})")
        self.status, self.message = status, message


class ClientMisconfigured(TokenError):
    """Twitch refused our client, not the grant (a confidential app's secret is missing or wrong):
    the tokens stay; the fix is in the config."""

    def __init__(self, message: str) -> None:
        super().__init__(
            f"Twitch refused this application's credentials ({message}): a Confidential app "
            "refreshes tokens only with its secret. Set [twitch] client_secret (or "
            "STREAMERHUB_TWITCH_CLIENT_SECRET) to the app's Client Secret and restart; the "
            "channel stays connected meanwhile"
        )


class TokenRevoked(TokenError):
    """The grant is gone (refresh token rejected): the user has to log in again."""

    def __init__(self, channel_id: str, reason: str) -> None:
        super().__init__(f"channel {channel_id}: {reason}")
        self.channel_id, self.reason = channel_id, reason


@dataclass(frozen=True)
class Grant:
    """What the token endpoint answers: an access/refresh pair and its scopes."""

    access_token: str
    refresh_token: str
    expires_in: int
    scopes: tuple[str, ...]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "Grant":
        grant = cls(
            str(body["access_token"]),
            str(body.get("refresh_token") or ""),
            int(body.get("expires_in") or 0),
            tuple(body.get("scope") or ()),
        )
        register_secret(grant.access_token)
        register_secret(grant.refresh_token)
        return grant

    @property
    def expires_at(self) -> dt.datetime | None:
        return in_seconds(self.expires_in) if self.expires_in else None


@dataclass(frozen=True)
class DeviceCode:
    """A started device-code flow: show user_code and verification_uri to the user."""

    device_code: str
    user_code: str
    verification_uri: str
    interval: float
    expires_in: int


@dataclass(frozen=True)
class Identity:
    """Whom a token belongs to, as GET /validate says."""

    user_id: str
    login: str


class OAuth:
    """Twitch's OAuth endpoints (id.twitch.tv/oauth2, or the fake's)."""

    def __init__(
        self, session: aiohttp.ClientSession, auth_url: str, client_id: str, client_secret: str = ""
    ) -> None:
        self.session = session
        self.auth_url = auth_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret

    def authorize_url(
        self, redirect_uri: str, scopes: tuple[str, ...], state: str, force_verify: bool = False
    ) -> str:
        """Where the browser goes to authorise us (authorization-code flow)."""
        return authorize_url(
            self.auth_url, self.client_id, redirect_uri, scopes, state, force_verify
        )

    async def exchange_code(self, code: str, redirect_uri: str) -> Grant:
        """POST /token grant_type=authorization_code; CodeRejected when Twitch refuses it."""
        status, body = await self._post(
            "/token",
            {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "code": code,
                "grant_type": "authorization_code",
                "redirect_uri": redirect_uri,
            },
        )
        if status != 200 or not body.get("access_token"):
            raise CodeRejected(status, str(body.get("message", "no reason given")))
        return Grant.from_json(body)

    async def revoke(self, access_token: str) -> None:
        """POST /revoke: the token stops working now rather than when it expires."""
        await self._post("/revoke", {"client_id": self.client_id, "token": access_token})

    async def start_device(self, scopes: tuple[str, ...] = LOGIN_SCOPES) -> DeviceCode:
        """POST /device: begin a device-code login."""
        status, body = await self._post(
            "/device", {"client_id": self.client_id, "scopes": " ".join(scopes)}
        )
        if status != 200:
            raise TokenError(
                f"Twitch refused to start the device login ({status}: "
                f"{body.get('message')}): check [twitch] client_id"
            )
        return DeviceCode(
            str(body["device_code"]),
            str(body["user_code"]),
            str(body["verification_uri"]),
            float(body.get("interval") or 5),
            int(body.get("expires_in") or 1800),
        )

    async def wait_device(
        self,
        code: DeviceCode,
        scopes: tuple[str, ...] = LOGIN_SCOPES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> Grant:
        """Poll /token until the user has entered the code (or the code expires)."""
        deadline = time.monotonic() + code.expires_in
        interval = code.interval
        form = {
            "client_id": self.client_id,
            "device_code": code.device_code,
            "grant_type": DEVICE_GRANT,
            "scopes": " ".join(scopes),
        }
        while time.monotonic() < deadline:
            status, body = await self._post("/token", form)
            if status == 200:
                return Grant.from_json(body)
            message = str(body.get("message") or "")
            if message == "slow_down":
                interval += 5
            elif message != "authorization_pending":
                raise TokenError(f"device login failed ({status}: {message})")
            await sleep(interval)
        raise TokenError("the device code expired before it was entered: run the login again")

    async def refresh(self, channel_id: str, refresh_token: str) -> Grant:
        """POST /token grant_type=refresh_token; TokenRevoked when Twitch rejects the grant."""
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.client_id,
        }
        if self.client_secret:
            form["client_secret"] = self.client_secret
        status, body = await self._post("/token", form)
        if status == 200:
            return Grant.from_json(body)
        message = str(body.get("message") or "")
        if "client secret" in message.lower() or message.lower().startswith("invalid client"):
            raise ClientMisconfigured(message)  # only config is missing: keep the grant
        if status in (400, 401):
            raise TokenRevoked(
                channel_id, f"Twitch rejected the refresh token ({body.get('message') or status})"
            )
        raise TokenError(f"token refresh failed with {status}: {body.get('message')}")

    async def client_credentials(self) -> Grant:
        """POST /token grant_type=client_credentials: an app access token (conduits need one).

        Only a confidential client has the secret this takes; the answer has no refresh token,
        a new grant is simply asked for when it expires or is rejected."""
        if not self.client_secret:
            raise ClientMisconfigured("an app access token needs [twitch] client_secret")
        status, body = await self._post(
            "/token",
            {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "grant_type": "client_credentials",
            },
        )
        if status != 200 or not body.get("access_token"):
            message = str(body.get("message") or status)
            if status in (400, 403):
                raise ClientMisconfigured(f"Twitch refused the app access token: {message}")
            raise TokenError(f"app access token request failed with {status}: {message}")
        return Grant.from_json(body)

    async def validate(self, access_token: str) -> dict[str, Any] | None:
        """GET /validate: the token's user, scopes and lifetime; None when it is invalid."""
        try:
            async with self.session.get(
                f"{self.auth_url}/validate",
                timeout=OAUTH_TIMEOUT,
                headers={"Authorization": f"OAuth {access_token}"},
            ) as r:
                if r.status == 401:
                    return None
                if r.status != 200:
                    raise TokenError(f"token validation failed with {r.status}")
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise TwitchUnreachable("token validation failed", exc) from None
        return body if isinstance(body, dict) else {}

    async def _post(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            async with self.session.post(
                self.auth_url + path, data=form, timeout=OAUTH_TIMEOUT
            ) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {"message": resp.reason}
                return resp.status, body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise TwitchUnreachable(f"Twitch OAuth {path} unreachable", exc) from None


def authorize_url(
    auth_url: str,
    client_id: str,
    redirect_uri: str,
    scopes: tuple[str, ...],
    state: str,
    force_verify: bool = False,
) -> str:
    """GET /authorize with our client id: where the browser goes to authorise us. force_verify
    makes Twitch ask again even for an account that already did (to pick which one)."""
    query = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": " ".join(scopes),
        "state": state,
    }
    if force_verify:
        query["force_verify"] = "true"
    return f"{auth_url.rstrip('/')}/authorize?{urlencode(query)}"


def in_seconds(seconds: float) -> dt.datetime:
    """The moment `seconds` from now, in UTC."""
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)


APP_TOKEN_MARGIN = 300.0  # seconds before expiry an app token is replaced


class AppToken:
    """The app access token conduits are managed with: Helix's TokenSource for the app itself.

    Fetched on first use, again shortly before it expires and again when Helix rejects it
    (one request at a time). Grant.from_json registers it with the log redactor."""

    channel_id = "app"  # what Helix logs for retries; no channel is involved

    def __init__(self, oauth: OAuth) -> None:
        self.oauth = oauth
        self._token = ""
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def access_token(self) -> str:
        return self._token

    async def ensure(self) -> str:
        """A token that is good for a while yet."""
        if self._token and time.monotonic() < self._expires_at:
            return self._token
        return await self.refresh(self._token)

    async def refresh(self, stale: str) -> str:
        async with self._lock:
            if self._token and self._token != stale:
                return self._token  # another caller replaced it meanwhile
            grant = await self.oauth.client_credentials()
            self._token = grant.access_token
            lifetime = grant.expires_in or 3600
            self._expires_at = time.monotonic() + max(lifetime - APP_TOKEN_MARGIN, lifetime / 2)
            return self._token
