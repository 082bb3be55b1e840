"""The fake's chat: POST /helix/chat/messages with Twitch's rules, echoed as channel.chat.message.

Rules, as Twitch documents them for "Send Chat Message":
- a user token needs user:write:chat and sender_id must be the token's user;
- an app token needs the sender's user:bot grant (to this client) and either the broadcaster's
  channel:bot grant or the sender being a moderator of the channel;
- broadcaster_id, sender_id and message are required; a message has at most 500 characters;
- per sender and channel, at most 20 messages per 30 s (100 when the sender is the broadcaster or
  a moderator there): beyond that, 429;
- the same text as the sender's previous one within 30 s is dropped (is_sent false,
  drop_reason msg_duplicate) unless the sender is the broadcaster or a moderator.
A sent message comes back to every matching channel.chat.message subscription, as on Twitch.

Knobs (/_fake/chat…): inject a viewer's message with badges; make the next sends be dropped with a
drop_reason; read what was sent. HTTP failures of the endpoint use the generic /_fake/fail.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import delivery
from .access import authenticate
from .frames import new_id
from .keys import STATE_KEY
from .replies import ApiError, json_body
from .state import State, Token

MAX_LENGTH = 500
WINDOW_S = 30.0
LIMIT_NORMAL, LIMIT_ELEVATED = 20, 100
BADGES = ("broadcaster", "moderator", "vip", "subscriber")


@dataclass
class Room:
    """Everything the fake's chat keeps, for all channels."""

    moderators: dict[str, set[str]] = field(default_factory=dict)  # channel → user ids
    sent: list[dict[str, Any]] = field(default_factory=list)  # every accepted message
    drops: deque[tuple[str, str]] = field(default_factory=deque)  # next sends dropped
    recent: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    last_text: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)

    def elevated(self, channel: str, user_id: str) -> bool:
        return user_id == channel or user_id in self.moderators.get(channel, set())


_ROOMS: weakref.WeakKeyDictionary[State, Room] = weakref.WeakKeyDictionary()


def room(state: State) -> Room:
    """The chat of one fake Twitch (made on first use)."""
    if state not in _ROOMS:
        _ROOMS[state] = Room()
    return _ROOMS[state]


def chat_event(
    state: State, channel: str, user_id: str, text: str, badges: list[str], **names: str
) -> dict[str, Any]:
    """A channel.chat.message event as Twitch sends it."""
    owner, user = state.user_or_stub(channel), state.user_or_stub(user_id)
    return {
        "broadcaster_user_id": channel,
        "broadcaster_user_login": owner["login"],
        "broadcaster_user_name": owner["display_name"],
        "chatter_user_id": user_id,
        "chatter_user_login": names.get("user_login") or user["login"],
        "chatter_user_name": names.get("user_name") or user["display_name"],
        "message_id": new_id(),
        "message": {"text": text, "fragments": [{"type": "text", "text": text}]},
        "color": "",
        "badges": [{"set_id": b, "id": "1", "info": ""} for b in badges],
        "message_type": "text",
        "cheer": None,
        "reply": None,
        "channel_points_custom_reward_id": None,
    }


def _require(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"Missing required parameter: {key}")
    return value


def _may_send(state: State, token: Token, sender: str, channel: str) -> None:
    if token.user_id:  # a user token: the sender speaks for itself
        if "user:write:chat" not in token.scopes:
            raise ApiError(401, "Missing scope: user:write:chat")
        if sender != token.user_id:
            raise ApiError(401, "The sender_id must match the user ID in the access token")
        return
    grants = [t for t in state.tokens.values() if t.client_id == token.client_id and t.valid()]

    def granted(user_id: str, scope: str) -> bool:
        return any(t.user_id == user_id and scope in t.scopes for t in grants)

    if not granted(sender, "user:bot") or not granted(sender, "user:write:chat"):
        raise ApiError(401, "The sender has not authorized this app with user:bot")
    if not (granted(channel, "channel:bot") or room(state).elevated(channel, sender)):
        raise ApiError(
            403, "The sender is not permitted to send chat messages to the broadcaster's chat room"
        )


def _rate_limited(chat: Room, channel: str, sender: str) -> bool:
    now, key = time.monotonic(), (channel, sender)
    times = chat.recent.setdefault(key, deque())
    while times and now - times[0] >= WINDOW_S:
        times.popleft()
    limit = LIMIT_ELEVATED if chat.elevated(channel, sender) else LIMIT_NORMAL
    if len(times) >= limit:
        return True
    times.append(now)
    return False


def _dropped(chat: Room, channel: str, sender: str, text: str) -> tuple[str, str] | None:
    if chat.drops:
        return chat.drops.popleft()
    now, last = time.monotonic(), chat.last_text.get((channel, sender))
    if last and last[0] == text and now - last[1] < WINDOW_S and not chat.elevated(channel, sender):
        return (
            "msg_duplicate",
            "Your message was not sent because it is identical to the previous one.",
        )
    chat.last_text[(channel, sender)] = (text, now)
    return None


async def post_message(request: web.Request) -> web.Response:
    """POST /helix/chat/messages."""
    state, token = authenticate(request)
    body = await json_body(request)
    channel, sender = _require(body, "broadcaster_id"), _require(body, "sender_id")
    text = _require(body, "message")
    _may_send(state, token, sender, channel)
    if len(text) > MAX_LENGTH:
        raise ApiError(422, "The message is too long: at most 500 characters")
    chat = room(state)
    if _rate_limited(chat, channel, sender):
        raise ApiError(429, "Too many chat messages: slow down")
    message_id = new_id()
    drop = _dropped(chat, channel, sender, text)
    if drop is not None:
        reason = {"code": drop[0], "message": drop[1]}
        return web.json_response(
            {"data": [{"message_id": "", "is_sent": False, "drop_reason": reason}]}
        )
    badges = ["broadcaster"] if sender == channel else []
    badges += ["moderator"] if sender in chat.moderators.get(channel, set()) else []
    event = chat_event(state, channel, sender, text, badges)
    event["message_id"] = message_id
    chat.sent.append(
        {"broadcaster_id": channel, "sender_id": sender, "message": text, "at": time.time()}
    )
    await delivery.deliver(
        state, [{"subscription_type": "channel.chat.message", "event": event}], reflect=False
    )
    return web.json_response(
        {"data": [{"message_id": message_id, "is_sent": True, "drop_reason": None}]}
    )


async def inject(request: web.Request) -> web.Response:
    """POST /_fake/chat: a viewer says {"text"} in {"broadcaster_user_id"} (default 1000), as
    {"user_id", "user_login", "user_name"}, with {"badges"} among broadcaster, moderator, vip,
    subscriber."""
    state, body = request.config_dict[STATE_KEY], await json_body(request)
    text = body.get("text")
    badges = body.get("badges", [])
    if not isinstance(text, str) or not text:
        raise ApiError(400, "text must be a non-empty string")
    if not isinstance(badges, list) or any(b not in BADGES for b in badges):
        raise ApiError(400, f"badges must be a list of {', '.join(BADGES)}")
    channel = str(body.get("broadcaster_user_id", "1000"))
    user_id = str(body.get("user_id", "5001"))
    names = {k: str(body[k]) for k in ("user_login", "user_name") if body.get(k)}
    event = chat_event(state, channel, user_id, text, badges, **names)
    outcome = await delivery.deliver(
        state, [{"subscription_type": "channel.chat.message", "event": event}], reflect=False
    )
    return web.json_response({"delivered": outcome.delivered, "message_id": event["message_id"]})


async def drop_next(request: web.Request) -> web.Response:
    """POST /_fake/chat/drop: the next {"count"} sends answer is_sent false with {"code"}."""
    state, body = request.config_dict[STATE_KEY], await json_body(request)
    chat = room(state)
    code = str(body.get("code", "msg_rejected"))
    message = str(
        body.get("message", "Your message is being checked by mods and has not been sent.")
    )
    chat.drops.extend([(code, message)] * max(1, int(body.get("count", 1))))
    return web.json_response({"pending": len(chat.drops)})


async def moderators(request: web.Request) -> web.Response:
    """POST /_fake/chat/moderators: {"broadcaster_user_id", "user_ids"} are its moderators."""
    state, body = request.config_dict[STATE_KEY], await json_body(request)
    channel = str(body.get("broadcaster_user_id", "1000"))
    room(state).moderators[channel] = {str(u) for u in body.get("user_ids", [])}
    return web.json_response({"moderators": sorted(room(state).moderators[channel])})


async def sent(request: web.Request) -> web.Response:
    """GET /_fake/chat/sent: every message the chat accepted, oldest first."""
    return web.json_response({"sent": room(request.config_dict[STATE_KEY]).sent})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/helix/chat/messages", post_message)
    app.router.add_post("/_fake/chat", inject)
    app.router.add_post("/_fake/chat/drop", drop_next)
    app.router.add_post("/_fake/chat/moderators", moderators)
    app.router.add_get("/_fake/chat/sent", sent)
