"""The Helix subset StreamerHub uses: users, streams, followers, subscriptions, channels."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import eventsub_api
from .access import authenticate, own_channel, page
from .channel import CATEGORIES, Channel, sub_points
from .delivery import deliver
from .replies import ApiError, json_body, require
from .state import Token


def _public(user: dict[str, Any], token: Token) -> dict[str, Any]:
    shown = dict(user)
    if user["id"] != token.user_id or "user:read:email" not in token.scopes:
        shown.pop("email", None)
    return shown


async def get_users(request: web.Request) -> web.Response:
    """GET /users: no parameters means the token's own user."""
    state, token = authenticate(request)
    ids, logins = request.query.getall("id", []), request.query.getall("login", [])
    if len(ids) + len(logins) > 100:
        raise ApiError(400, "The request exceeds the maximum of 100 IDs and logins")
    if not ids and not logins:
        if not token.user_id:
            raise ApiError(400, "Must provide an ID, Login or OAuth Token")
        ids = [token.user_id]
    found = [state.users[i] for i in ids if i in state.users]
    found += [u for u in map(state.user_by_login, logins) if u and u not in found]
    return web.json_response({"data": [_public(u, token) for u in found]})


async def get_streams(request: web.Request) -> web.Response:
    """GET /streams: live streams only, so an offline channel gives empty data."""
    state, _ = authenticate(request)
    ids = request.query.getall("user_id", [])
    ids += [u["id"] for u in map(state.user_by_login, request.query.getall("user_login", [])) if u]
    wanted = ids or list(state.channels)
    live = [state.channels[i] for i in wanted if i in state.channels and state.channels[i].live]
    live.sort(key=lambda c: -c.viewer_count)
    chunk, pagination = page(request, [c.stream_json(state.user_or_stub(c.user_id)) for c in live])
    return web.json_response({"data": chunk, "pagination": pagination})


async def get_followers(request: web.Request) -> web.Response:
    """GET /channels/followers: newest first; without the scope only the total, as on Twitch."""
    state, token = authenticate(request)
    broadcaster_id = require(request.query, "broadcaster_id")
    follows = list(reversed(state.followers.get(broadcaster_id, {}).values()))
    total = len(follows)
    allowed = "moderator:read:followers" in token.scopes and token.user_id == broadcaster_id
    if not allowed:
        return web.json_response({"total": total, "data": [], "pagination": {}})
    user_id = request.query.get("user_id")
    if user_id:
        follows = [f for f in follows if f.user_id == user_id]
    chunk, pagination = page(request, [vars(f).copy() for f in follows])
    return web.json_response({"total": total, "data": chunk, "pagination": pagination})


async def get_subscriptions(request: web.Request) -> web.Response:
    """GET /subscriptions: the broadcaster's subscribers with total and points."""
    state, token = authenticate(request, "channel:read:subscriptions")
    broadcaster_id = own_channel(request, token)
    subs = state.subscribers.get(broadcaster_id, {})
    wanted = request.query.getall("user_id", [])
    chosen = [s for s in subs.values() if not wanted or s.user_id in wanted]
    broadcaster = state.user_or_stub(broadcaster_id)
    chunk, pagination = page(request, [s.to_json(broadcaster) for s in chosen])
    return web.json_response(
        {"data": chunk, "pagination": pagination, "total": len(subs), "points": sub_points(subs)}
    )


async def patch_channel(request: web.Request) -> web.Response:
    """PATCH /channels: title, category, language, tags; subscribers get channel.update."""
    state, token = authenticate(request, "channel:manage:broadcast")
    channel = state.channel(own_channel(request, token))
    body = await json_body(request)
    _update_channel(channel, body)
    user = state.user_or_stub(channel.user_id)
    event = {
        "broadcaster_user_id": channel.user_id,
        "broadcaster_user_login": user["login"],
        "broadcaster_user_name": user["display_name"],
        "title": channel.title,
        "language": channel.language,
        "category_id": channel.game_id,
        "category_name": channel.game_name,
        "content_classification_labels": list(channel.content_classification_labels),
    }
    await deliver(state, [{"subscription_type": "channel.update", "event": event}], reflect=False)
    return web.Response(status=204)


def _update_channel(channel: Channel, body: dict[str, Any]) -> None:
    if "title" in body:
        if not str(body["title"]).strip():
            raise ApiError(400, "The title field may not be empty")
        channel.title = str(body["title"])
    if "game_id" in body:
        channel.game_id, channel.game_name = _category(str(body["game_id"]))
    if "broadcaster_language" in body:
        channel.language = str(body["broadcaster_language"])
    if "tags" in body:
        tags = body["tags"]
        if not isinstance(tags, list) or len(tags) > 10 or any(len(str(t)) > 25 for t in tags):
            raise ApiError(400, "tags must be a list of at most 10 tags of 25 characters")
        # Twitch's tag rules: letters and digits only (any script), no spaces or punctuation.
        if any(not str(t) or not str(t).isalnum() for t in tags):
            raise ApiError(400, "The tag is invalid: no spaces or special characters")
        channel.tags = [str(t) for t in tags]


def _category(game_id: str) -> tuple[str, str]:
    if game_id in ("", "0"):
        return "", ""
    for category_id, name in CATEGORIES:
        if category_id == game_id:
            return category_id, name
    raise ApiError(400, "The ID in game_id is not valid")


async def search_categories(request: web.Request) -> web.Response:
    """GET /search/categories: case-insensitive substring match on category names."""
    authenticate(request)
    query = require(request.query, "query").lower()
    found = [
        {
            "id": cid,
            "name": name,
            "box_art_url": f"https://static-cdn.jtvnw.net/ttv-boxart/{cid}-52x72.jpg",
        }
        for cid, name in CATEGORIES
        if query in name.lower()
    ]
    chunk, pagination = page(request, found)
    return web.json_response({"data": chunk, "pagination": pagination})


async def get_stream_key(request: web.Request) -> web.Response:
    """GET /streams/key: the broadcaster's own stream key."""
    state, token = authenticate(request, "channel:read:stream_key")
    channel = state.channel(own_channel(request, token))
    return web.json_response({"data": [{"stream_key": channel.stream_key}]})


def add_routes(app: web.Application, prefix: str = "/helix") -> None:
    """Register every Helix route under prefix."""
    app.router.add_get(f"{prefix}/users", get_users)
    app.router.add_get(f"{prefix}/streams", get_streams)
    app.router.add_get(f"{prefix}/streams/key", get_stream_key)
    app.router.add_get(f"{prefix}/channels/followers", get_followers)
    app.router.add_get(f"{prefix}/subscriptions", get_subscriptions)
    app.router.add_patch(f"{prefix}/channels", patch_channel)
    app.router.add_get(f"{prefix}/search/categories", search_categories)
    eventsub_api.add_routes(app, f"{prefix}/eventsub/subscriptions")
