"""The fake's ingest side: which stream keys are publishing, so /streams tells the truth.

On Twitch a channel is live only while a push with *that account's* key reaches the ingest. The
fake has no RTMP server of its own; two ways tell it about a push instead:

- nginx-rtmp's `on_publish` / `on_publish_done` hooks (form field `name` = the key) pointed at
  `/_fake/ingest/on_publish` and `/_fake/ingest/on_publish_done`: a real push through a real
  ingest checks in, and an unknown key is refused with 403 as Twitch refuses it;
- the control knob `POST /_fake/publishing {"key" | "user_id", "publishing": bool}`.

A channel goes live on the first check-in and offline when its last publisher leaves. A key of
no account is counted in `counters["ingest_rejected"]` and never makes anyone live.
"""

from __future__ import annotations

from aiohttp import web

from .keys import STATE_KEY
from .replies import ApiError, json_body
from .state import State


def channel_of_key(state: State, key: str) -> str | None:
    """The user id whose stream key this is, or None."""
    return next((c.user_id for c in state.channels.values() if c.stream_key == key), None)


def set_publishing(state: State, user_id: str, publishing: bool) -> None:
    """A push with the account's key started (or its last one stopped)."""
    channel = state.channel(user_id)
    pushes = state.counters[f"publishing:{user_id}"]
    pushes = pushes + 1 if publishing else max(0, pushes - 1)
    state.counters[f"publishing:{user_id}"] = pushes
    if pushes and not channel.live:
        channel.go_live()
    elif not pushes and channel.live:
        channel.go_offline()


async def _hook(request: web.Request, publishing: bool) -> web.Response:
    state: State = request.config_dict[STATE_KEY]
    key = str((await request.post()).get("name", ""))
    user_id = channel_of_key(state, key.partition("?")[0])
    if user_id is None:
        state.counters["ingest_rejected"] += 1
        return web.Response(status=403)
    set_publishing(state, user_id, publishing)
    return web.Response(status=200)


async def on_publish(request: web.Request) -> web.Response:
    """nginx-rtmp's on_publish: 200 for an account's key (it goes live), 403 otherwise."""
    return await _hook(request, True)


async def on_publish_done(request: web.Request) -> web.Response:
    """nginx-rtmp's on_publish_done: the push ended."""
    return await _hook(request, False)


async def post_publishing(request: web.Request) -> web.Response:
    """{"key" or "user_id", "publishing": bool}: mark a push as reaching the ingest (or not)."""
    state: State = request.config_dict[STATE_KEY]
    body = await json_body(request)
    user_id = body.get("user_id") or channel_of_key(state, str(body.get("key", "")))
    if not user_id:
        raise ApiError(400, "give user_id, or the key of a known channel")
    set_publishing(state, str(user_id), bool(body.get("publishing", True)))
    return web.json_response({"user_id": user_id, "live": state.channel(str(user_id)).live})


def add_routes(app: web.Application, prefix: str = "/_fake") -> None:
    app.router.add_post(f"{prefix}/ingest/on_publish", on_publish)
    app.router.add_post(f"{prefix}/ingest/on_publish_done", on_publish_done)
    app.router.add_post(f"{prefix}/publishing", post_publishing)
