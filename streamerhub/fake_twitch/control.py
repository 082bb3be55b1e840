"""/_fake: the control API tests, benchmarks and the demo use to drive the fake."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web

from . import delivery, history
from .channel import Follower, Subscriber, generated_followers, generated_subscribers
from .keys import STATE_KEY
from .replies import ApiError, json_body
from .state import Failure, State

T = TypeVar("T")


def _ws_base(request: web.Request) -> str:
    return f"ws://{request.host}/ws"


async def _setup(request: web.Request) -> tuple[State, dict[str, Any]]:
    return request.config_dict[STATE_KEY], await json_body(request)


async def post_events(request: web.Request) -> web.Response:
    """Deliver one event, or {"events": [...]} in bulk, to every matching subscription."""
    state, body = await _setup(request)
    items = body["events"] if isinstance(body.get("events"), list) else [body]
    try:
        outcome = await delivery.deliver(state, items, reflect=body.get("reflect", True))
    except delivery.DeliveryError as exc:
        raise ApiError(400, str(exc)) from None
    return web.json_response({"delivered": outcome.delivered, "message_ids": outcome.message_ids})


async def post_raw(request: web.Request) -> web.Response:
    """Send {"text"} as-is to every session (or {"session_id"})."""
    state, body = await _setup(request)
    if not isinstance(body.get("text"), str):
        raise ApiError(400, "text must be a string")
    sent = await delivery.broadcast_raw(state, body["text"], body.get("session_id"))
    return web.json_response({"sent": sent})


async def post_reconnect(request: web.Request) -> web.Response:
    """Send session_reconnect to every session (or {"session_id"})."""
    state, body = await _setup(request)
    urls = await delivery.request_reconnect(state, _ws_base(request), body.get("session_id"))
    return web.json_response({"reconnect_urls": urls})


async def post_close(request: web.Request) -> web.Response:
    """Close every session (or {"session_id"}) with {"code"} and optional {"reason"}."""
    state, body = await _setup(request)
    code = body.get("code", 4000)
    if not isinstance(code, int) or not (code == 1000 or 3000 <= code <= 4999):
        raise ApiError(400, "code must be 1000 or within 3000-4999")
    closed = await delivery.close_all(
        state, code, str(body.get("reason", "")), body.get("session_id")
    )
    return web.json_response({"closed": closed})


async def post_keepalive(request: web.Request) -> web.Response:
    """{"enabled": false} stops keepalives and pings (a stalled server); true resumes them."""
    state, body = await _setup(request)
    state.keepalive_enabled = bool(body.get("enabled", True))
    return web.json_response({"enabled": state.keepalive_enabled})


async def post_revoke(request: web.Request) -> web.Response:
    """Revoke every enabled subscription of {"subscription_type"} with {"status"}."""
    state, body = await _setup(request)
    try:
        ids = await delivery.revoke(
            state,
            str(body.get("subscription_type", "")),
            str(body.get("status", "authorization_revoked")),
            body.get("subscription_version"),
        )
    except delivery.DeliveryError as exc:
        raise ApiError(400, str(exc)) from None
    return web.json_response({"revoked": len(ids), "subscription_ids": ids})


async def post_fail(request: web.Request) -> web.Response:
    """Make the next {"count"} calls under {"path"} answer {"status"} (a code or "timeout")."""
    state, body = await _setup(request)
    status, path = body.get("status"), body.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ApiError(400, "path must start with /")
    if status != "timeout" and not (isinstance(status, int) and 400 <= status <= 599):
        raise ApiError(400, 'status must be an HTTP error code or "timeout"')
    count, applied = max(1, int(body.get("count", 1))), bool(body.get("applied", False))
    method = str(body["method"]).upper() if body.get("method") else None
    limit = bool(body.get("eventsub_limit", False))
    state.failures.append(Failure(path, status, count, applied, method, limit))
    return web.json_response({"pending": [vars(f).copy() for f in state.failures]})


async def post_live(request: web.Request) -> web.Response:
    """Set a channel's stream state ({"user_id", "live", "viewer_count", "title", "game_name"})."""
    state, body = await _setup(request)
    channel = state.channel(str(body.get("user_id", "1000")))
    if body.get("live") is True:
        channel.go_live(started_at=body.get("started_at"))
    elif body.get("live") is False and channel.live and channel.stream_id and channel.started_at:
        # As on Twitch: the ended stream is kept as an archive in /videos.
        history.archive(state, channel.user_id, channel.stream_id, channel.started_at)
        channel.go_offline()
    for key in ("viewer_count", "title", "game_name", "game_id", "language"):
        if key in body:
            setattr(channel, key, body[key])
    return web.json_response(channel.snapshot())


async def post_history(request: web.Request) -> web.Response:
    """Set what Helix keeps: {"user_id"?, "polls"?, "predictions"?, "videos"?} (newest first)."""
    state, body = await _setup(request)
    kept = state.history(str(body.get("user_id", "1000")))
    for kind in ("polls", "predictions", "videos"):
        if isinstance(body.get(kind), list):
            kept[kind] = [dict(item) for item in body[kind]]
    return web.json_response({kind: len(items) for kind, items in kept.items()})


async def post_followers(request: web.Request) -> web.Response:
    """Replace a channel's followers: {"count": n} made-up ones or {"followers": [...]}."""
    state, body = await _setup(request)
    user_id = str(body.get("user_id", "1000"))
    if isinstance(body.get("followers"), list):
        follows = [_build(Follower, f) for f in body["followers"]]  # oldest first
    else:
        follows = generated_followers(int(body.get("count", 0)))
    state.followers[user_id] = {f.user_id: f for f in follows}
    return web.json_response({"total": len(state.followers[user_id])})


def _build(kind: type[T], fields: Any) -> T:
    """A Follower or Subscriber from one JSON entry; 400 when its fields do not fit."""
    try:
        return kind(**fields)
    except TypeError as exc:
        raise ApiError(400, f"bad {kind.__name__.lower()} entry: {exc}") from None


async def post_subscribers(request: web.Request) -> web.Response:
    """Replace a channel's subscribers: {"count": n} or {"subscribers": [...]}."""
    state, body = await _setup(request)
    user_id = str(body.get("user_id", "1000"))
    if isinstance(body.get("subscribers"), list):
        subs = [_build(Subscriber, s) for s in body["subscribers"]]
    else:
        subs = generated_subscribers(int(body.get("count", 0)))
    state.subscribers[user_id] = {s.user_id: s for s in subs}
    return web.json_response({"total": len(subs)})


async def post_token(request: web.Request) -> web.Response:
    """Change a token ({"access_token"} + "expired"/"revoked"/"scopes") or mint one."""
    state, body = await _setup(request)
    if not body.get("access_token"):
        user_id = str(body.get("user_id", "1000"))
        if user_id not in state.users:  # so GET /users answers for a minted channel
            state.add_user(**state.user_or_stub(user_id))
        minted = state.issue_token(
            user_id, body.get("scopes"), str(body.get("client_id") or state.default_token.client_id)
        )
        return web.json_response(minted.grant_json() | {"client_id": minted.client_id})
    token = state.tokens.get(str(body["access_token"]))
    if token is None:
        raise ApiError(404, "unknown access token")
    if body.get("expired"):
        token.expires_at = 0
    if body.get("revoked"):
        state.revoke(token)
        if body.get("revocation_frames") and token.user_id:  # the user disconnected the app
            await delivery.revoke_grant(state, token.user_id, token.client_id)
    if isinstance(body.get("scopes"), list):
        token.scopes = [str(s) for s in body["scopes"]]
    return web.json_response(
        {
            "access_token": token.access_token,
            "valid": token.valid(),
            "scopes": token.scopes,
            "revoked": token.revoked,
        }
    )


async def get_state(request: web.Request) -> web.Response:
    """Everything the fake knows, for assertions and the demo."""
    return web.json_response(request.config_dict[STATE_KEY].snapshot())


def add_routes(app: web.Application, prefix: str = "/_fake") -> None:
    """Register every control route under prefix."""
    for name, handler in (
        ("events", post_events),
        ("raw", post_raw),
        ("reconnect", post_reconnect),
        ("close", post_close),
        ("keepalive", post_keepalive),
        ("revoke", post_revoke),
        ("fail", post_fail),
        ("live", post_live),
        ("history", post_history),
        ("followers", post_followers),
        ("subscribers", post_subscribers),
        ("token", post_token),
    ):
        app.router.add_post(f"{prefix}/{name}", handler)
    app.router.add_get(f"{prefix}/state", get_state)
