"""The Helix calls the bot needs: users, EventSub subscriptions, followers and streams.

Plain aiohttp rather than twitchAPI's `Twitch`: its token refresh "lock" wedges after one failed
refresh (see docs/twitch-eventsub.md), and every call here has to share the one refresh path of
`tokens.ChannelToken`. A 429 with `Ratelimit-Remaining: 0` waits for `Ratelimit-Reset`; one
with points left is an EventSub limit (too many transports, cost) and is not retried; 5xx,
timeouts and dropped connections are retried with capped exponential backoff and jitter; a 401
refreshes the token once.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

import aiohttp

from streamerhub.errors import StreamerHubError
from streamerhub.log import get_logger

log = get_logger(__name__)

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15, sock_connect=10)
MAX_RATELIMIT_WAIT = 60.0


class HelixError(StreamerHubError):
    """Helix answered an error we do not retry (or kept failing until we gave up)."""

    def __init__(self, status: int, message: str, path: str = "") -> None:
        super().__init__(f"Helix {path} answered {status}: {message}")
        self.status, self.message, self.path = status, message, path


class TokenSource(Protocol):
    """Where Helix gets the channel's current access token and asks for a fresh one on 401."""

    channel_id: str

    def access_token(self) -> str: ...

    async def refresh(self, stale: str) -> str: ...


class _Retry(Exception):
    """A transient failure; delay None means "back off by attempt number"."""

    def __init__(self, why: str, delay: float | None = None) -> None:
        super().__init__(why)
        self.why, self.delay = why, delay


class _Unauthorized(_Retry):
    """401 without "missing scope": the access token expired or was refreshed elsewhere."""

    def __init__(self) -> None:
        super().__init__("unauthorized")


def backoff(attempt: int, base: float = 0.5, cap: float = 60.0) -> float:
    """Capped exponential backoff with jitter: attempt 0 → ~base, doubling up to cap."""
    return min(cap, base * 2.0 ** min(attempt, 16) * random.uniform(0.5, 1.5))


class Helix:
    """Helix for one channel's user token; every method retries transient failures itself."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_url: str,
        client_id: str,
        token: TokenSource,
        retries: int = 5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.session = session
        self.api_url = api_url.rstrip("/")
        self.client_id = client_id
        self.token = token
        self.retries = retries
        self._sleep = sleep

    async def request(
        self, method: str, path: str, params: Any = None, json: Any = None
    ) -> dict[str, Any]:
        """One call with 401 → refresh → retry once, 429 → wait for reset, 5xx → backoff."""
        refreshed = False
        for attempt in range(self.retries + 1):
            access = self.token.access_token()
            try:
                return await self._once(method, path, params, json, access)
            except _Unauthorized:
                if refreshed:
                    raise HelixError(401, "token rejected right after a refresh", path) from None
                await self.token.refresh(access)
                refreshed = True
                continue
            except _Retry as retry:
                if attempt == self.retries:
                    raise HelixError(
                        503, f"gave up after {attempt + 1} attempts: {retry.why}", path
                    ) from None
                delay = backoff(attempt) if retry.delay is None else retry.delay
                log.info(
                    "helix_retrying",
                    path=path,
                    reason=retry.why,
                    attempt=attempt + 1,
                    retry_in_s=round(delay, 2),
                    channel_id=self.token.channel_id,
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")

    async def _once(
        self, method: str, path: str, params: Any, json: Any, access: str
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {access}", "Client-Id": self.client_id}
        try:
            async with self.session.request(
                method,
                self.api_url + path,
                params=params,
                json=json,
                headers=headers,
                timeout=REQUEST_TIMEOUT,
            ) as resp:
                return await self._answer(resp, path)
        except (
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
            asyncio.TimeoutError,
        ) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from None

    async def _answer(self, resp: aiohttp.ClientResponse, path: str) -> dict[str, Any]:
        if resp.status == 204:
            return {}
        if resp.status == 401:
            message = str((await _json(resp)).get("message") or "")
            if message.lower().startswith("missing scope"):  # a refresh would not help
                raise HelixError(401, message, path)
            raise _Unauthorized()
        if resp.status == 429:
            if _remaining(resp) > 0:
                # Not the bucket: an EventSub limit (transports, cost, per-session count).
                # Waiting for the reset would not help; the caller decides.
                message = str((await _json(resp)).get("message") or "limit reached")
                raise HelixError(429, message, path)
            raise _Retry("rate limited", ratelimit_wait(resp.headers.get("Ratelimit-Reset")))
        if resp.status >= 500:
            raise _Retry(f"server error {resp.status}")
        body = await _json(resp)
        if resp.status >= 400:
            raise HelixError(resp.status, str(body.get("message") or resp.reason), path)
        return body

    # --------------------------------------------------------------------------- calls
    async def me(self) -> dict[str, Any] | None:
        """The token's own user (GET /users without parameters)."""
        data = (await self.request("GET", "/users")).get("data") or []
        return data[0] if data else None

    async def create_subscription(
        self, type: str, version: str, condition: dict[str, str], session_id: str
    ) -> dict[str, Any]:
        """POST /eventsub/subscriptions on a WebSocket session; returns the subscription."""
        body = {
            "type": type,
            "version": version,
            "condition": condition,
            "transport": {"method": "websocket", "session_id": session_id},
        }
        created: dict[str, Any] = (
            await self.request("POST", "/eventsub/subscriptions", json=body)
        )["data"][0]
        return created

    async def subscriptions(self, **filters: str) -> list[dict[str, Any]]:
        """Every subscription of this token (all pages), optionally filtered by status/type."""
        return [item async for item in self._pages("/eventsub/subscriptions", dict(filters))]

    async def delete_subscription(self, subscription_id: str) -> bool:
        """DELETE one subscription; False when Twitch no longer has it."""
        try:
            await self.request("DELETE", "/eventsub/subscriptions", params={"id": subscription_id})
        except HelixError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def followers(self, broadcaster_id: str) -> AsyncIterator[dict[str, Any]]:
        """The channel's followers, newest first, page by page as the caller consumes them."""
        return self._pages(
            "/channels/followers", {"broadcaster_id": broadcaster_id, "first": "100"}
        )

    async def stream(self, user_id: str) -> dict[str, Any] | None:
        """The live stream of a channel, or None when it is offline."""
        data = (await self.request("GET", "/streams", params={"user_id": user_id})).get("data")
        return data[0] if data else None

    async def streams(self, user_ids: list[str]) -> list[dict[str, Any]]:
        """The live streams among up to any number of channels (100 per call)."""
        live: list[dict[str, Any]] = []
        for i in range(0, len(user_ids), 100):
            params = [("user_id", uid) for uid in user_ids[i : i + 100]] + [("first", "100")]
            live += (await self.request("GET", "/streams", params=params)).get("data") or []
        return live

    async def follower_total(self, broadcaster_id: str) -> int:
        """How many follow the channel (`total` of GET /channels/followers)."""
        body = await self.request(
            "GET", "/channels/followers", params={"broadcaster_id": broadcaster_id, "first": "1"}
        )
        return int(body.get("total") or 0)

    async def subscription_totals(self, broadcaster_id: str) -> dict[str, int]:
        """{"total", "points"} of GET /subscriptions (needs channel:read:subscriptions)."""
        body = await self.request(
            "GET", "/subscriptions", params={"broadcaster_id": broadcaster_id, "first": "1"}
        )
        return {"total": int(body.get("total") or 0), "points": int(body.get("points") or 0)}

    async def find_category(self, name: str) -> dict[str, Any] | None:
        """The category named `name` (exact match, case-insensitive, else the best hit)."""
        data = (
            await self.request("GET", "/search/categories", params={"query": name, "first": "20"})
        ).get("data") or []
        exact = [c for c in data if str(c.get("name", "")).lower() == name.lower()]
        found: dict[str, Any] | None = (exact or data or [None])[0]
        return found

    async def modify_channel(self, broadcaster_id: str, changes: dict[str, Any]) -> None:
        """PATCH /channels: title, game_id, tags (needs channel:manage:broadcast)."""
        await self.request(
            "PATCH", "/channels", params={"broadcaster_id": broadcaster_id}, json=changes
        )

    def polls(self, broadcaster_id: str) -> AsyncIterator[dict[str, Any]]:
        """Polls of the last 90 days, newest first (channel:read:polls or manage)."""
        return self._pages("/polls", {"broadcaster_id": broadcaster_id, "first": "20"})

    def predictions(self, broadcaster_id: str) -> AsyncIterator[dict[str, Any]]:
        """Predictions of the last 90 days, newest first (channel:read:predictions or manage)."""
        return self._pages("/predictions", {"broadcaster_id": broadcaster_id, "first": "25"})

    def archives(self, user_id: str) -> AsyncIterator[dict[str, Any]]:
        """Past broadcasts kept in /videos (stream_id, created_at, duration), newest first."""
        return self._pages("/videos", {"user_id": user_id, "type": "archive", "first": "20"})

    async def channel_info(self, broadcaster_id: str) -> dict[str, Any] | None:
        """GET /channels: the title, category and labels as they are now."""
        params = {"broadcaster_id": broadcaster_id}
        data = (await self.request("GET", "/channels", params=params)).get("data") or []
        return data[0] if data else None

    async def bits_leaderboard(self, period: str, started_at: str) -> dict[str, Any]:
        """GET /bits/leaderboard (bits:read): the top 100 per-user Bits totals of the Pacific-time
        period holding started_at, with its date_range."""
        params = {"period": period, "started_at": started_at, "count": "100"}
        return await self.request("GET", "/bits/leaderboard", params=params)

    async def _pages(self, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        while True:
            body = await self.request("GET", path, params=params)
            for item in body.get("data") or []:
                yield item
            cursor = (body.get("pagination") or {}).get("cursor")
            if not cursor:
                return
            params = {**params, "after": cursor}


def ratelimit_wait(reset: str | None, now: float | None = None) -> float:
    """Seconds until Ratelimit-Reset (an epoch second), bounded to [0.1, 60]."""
    now = time.time() if now is None else now
    try:
        wait = float(reset) - now if reset else 1.0
    except ValueError:
        wait = 1.0
    return min(MAX_RATELIMIT_WAIT, max(0.1, wait))


def _remaining(resp: aiohttp.ClientResponse) -> int:
    """Ratelimit-Remaining; 0 when absent or unreadable (then it is the bucket)."""
    try:
        return int(resp.headers.get("Ratelimit-Remaining") or 0)
    except ValueError:
        return 0


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json(content_type=None)
    except ValueError:
        return {"message": (await resp.text())[:200]}
    return body if isinstance(body, dict) else {"data": body}
