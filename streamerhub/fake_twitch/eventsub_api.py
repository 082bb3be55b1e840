"""Helix /eventsub/subscriptions: create, list and delete WebSocket subscriptions."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import catalog, conduits
from .access import authenticate, page
from .frames import new_id
from .replies import ApiError, json_body, require
from .state import Session, State, Subscription, Token

MAX_TOTAL_COST = 10
MAX_PER_SESSION = 300
MAX_SESSIONS_PER_USER = 3
_BROADCASTER_KEYS = (
    "broadcaster_user_id",
    "to_broadcaster_user_id",
    "from_broadcaster_user_id",
    "broadcaster_id",
)


async def create(request: web.Request) -> web.Response:
    """POST: 202 with the new subscription, or Twitch's 400/401/403/409/429."""
    state, token = authenticate(request)
    body = await json_body(request)
    if isinstance(body.get("transport"), dict) and body["transport"].get("method") == "conduit":
        return conduits.subscribe(state, token, body, _condition)
    if f"{body.get('type')}@{body.get('version')}" in state.settings.withdrawn:
        raise ApiError(410, "The subscription type and version have been withdrawn")
    row = catalog.lookup(str(body.get("type")), str(body.get("version")))
    if row is None:
        raise ApiError(400, "The combination of values in the type and version fields is not valid")
    condition = _condition(row, body.get("condition"))
    session = _session(state, body.get("transport"), token)
    _authorize(row, condition, token)
    _check_duplicate(state, row, condition, session)
    cost = 0 if token.user_id in _channels_of(condition) else 1
    _check_limits(state, token, session, cost)
    sub = Subscription(
        new_id(), row.type, row.version, condition, session.id, token.user_id, token.client_id, cost
    )
    state.subscriptions[sub.id] = sub
    session.used = True
    return web.json_response({"data": [sub.to_json()], **_totals(state, token)}, status=202)


def _condition(row: catalog.SubscriptionType, raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ApiError(400, "The condition field is required")
    condition = {str(k): str(v) for k, v in raw.items() if v not in (None, "")}
    allowed = set(row.condition) | ({"reward_id"} if "reward_redemption" in row.type else set())
    if set(condition) - allowed:
        raise ApiError(400, f"Unknown condition fields: {sorted(set(condition) - allowed)}")
    present = [key for key in row.condition if key in condition]
    if catalog.is_one_of(row) and len(present) != 1:
        raise ApiError(400, f"The condition needs exactly one of {list(row.condition)}")
    if not catalog.is_one_of(row) and len(present) != len(row.condition):
        raise ApiError(400, f"The condition is missing required fields: {list(row.condition)}")
    return condition


def _session(state: State, transport: object, token: Token) -> Session:
    if not isinstance(transport, dict) or transport.get("method") != "websocket":
        raise ApiError(
            400, "The transport method must be websocket (the fake serves no webhooks or conduits)"
        )
    if not token.user_id:
        raise ApiError(400, "The websocket transport requires a user access token")
    session = state.sessions.get(str(transport.get("session_id")))
    if session is None or session.ws.closed:
        raise ApiError(400, "The websocket session does not exist or has already disconnected")
    return session


def _authorize(row: catalog.SubscriptionType, condition: dict[str, Any], token: Token) -> None:
    if row.scope is None:
        return
    if not catalog.scope_granted(row.scope, token.scopes):
        raise ApiError(403, "subscription missing proper authorization")
    # The token's user must be the one the condition acts as: broadcaster, or moderator for follows.
    acting = (
        condition.get("moderator_user_id")
        or condition.get("broadcaster_user_id")
        or condition.get("broadcaster_id")  # channel.ad_break.begin
    )
    if acting != token.user_id:
        raise ApiError(403, "subscription missing proper authorization")


def _check_duplicate(
    state: State, row: catalog.SubscriptionType, condition: dict[str, Any], session: Session
) -> None:
    for sub in state.session_subscriptions(session.id):
        if sub.type == row.type and sub.version == row.version and sub.condition == condition:
            raise ApiError(409, "subscription already exists")


def _check_limits(state: State, token: Token, session: Session, cost: int) -> None:
    if len(state.session_subscriptions(session.id)) >= MAX_PER_SESSION:
        raise ApiError(429, "maximum number of subscriptions per websocket transport reached")
    busy = {s.session_id for s in _owned(state, token) if s.status == "enabled"}
    if session.id not in busy and len(busy) >= MAX_SESSIONS_PER_USER:
        raise ApiError(429, "number of websocket transports limit exceeded")
    if _totals(state, token)["total_cost"] + cost > MAX_TOTAL_COST:
        raise ApiError(429, "total cost exceeded")


def _channels_of(condition: dict[str, Any]) -> set[str]:
    return {condition[k] for k in _BROADCASTER_KEYS if k in condition}


def _owned(state: State, token: Token) -> list[Subscription]:
    return [
        s
        for s in state.subscriptions.values()
        if s.owner_id == token.user_id and s.client_id == token.client_id
    ]


def _totals(state: State, token: Token, listed: list[Subscription] | None = None) -> dict[str, Any]:
    owned = _owned(state, token)
    return {
        "total": len(owned if listed is None else listed),
        "total_cost": sum(s.cost for s in owned if s.status == "enabled"),
        "max_total_cost": MAX_TOTAL_COST,
    }


async def list_subscriptions(request: web.Request) -> web.Response:
    """GET: the caller's subscriptions, filterable by status, type, user_id or id."""
    state, token = authenticate(request)
    query = request.query
    if sum(key in query for key in ("status", "type", "user_id", "subscription_id")) > 1:
        raise ApiError(400, "Only one of status, type, user_id or subscription_id may be given")
    subs = [
        s
        for s in _owned(state, token)
        if query.get("status", s.status) == s.status
        and query.get("type", s.type) == s.type
        and query.get("subscription_id", s.id) == s.id
        and (not query.get("user_id") or query["user_id"] in s.condition.values())
    ]
    chunk, pagination = page(request, subs)
    return web.json_response(
        {
            "data": [s.to_json() for s in chunk],
            **_totals(state, token, subs),
            "pagination": pagination,
        }
    )


async def delete(request: web.Request) -> web.Response:
    """DELETE ?id=: 204, or 404 when the caller has no such subscription."""
    state, token = authenticate(request)
    sub = state.subscriptions.get(require(request.query, "id"))
    if sub is None or sub not in _owned(state, token):
        raise ApiError(404, "The subscription was not found")
    del state.subscriptions[sub.id]
    return web.Response(status=204)


def add_routes(app: web.Application, path: str) -> None:
    """Register the three methods on path."""
    app.router.add_post(path, create)
    app.router.add_get(path, list_subscriptions)
    app.router.add_delete(path, delete)
