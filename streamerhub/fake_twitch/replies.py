"""Error answers in Twitch's two shapes (Helix and OAuth) and small request helpers."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web


class ApiError(Exception):
    """An error answer; Helix writes {error, status, message}, OAuth only {status, message}."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    def response(self, oauth: bool = False) -> web.Response:
        """The answer as Twitch would write it."""
        body: dict[str, Any] = {"status": self.status, "message": self.message}
        if not oauth:
            body = {"error": _phrase(self.status), **body}
        return web.json_response(body, status=self.status, headers=self.headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; an empty body is {}."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return body


async def form_params(request: web.Request) -> dict[str, str]:
    """Query string and form body merged, as Twitch's OAuth endpoints accept either."""
    params = dict(request.query)
    if request.can_read_body and request.content_type != "application/json":
        params.update({k: str(v) for k, v in (await request.post()).items()})
    elif request.can_read_body:
        params.update({k: str(v) for k, v in (await json_body(request)).items()})
    return params


def split_scopes(raw: str | None) -> list[str] | None:
    """Space- or plus-separated scopes; None when none were asked for (= every scope)."""
    scopes = [s for s in (raw or "").replace("+", " ").split() if s]
    return scopes or None


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high], else 400."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"The parameter {name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"The parameter {name} must be between {low} and {high}")
    return value


def require(params: Any, name: str) -> str:
    """A required parameter, else 400 in Twitch's words."""
    value = params.get(name)
    if not value:
        raise ApiError(400, f'Missing required parameter "{name}"')
    return str(value)
