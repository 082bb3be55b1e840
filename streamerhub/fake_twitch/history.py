"""What Helix keeps after the fact: polls and predictions (90 days), archives in /videos, the
channel's current information. Backfill after a gap reads these; tests set them through
`/_fake/history` (Helix shapes, newest first) or let `/_fake/live` make an archive."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from .access import authenticate, page
from .replies import ApiError, require
from .state import State


def archive(state: State, user_id: str, stream_id: str, started_at: str) -> dict[str, Any]:
    """The /videos entry Twitch makes when a stream ends: created_at = its start, duration."""
    user = state.user_or_stub(user_id)
    whole_seconds = started_at.rstrip("Z").split(".")[0].split("+")[0]
    begun = dt.datetime.fromisoformat(whole_seconds).replace(tzinfo=dt.timezone.utc)
    seconds = max(1, int((dt.datetime.now(dt.timezone.utc) - begun).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    duration = (f"{hours}h" if hours else "") + f"{rest // 60}m{rest % 60}s"
    video = {
        "id": str(2_000_000_000 + len(state.history(user_id)["videos"])),
        "stream_id": stream_id,
        "user_id": user_id,
        "user_login": user["login"],
        "user_name": user["display_name"],
        "title": state.channel(user_id).title,
        "description": "",
        "created_at": begun.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "published_at": begun.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "url": f"https://www.twitch.tv/videos/{stream_id}",
        "thumbnail_url": "",
        "viewable": "public",
        "view_count": 0,
        "language": "en",
        "type": "archive",
        "duration": duration,
        "muted_segments": None,
    }
    state.history(user_id)["videos"].insert(0, video)
    return video


async def get_polls(request: web.Request) -> web.Response:
    """GET /polls?broadcaster_id= (channel:read:polls or manage), newest first."""
    return _listing(request, "polls", "channel:read:polls")


async def get_predictions(request: web.Request) -> web.Response:
    """GET /predictions?broadcaster_id= (channel:read:predictions or manage), newest first."""
    return _listing(request, "predictions", "channel:read:predictions")


def _listing(request: web.Request, kind: str, scope: str) -> web.Response:
    state, token = authenticate(request, scope)
    broadcaster_id = require(request.query, "broadcaster_id")
    if broadcaster_id != token.user_id:
        raise ApiError(403, "The broadcaster_id must match the user ID in the access token")
    items = state.history(broadcaster_id)[kind]
    chunk, pagination = page(request, items)
    return web.json_response({"data": list(chunk), "pagination": pagination})


async def get_videos(request: web.Request) -> web.Response:
    """GET /videos?user_id=&type=: a channel's videos, newest first."""
    state, _ = authenticate(request)
    user_id = require(request.query, "user_id")
    wanted = request.query.get("type", "all")
    videos = [v for v in state.history(user_id)["videos"] if wanted in ("all", v["type"])]
    chunk, pagination = page(request, videos)
    return web.json_response({"data": list(chunk), "pagination": pagination})


async def get_channels(request: web.Request) -> web.Response:
    """GET /channels?broadcaster_id=: title, category, tags as they are now."""
    state, _ = authenticate(request)
    data = []
    for broadcaster_id in request.query.getall("broadcaster_id", []):
        channel, user = state.channel(broadcaster_id), state.user_or_stub(broadcaster_id)
        data.append(
            {
                "broadcaster_id": broadcaster_id,
                "broadcaster_login": user["login"],
                "broadcaster_name": user["display_name"],
                "broadcaster_language": channel.language,
                "game_id": channel.game_id,
                "game_name": channel.game_name,
                "title": channel.title,
                "delay": 0,
                "tags": list(channel.tags),
                "content_classification_labels": list(channel.content_classification_labels),
                "is_branded_content": False,
            }
        )
    if not data:
        raise ApiError(400, 'Missing required parameter "broadcaster_id"')
    return web.json_response({"data": data})


def add_routes(app: web.Application, prefix: str = "/helix") -> None:
    """Register the history reads under prefix."""
    app.router.add_get(f"{prefix}/polls", get_polls)
    app.router.add_get(f"{prefix}/predictions", get_predictions)
    app.router.add_get(f"{prefix}/videos", get_videos)
    app.router.add_get(f"{prefix}/channels", get_channels)
