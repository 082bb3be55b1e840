"""Twitch in the browser (authorization-code flow): signing in to the dashboard, and connecting a
channel for the bot.

Twitch redirects back from another site, and a SameSite=Strict cookie is not sent on that
navigation; so /auth/twitch/callback is only a bounce page whose meta refresh (a same-site
navigation) reaches /auth/twitch/finish, where the session — and the state nonce in it — is back.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any
from urllib.parse import urlencode

import aiohttp
import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session

from streamerhub.errors import StreamerHubError
from streamerhub.log import get_logger, register_secret
from streamerhub.web.auth import (
    current,
    flash,
    forget_setup_token,
    require,
    setup_token_matches,
    sign_in,
)
from streamerhub.web.context import services
from streamerhub.web.security import public_url
from streamerhub.web.users import User, UserError, UserStore

log = get_logger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=20, sock_connect=10)
PURPOSES = ("signin", "setup", "connect")


class TwitchLoginError(StreamerHubError):
    """The Twitch round trip failed; the message is shown on the page."""


def redirect_uri(request: web.Request) -> str:
    base = public_url(services(request).settings) or f"{request.scheme}://{request.host}"
    return f"{base}/auth/twitch/callback"


def _auth_url(request: web.Request) -> str:
    return services(request).settings.get("twitch", "auth_url").rstrip("/")


async def start(request: web.Request) -> web.StreamResponse:
    """GET /auth/twitch?purpose=signin|setup|connect: off to Twitch with a fresh state nonce."""
    svc = services(request)
    purpose = request.query.get("purpose", "signin")
    client_id = svc.settings.get("twitch", "client_id")
    if purpose not in PURPOSES:
        raise web.HTTPBadRequest(text="Unknown Twitch sign-in purpose.")
    if not client_id:
        raise web.HTTPBadRequest(text="Twitch sign-in needs [twitch] client_id (and "
                                      "client_secret) in config.toml: see the README.")
    scopes: tuple[str, ...] = ()
    if purpose == "connect":
        who = current(request)
        if who is None or not who.user.is_owner:
            raise web.HTTPForbidden(text="Only the owner can connect a Twitch channel.")
        if svc.channel_link is None:
            raise web.HTTPServiceUnavailable(text="Connecting channels is not available in this "
                                                  "daemon (the Twitch bot is not running).")
        scopes = svc.channel_link.scopes
    state = secrets.token_urlsafe(24)
    session = await get_session(request)
    session["oauth"] = {"state": state, "purpose": purpose,
                        "setup": request.query.get("token", "") if purpose == "setup" else ""}
    query = {"client_id": client_id, "redirect_uri": redirect_uri(request),
             "response_type": "code", "scope": " ".join(scopes), "state": state}
    if purpose == "connect":
        query["force_verify"] = "true"  # let the owner pick which account to connect
    raise web.HTTPFound(f"{_auth_url(request)}/authorize?{urlencode(query)}")


async def callback(request: web.Request) -> web.StreamResponse:
    """GET /auth/twitch/callback: bounce to /finish as a same-site navigation (see module doc)."""
    target = "/auth/twitch/finish?" + urlencode({k: v for k, v in request.query.items()
                                                 if k in ("code", "state", "error",
                                                          "error_description")})
    return aiohttp_jinja2.render_template("bounce.html", request, {"target": target})


async def finish(request: web.Request) -> web.StreamResponse:
    """GET /auth/twitch/finish: check the state, swap the code for a token, act on it."""
    session = await get_session(request)
    pending = session.pop("oauth", None)
    query = request.query
    if not pending or not secrets.compare_digest(str(pending.get("state")),
                                                 query.get("state", "")):
        return await _failed(request, None, "This Twitch sign-in was not started here (or was "
                                            "already used). Start again.")
    purpose = pending["purpose"]
    if query.get("error"):
        return await _failed(request, purpose, "Twitch did not authorise StreamerHub: "
                                               f"{query.get('error_description') or query['error']}.")
    try:
        grant = await exchange_code(request, query.get("code", ""))
        identity = await validate(request, grant["access_token"])
        if purpose == "connect":
            return await _connect(request, grant, identity)
        user = await _user_for(request, purpose, pending.get("setup", ""), identity)
        await revoke(request, grant["access_token"])  # signing in needs no token afterwards
    except (TwitchLoginError, UserError) as exc:
        return await _failed(request, purpose, str(exc))
    await sign_in(request, user, "twitch")
    return aiohttp_jinja2.render_template("bounce.html", request, {"target": "/"})


async def _failed(request: web.Request, purpose: str | None, message: str) -> web.StreamResponse:
    log.warning("twitch_login_failed", purpose=purpose, reason=message)
    if purpose == "connect":
        await flash(request, message, "error")
        raise web.HTTPSeeOther("/settings")
    return aiohttp_jinja2.render_template("login.html", request, {
        "error": message, "login": "", "next": "/", "needs_setup": False,
        "twitch": True}, status=400)


async def _user_for(request: web.Request, purpose: str, token: str,
                    identity: dict[str, Any]) -> User:
    """The dashboard user this Twitch account signs in as, creating it when allowed."""
    svc = services(request)
    store = UserStore(svc.db)
    login = str(identity.get("login") or "").lower()
    if purpose == "setup":
        if await store.owner_exists() or not setup_token_matches(svc.settings.data_dir, token):
            raise TwitchLoginError("The setup link was already used: sign in instead.")
        user = await store.create(login, "owner", twitch_login=login)
        forget_setup_token(svc.settings.data_dir)
        return user
    existing = await store.by_twitch_login(login)
    if existing:
        return existing
    role = await allowed_role(svc, login)
    if role is None:
        raise TwitchLoginError(f"The Twitch account {login!r} is not allowed to sign in here. "
                               "The owner can add it on the Settings page.")
    name = login if await store.by_login(login) is None else f"{login}-twitch"
    return await store.create(name, role, twitch_login=login)


async def allowed_role(svc: Any, login: str) -> str | None:
    """Owner for a connected channel's own login, viewer for [web] twitch_logins, else None."""
    async with svc.db.pool.acquire() as conn:
        own = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM twitch_channels "
                                  "WHERE lower(login) = $1)", login)
    if own:
        return "owner"
    allowed = {name.strip().lower() for name in svc.settings.get("web", "twitch_logins")}
    return "viewer" if login in allowed else None


async def _connect(request: web.Request, grant: dict[str, Any],
                   identity: dict[str, Any]) -> web.StreamResponse:
    svc = services(request)
    who = current(request)
    if who is None or not who.user.is_owner or svc.channel_link is None:
        raise TwitchLoginError("Only the signed-in owner can connect a channel.")
    info = await svc.channel_link.connect({**grant, "validated": identity})
    log.info("twitch_channel_connected_web", channel_id=info["channel_id"], login=info["login"])
    await flash(request, f"Connected the Twitch channel {info['display_name']}. Events start "
                         "arriving within a minute.")
    raise web.HTTPSeeOther("/settings")


# ----------------------------------------------------------------------------- OAuth calls

async def _call(method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            async with http.request(method, url, **kwargs) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {}
                return resp.status, body if isinstance(body, dict) else {}
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise TwitchLoginError(f"Twitch could not be reached ({type(exc).__name__}). Check the "
                               "network and try again.") from None


async def exchange_code(request: web.Request, code: str) -> dict[str, Any]:
    settings = services(request).settings
    status, body = await _call("POST", f"{_auth_url(request)}/token", data={
        "client_id": settings.get("twitch", "client_id"),
        "client_secret": settings.get("twitch", "client_secret"),
        "code": code, "grant_type": "authorization_code", "redirect_uri": redirect_uri(request)})
    if status != 200 or not body.get("access_token"):
        raise TwitchLoginError(f"Twitch refused the sign-in code ({status}: "
                               f"{body.get('message', 'no reason given')}). Check [twitch] "
                               "client_id / client_secret and the redirect URL registered with "
                               "Twitch, then try again.")
    register_secret(body["access_token"])
    register_secret(body.get("refresh_token"))
    return body


async def validate(request: web.Request, access_token: str) -> dict[str, Any]:
    status, body = await _call("GET", f"{_auth_url(request)}/validate",
                               headers={"Authorization": f"OAuth {access_token}"})
    if status != 200 or not body.get("login"):
        raise TwitchLoginError("Twitch issued a token it does not validate: try again.")
    return body


async def revoke(request: web.Request, access_token: str) -> None:
    settings = services(request).settings
    try:
        await _call("POST", f"{_auth_url(request)}/revoke", data={
            "client_id": settings.get("twitch", "client_id"), "token": access_token})
    except TwitchLoginError as exc:  # the token expires on its own; signing in goes on
        log.warning("twitch_revoke_failed", error=str(exc))


@require("owner")
async def disconnect(request: web.Request) -> web.StreamResponse:
    """POST /settings/channels/{id}/disconnect."""
    svc = services(request)
    channel_id = request.match_info["channel_id"]
    if svc.channel_link is None:
        raise web.HTTPServiceUnavailable(text="The Twitch bot is not running in this daemon.")
    await svc.channel_link.disconnect(channel_id)
    await flash(request, "Channel disconnected. Its history stays; connect it again any time.")
    raise web.HTTPSeeOther("/settings")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/auth/twitch", start)
    app.router.add_get("/auth/twitch/callback", callback)
    app.router.add_get("/auth/twitch/finish", finish)
    app.router.add_post("/settings/channels/{channel_id}/disconnect", disconnect)
