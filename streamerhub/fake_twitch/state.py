"""The fake's whole world in memory: users, tokens, sessions, subscriptions, channels, faults."""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .catalog import ALL_SCOPES
from .channel import Channel, Follower, Subscriber
from .frames import rfc3339_ns

DEFAULT_CLIENT_ID = "fakeclientid0000000000000000000"
DEFAULT_USER = {"id": "1000", "login": "streamer", "display_name": "Streamer"}
TOKEN_LIFETIME = 14_400  # seconds; Twitch user tokens live about four hours


# A dead socket's subscriptions stay listed (at least a minute on Twitch) with why it died.
DISABLED_BY_CLOSE = {
    4001: "websocket_received_inbound_traffic",
    4002: "websocket_failed_ping_pong",
    4003: "websocket_connection_unused",
    4005: "websocket_network_timeout",
    4006: "websocket_network_error",
    4000: "websocket_internal_error",
}


@dataclass
class Settings:
    """Timing knobs; the defaults are Twitch's own numbers."""

    keepalive_default: float = 10  # welcome's keepalive when the URL names none (unclamped)
    subscribe_deadline: float | None = None  # 4003 after this; None = the keepalive timeout
    reconnect_grace: float = 30.0  # old socket closed 4004 this long after session_reconnect
    ping_interval: float = 10.0  # WebSocket ping period; an unanswered ping closes 4002
    device_interval: int = 5  # the device flow's advertised polling interval
    hang_seconds: float = 30.0  # how long a "timeout" fault holds a request
    ratelimit_limit: int = 800  # Helix points per minute
    # Twitch's client types: "confidential" refreshes only with the secret (also device-code
    # tokens), "public" has no secret and cannot use the authorization-code flow; "any" checks
    # neither (the old, lenient fake).
    client_type: str = "any"
    client_secret: str = ""  # when set, the one secret a confidential client must send
    authorize_outcome: str = "approve"  # or "access_denied": the user clicks Cancel
    device_outcome: str = "approve"  # or "access_denied" / "expired_token"
    # Seeded chaos for delivery (Twitch's "at least once", in no promised order):
    chaos_duplicates: float = 0.0  # share of frames sent again later with the same message_id
    chaos_reorder: int = 0  # shuffle frames within windows of this many (progress before begin)
    chaos_stale: float = 0.0  # share of frames whose message_timestamp is minutes old
    chaos_seed: int | None = None
    # "type@version" entries Twitch has withdrawn: subscribing answers 410
    withdrawn: tuple[str, ...] = ()
    simulate: bool = False
    speed: float = 1.0  # simulation speed factor
    seed: int | None = None  # simulation randomness, for reproducible demos
    clock_skew: float = 0.0  # seconds Twitch's message_timestamps are ahead of the host
    authorize_user: str = ""  # /authorize signs in as this user id (default: the streamer)


@dataclass(eq=False)
class Token:
    """A user access token with its paired refresh token."""

    access_token: str
    refresh_token: str
    client_id: str
    user_id: str
    scopes: list[str]
    expires_at: float
    revoked: bool = False

    def valid(self) -> bool:
        """Usable for Helix right now."""
        return not self.revoked and self.expires_at > time.time()

    def expires_in(self) -> int:
        """Seconds left, never negative."""
        return max(0, int(self.expires_at - time.time()))

    def grant_json(self) -> dict[str, Any]:
        """The OAuth token endpoint's answer for this token (app tokens have no refresh)."""
        grant = {
            "access_token": self.access_token,
            "expires_in": self.expires_in(),
            "refresh_token": self.refresh_token,
            "scope": list(self.scopes),
            "token_type": "bearer",
        }
        if not self.user_id:
            del grant["refresh_token"], grant["scope"]
        return grant


@dataclass(eq=False)
class Session:
    """One EventSub WebSocket connection."""

    id: str
    ws: web.WebSocketResponse
    keepalive: float
    connected_at: str
    # The connection's asyncio transport, for chunked frame writes.
    transport: asyncio.Transport | None = None
    welcomed_at: float = 0.0  # time.monotonic() of the welcome
    last_sent: float = 0.0  # time.monotonic() of the last data frame (pings don't count)
    used: bool = False  # has held a subscription; otherwise 4003 at the deadline
    status: str = "connected"
    frames_sent: int = 0
    reconnect_token: str | None = None
    reconnect_at: float | None = None
    last_ping: float = field(default_factory=time.monotonic)
    ping_sent_at: float | None = None  # outstanding ping, cleared by a pong
    close_code: int | None = None  # set when the server starts closing
    closing_task: asyncio.Task[Any] | None = None  # the task running the server-side close

    def snapshot(self, subscriptions: int) -> dict[str, Any]:
        """Public view for /_fake/state."""
        return {
            "id": self.id,
            "status": self.status,
            "connected_at": self.connected_at,
            "keepalive_timeout_seconds": self.keepalive,
            "frames_sent": self.frames_sent,
            "subscriptions": subscriptions,
        }


@dataclass(eq=False)
class Subscription:
    """One EventSub subscription on a WebSocket transport."""

    id: str
    type: str
    version: str
    condition: dict[str, str]
    session_id: str
    owner_id: str
    client_id: str
    cost: int
    created_at: str = field(default_factory=rfc3339_ns)
    status: str = "enabled"

    def to_json(self) -> dict[str, Any]:
        """The subscription object as Twitch writes it in notifications and Helix."""
        return {
            "id": self.id,
            "status": self.status,
            "type": self.type,
            "version": self.version,
            "cost": self.cost,
            "condition": dict(self.condition),
            "transport": {"method": "websocket", "session_id": self.session_id},
            "created_at": self.created_at,
        }

    def matches(self, event: dict[str, Any]) -> bool:
        """True when the event is for the channel (and reward) this condition names."""
        for key, value in zip(_ROUTED, route_key(event), strict=True):
            if key in self.condition and value != self.condition[key]:
                return False
        # channel.ad_break.begin's condition says broadcaster_id
        wanted = self.condition.get("broadcaster_id")
        return wanted is None or wanted == route_key(event)[0]


_ROUTED = ("broadcaster_user_id", "to_broadcaster_user_id", "from_broadcaster_user_id", "reward_id")


def route_key(event: dict[str, Any]) -> tuple[str, str, str, str]:
    """The event fields a subscription condition can filter on, as strings, in _ROUTED order."""
    reward = event.get("reward")
    reward_id = reward.get("id") if isinstance(reward, dict) else None
    return (
        # charity events name their channel broadcaster_id
        str(event.get("broadcaster_user_id", event.get("broadcaster_id"))),
        str(event.get("to_broadcaster_user_id")),
        str(event.get("from_broadcaster_user_id")),
        str(reward_id),
    )


@dataclass
class Failure:
    """An injected fault: the next `remaining` requests under `path` answer `status`."""

    path: str
    status: int | str
    remaining: int
    applied: bool = False  # "applied, answer lost": the request takes effect, its answer is dropped
    method: str | None = None  # only requests of this HTTP method; None = any
    # a 429 that is an EventSub limit (transports, cost), not the bucket: points remain
    eventsub_limit: bool = False


@dataclass
class RateLimit:
    """Helix's token bucket: `limit` points refilled evenly over a minute."""

    limit: int = 800
    points: float = 800.0
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        """Spend one point; False when the bucket is empty (answer 429)."""
        now = time.monotonic()
        self.points = min(self.limit, self.points + (now - self.updated) * self.limit / 60)
        self.updated = now
        if self.points < 1:
            return False
        self.points -= 1
        return True

    def headers(self, exhausted: bool = False) -> dict[str, str]:
        """Ratelimit-Limit/Remaining/Reset; Reset is when the bucket is full again."""
        remaining = 0 if exhausted else int(self.points)
        refill = (self.limit - remaining) * 60 / self.limit
        if exhausted:
            refill = max(1.0, refill)  # a 429 always names a reset in the future
        return {
            "Ratelimit-Limit": str(self.limit),
            "Ratelimit-Remaining": str(remaining),
            "Ratelimit-Reset": str(math.ceil(time.time() + refill)),
        }


class State:
    """Everything the fake knows; lives on the app under STATE_KEY."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.users: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.auth_codes: dict[str, dict[str, Any]] = {}
        self.device_codes: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, Session] = {}
        self.reconnects: dict[str, Session] = {}
        self.closed_sessions: deque[dict[str, Any]] = deque(maxlen=200)
        self.subscriptions: dict[str, Subscription] = {}
        self.channels: dict[str, Channel] = {}
        self.followers: dict[str, dict[str, Follower]] = {}
        self.subscribers: dict[str, dict[str, Subscriber]] = {}
        self.failures: list[Failure] = []
        # Per channel: polls, predictions, videos (see history())
        self.histories: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.keepalive_enabled = True
        self.stopping = asyncio.Event()  # set on shutdown: held requests let go
        self.counters: Counter[str] = Counter()
        self.chaos = random.Random(self.settings.chaos_seed)
        # Helix buckets are per client and user (per client for app tokens), as on Twitch.
        self.ratelimit = RateLimit(
            self.settings.ratelimit_limit, float(self.settings.ratelimit_limit)
        )
        self.buckets: dict[tuple[str, str], RateLimit] = {}
        self.add_user(**DEFAULT_USER, broadcaster_type="affiliate")
        self.channel(DEFAULT_USER["id"])
        self.default_token = self.issue_token(DEFAULT_USER["id"])

    # Users and channels -------------------------------------------------------------------
    def add_user(self, id: str, login: str, display_name: str, **extra: Any) -> dict[str, Any]:
        """Register a Helix user (GET /users shape)."""
        user = {
            "id": id,
            "login": login,
            "display_name": display_name,
            "type": "",
            "broadcaster_type": "",
            "description": f"{display_name}'s channel",
            "profile_image_url": f"https://static-cdn.jtvnw.net/user-default-pictures/{id}.png",
            "offline_image_url": "",
            "view_count": 0,
            "email": f"{login}@example.invalid",
            "created_at": "2016-12-14T20:32:28Z",
            **extra,
        }
        self.users[id] = user
        return user

    def user_by_login(self, login: str) -> dict[str, Any] | None:
        """Find a user by login, case-insensitively."""
        return next((u for u in self.users.values() if u["login"] == login.lower()), None)

    def user_or_stub(self, user_id: str) -> dict[str, Any]:
        """The user, or a made-up one for ids only events have mentioned."""
        return self.users.get(user_id) or {
            "id": user_id,
            "login": f"user{user_id}",
            "display_name": f"User{user_id}",
        }

    def channel(self, user_id: str) -> Channel:
        """The channel of a broadcaster, created on first use."""
        return self.channels.setdefault(user_id, Channel(user_id))

    def history(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        """What Helix keeps of a channel's past, newest first: polls, predictions, videos."""
        return self.histories.setdefault(user_id, {"polls": [], "predictions": [], "videos": []})

    # Tokens --------------------------------------------------------------------------------
    def issue_token(
        self, user_id: str, scopes: list[str] | None = None, client_id: str = DEFAULT_CLIENT_ID
    ) -> Token:
        """Mint a user access+refresh pair; no scopes given means every scope."""
        token = Token(
            secrets.token_hex(15),
            secrets.token_hex(25),
            client_id,
            user_id,
            list(ALL_SCOPES if scopes is None else scopes),
            time.time() + TOKEN_LIFETIME,
        )
        self.tokens[token.access_token] = token
        self.refresh_tokens[token.refresh_token] = token
        return token

    def issue_app_token(self, client_id: str) -> Token:
        """Mint an app access token (client credentials): no user, no scopes, no refresh."""
        token = Token(secrets.token_hex(15), "", client_id, "", [], time.time() + 60 * 86_400)
        self.tokens[token.access_token] = token
        return token

    def bucket_for(self, authorization: str) -> RateLimit:
        """The rate-limit bucket of the caller's client and user (unknown callers share one)."""
        token = self.tokens.get(authorization.partition(" ")[2].strip())
        if token is None:
            return self.ratelimit
        key = (token.client_id, token.user_id)
        if key not in self.buckets:
            limit = self.settings.ratelimit_limit
            self.buckets[key] = RateLimit(limit, float(limit))
        return self.buckets[key]

    def valid_token(self, access_token: str) -> Token | None:
        """The token if it is known, unexpired and unrevoked."""
        token = self.tokens.get(access_token)
        return token if token is not None and token.valid() else None

    def refresh(self, refresh_token: str) -> Token | None:
        """Rotate: a new pair, the old refresh token dead; None for an unknown/used one."""
        old = self.refresh_tokens.pop(refresh_token, None)
        if old is None or old.revoked:
            return None
        return self.issue_token(old.user_id, old.scopes, old.client_id)

    def revoke(self, token: Token) -> None:
        """Kill an access token and the grant behind it."""
        token.revoked = True
        self.refresh_tokens.pop(token.refresh_token, None)

    # Sessions and subscriptions ---------------------------------------------------------------
    def session_subscriptions(
        self, session_id: str, enabled_only: bool = True
    ) -> list[Subscription]:
        """The subscriptions whose transport is this session."""
        return [
            s
            for s in self.subscriptions.values()
            if s.session_id == session_id and (s.status == "enabled" or not enabled_only)
        ]

    def move_subscriptions(self, old: Session, new: Session) -> int:
        """Carry a reconnecting session's enabled subscriptions over to its successor."""
        moved = self.session_subscriptions(old.id)
        for sub in moved:
            sub.session_id = new.id
        new.used = bool(moved)
        return len(moved)

    def end_session(self, session: Session, close_code: int | None) -> None:
        """Forget a dead socket; its subscriptions become websocket_disconnected, as on Twitch."""
        self.sessions.pop(session.id, None)
        if session.reconnect_token:
            self.reconnects.pop(session.reconnect_token, None)
        for sub in self.session_subscriptions(session.id):
            sub.status = DISABLED_BY_CLOSE.get(close_code or 0, "websocket_disconnected")
        session.status = "closed"
        self.closed_sessions.append(
            {
                "id": session.id,
                "close_code": None if close_code is None else int(close_code),
                "frames_sent": session.frames_sent,
            }
        )

    def recipients(
        self, subscription_type: str, version: str, event: dict[str, Any]
    ) -> list[tuple[Session, Subscription]]:
        """(session, subscription) pairs that should get this event."""
        found: list[tuple[Session, Subscription]] = []
        for sub in self.subscriptions.values():
            if (
                sub.type == subscription_type
                and sub.version == version
                and sub.status == "enabled"
                and sub.matches(event)
            ):
                session = self.sessions.get(sub.session_id)
                if session is not None:
                    found.append((session, sub))
        return found

    # Faults ------------------------------------------------------------------------------------
    def take_failure(self, path: str, method: str = "GET") -> Failure | None:
        """Consume one pending fault whose path prefix (and method, if set) matches, if any."""
        for failure in self.failures:
            if path.startswith(failure.path) and failure.method in (None, method):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self.failures.remove(failure)
                return failure
        return None

    # Introspection ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything a test or demo may want to look at, as JSON-able data."""
        return {
            "sessions": [
                s.snapshot(len(self.session_subscriptions(s.id))) for s in self.sessions.values()
            ],
            "closed_sessions": list(self.closed_sessions),
            "subscriptions": [s.to_json() for s in self.subscriptions.values()],
            "users": list(self.users.values()),
            "live": {uid: c.snapshot() for uid, c in self.channels.items()},
            "followers": {uid: len(f) for uid, f in self.followers.items()},
            "subscribers": {uid: len(s) for uid, s in self.subscribers.items()},
            "keepalive_enabled": self.keepalive_enabled,
            "pending_failures": [vars(f).copy() for f in self.failures],
            "counters": dict(self.counters),
            "default_token": {
                "access_token": self.default_token.access_token,
                "refresh_token": self.default_token.refresh_token,
                "client_id": self.default_token.client_id,
            },
        }
