"""Who is calling Helix (token, client id, scope) and how lists are paged."""

from __future__ import annotations

import base64
import json
from typing import Sequence, TypeVar

from aiohttp import web

from .catalog import scope_granted
from .keys import STATE_KEY
from .replies import ApiError, int_param, require
from .state import State, Token

_UNAUTHORIZED = {"WWW-Authenticate": 'OAuth realm="TwitchTV", error="invalid_token"'}

T = TypeVar("T")


def authenticate(request: web.Request, scope: str | None = None) -> tuple[State, Token]:
    """The state and the caller's valid token, or the 401 Twitch would answer."""
    state = request.config_dict[STATE_KEY]
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "OAuth token is missing", _UNAUTHORIZED)
    token = state.valid_token(value.strip())
    if token is None:
        raise ApiError(401, "Invalid OAuth token", _UNAUTHORIZED)
    client_id = request.headers.get("Client-Id")
    if not client_id:
        raise ApiError(401, "Client ID is missing")
    if client_id != token.client_id:
        raise ApiError(401, "Client ID and OAuth token do not match")
    if scope is not None and not scope_granted(scope, token.scopes):
        raise ApiError(401, f"Missing scope: {scope}")
    return state, token


def own_channel(request: web.Request, token: Token) -> str:
    """broadcaster_id, which must be the token's own user for private channel data."""
    broadcaster_id = require(request.query, "broadcaster_id")
    if broadcaster_id != token.user_id:
        raise ApiError(401, "The ID in broadcaster_id must match the user ID in the token")
    return broadcaster_id


def page(request: web.Request, items: Sequence[T]) -> tuple[Sequence[T], dict[str, str]]:
    """Slice items by `first` and the opaque `after` cursor; returns (page, pagination)."""
    first = int_param(request, "first", 20, 1, 100)
    offset = _decode_cursor(request.query.get("after"))
    chunk = items[offset : offset + first]
    if offset + first >= len(items):
        return chunk, {}
    raw = json.dumps({"o": offset + first}).encode()
    return chunk, {"cursor": base64.urlsafe_b64encode(raw).decode().rstrip("=")}


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return max(0, int(json.loads(base64.urlsafe_b64decode(padded))["o"]))
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "The cursor is not valid") from None
