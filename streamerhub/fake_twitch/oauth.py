"""/oauth2: authorization code, device code, rotating refresh, validate and revoke."""

from __future__ import annotations

import secrets
import string
import time
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from .keys import STATE_KEY
from .replies import ApiError, form_params, require, split_scopes
from .state import DEFAULT_USER, State

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_LIFETIME = 1800


async def authorize(request: web.Request) -> web.StreamResponse:
    """GET /authorize: the user approves at once; redirect back with code (or token) and state."""
    state = request.config_dict[STATE_KEY]
    params = request.query
    client_id, redirect_uri = require(params, "client_id"), require(params, "redirect_uri")
    scopes = split_scopes(params.get("scope"))
    reply = {"scope": " ".join(scopes or []), "state": params.get("state", "")}
    if state.settings.authorize_outcome == "access_denied":
        denied = {
            "error": "access_denied",
            "error_description": "The user denied you access",
            "state": reply["state"],
        }
        raise web.HTTPFound(_with(redirect_uri, query=urlencode(denied)))
    user_id = state.settings.authorize_user or DEFAULT_USER["id"]
    if params.get("response_type", "code") == "token":
        token = state.issue_token(user_id, scopes, client_id)
        fragment = urlencode({"access_token": token.access_token, "token_type": "bearer", **reply})
        raise web.HTTPFound(_with(redirect_uri, fragment=fragment))
    code = secrets.token_hex(15)
    state.auth_codes[code] = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scopes": scopes,
        "user_id": user_id,
    }
    raise web.HTTPFound(_with(redirect_uri, query=urlencode({"code": code, **reply})))


def _with(url: str, query: str = "", fragment: str = "") -> str:
    parts = urlsplit(url)
    merged = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, merged, fragment))


async def token(request: web.Request) -> web.Response:
    """POST /token for every grant type the project uses."""
    state = request.config_dict[STATE_KEY]
    params = await form_params(request)
    grant_type = require(params, "grant_type")
    grants = {
        "authorization_code": _code_grant,
        "refresh_token": _refresh_grant,
        DEVICE_GRANT: _device_grant,
        "client_credentials": _client_grant,
    }
    if grant_type not in grants:
        raise ApiError(400, "Invalid grant type")
    return web.json_response(grants[grant_type](state, params))


def _check_secret(state: State, params: dict[str, Any]) -> None:
    """A confidential client authenticates with its secret; Twitch's own wording."""
    if state.settings.client_type != "confidential":
        return
    secret = params.get("client_secret") or ""
    if not secret:
        raise ApiError(400, "missing client secret")
    if state.settings.client_secret and secret != state.settings.client_secret:
        raise ApiError(403, "invalid client secret")


def _code_grant(state: State, params: dict[str, Any]) -> dict[str, Any]:
    if state.settings.client_type == "public":
        raise ApiError(400, "invalid client: public clients cannot use the authorization code flow")
    _check_secret(state, params)
    grant = state.auth_codes.pop(params.get("code", ""), None)
    if grant is None or grant["client_id"] != params.get("client_id"):
        raise ApiError(400, "Invalid authorization code")
    if params.get("redirect_uri") and params["redirect_uri"] != grant["redirect_uri"]:
        raise ApiError(400, "Parameter redirect_uri does not match registered URI")
    return state.issue_token(grant["user_id"], grant["scopes"], grant["client_id"]).grant_json()


def _refresh_grant(state: State, params: dict[str, Any]) -> dict[str, Any]:
    old = state.refresh_tokens.get(params.get("refresh_token", ""))
    if old is not None and params.get("client_id") not in (None, old.client_id):
        raise ApiError(400, "Invalid refresh token")
    _check_secret(state, params)
    fresh = state.refresh(params.get("refresh_token", ""))
    if fresh is None:
        raise ApiError(400, "Invalid refresh token")
    return fresh.grant_json()


def _device_grant(state: State, params: dict[str, Any]) -> dict[str, Any]:
    grant = state.device_codes.get(params.get("device_code", ""))
    if grant is None or grant["expires_at"] < time.time():
        raise ApiError(400, "invalid device code")
    outcome = state.settings.device_outcome
    if outcome != "approve":  # the user denied it, or let it expire
        del state.device_codes[params["device_code"]]
        raise ApiError(400, outcome)
    if not grant["approved"]:
        # Twitch answers "pending" until the user has entered the code; the fake's user
        # "enters" it right after the first poll (or when /activate is opened).
        grant["approved"] = True
        raise ApiError(400, "authorization_pending")
    del state.device_codes[params["device_code"]]
    return state.issue_token(grant["user_id"], grant["scopes"], grant["client_id"]).grant_json()


def _client_grant(state: State, params: dict[str, Any]) -> dict[str, Any]:
    # Twitch's client-credentials grant always takes the secret: only a confidential client has one.
    secret = params.get("client_secret") or ""
    if not secret:
        raise ApiError(400, "missing client secret")
    if state.settings.client_secret and secret != state.settings.client_secret:
        raise ApiError(403, "invalid client secret")
    return state.issue_app_token(require(params, "client_id")).grant_json()


async def device(request: web.Request) -> web.Response:
    """POST /device: start a device-code flow."""
    state = request.config_dict[STATE_KEY]
    params = await form_params(request)
    client_id = require(params, "client_id")
    user_code = "".join(secrets.choice(string.ascii_uppercase) for _ in range(8))
    device_code = secrets.token_urlsafe(30)
    state.device_codes[device_code] = {
        "client_id": client_id,
        "user_code": user_code,
        "user_id": DEFAULT_USER["id"],
        "scopes": split_scopes(params.get("scopes") or params.get("scope")),
        "expires_at": time.time() + DEVICE_LIFETIME,
        "approved": False,
    }
    base = f"{request.scheme}://{request.host}/oauth2/activate"
    return web.json_response(
        {
            "device_code": device_code,
            "expires_in": DEVICE_LIFETIME,
            "interval": state.settings.device_interval,
            "user_code": user_code,
            "verification_uri": f"{base}?public=true&device-code={user_code}",
        }
    )


async def activate(request: web.Request) -> web.Response:
    """GET /activate: the page a user would open; approves the named device code."""
    state = request.config_dict[STATE_KEY]
    user_code = request.query.get("device-code", "")
    for grant in state.device_codes.values():
        if grant["user_code"] == user_code:
            grant["approved"] = True
            return web.Response(text="Device connected. You can close this window.")
    return web.Response(status=404, text="Unknown code.")


async def validate(request: web.Request) -> web.Response:
    """GET /validate with `Authorization: OAuth <token>`."""
    state = request.config_dict[STATE_KEY]
    _, _, value = request.headers.get("Authorization", "").partition(" ")
    found = state.valid_token(value.strip())
    if found is None:
        raise ApiError(401, "invalid access token")
    answer = {
        "client_id": found.client_id,
        "scopes": list(found.scopes),
        "expires_in": found.expires_in(),
    }
    if found.user_id:
        user = state.user_or_stub(found.user_id)
        answer.update(login=user["login"], user_id=found.user_id)
    return web.json_response(answer)


async def revoke(request: web.Request) -> web.Response:
    """POST /revoke: kills the access token and its refresh token."""
    state = request.config_dict[STATE_KEY]
    params = await form_params(request)
    found = state.tokens.get(params.get("token", ""))
    if found is None or found.revoked:
        raise ApiError(400, "Invalid token")
    if params.get("client_id") != found.client_id:
        raise ApiError(404, "client does not exist")
    state.revoke(found)
    return web.Response(status=200)


def add_routes(app: web.Application, prefix: str = "/oauth2") -> None:
    """Register every OAuth route under prefix."""
    app.router.add_get(f"{prefix}/authorize", authorize)
    app.router.add_post(f"{prefix}/token", token)
    app.router.add_post(f"{prefix}/device", device)
    app.router.add_get(f"{prefix}/activate", activate)
    app.router.add_get(f"{prefix}/validate", validate)
    app.router.add_post(f"{prefix}/revoke", revoke)
