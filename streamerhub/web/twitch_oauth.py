"""Twitch in the browser (authorization-code flow): signing in to the dashboard, and connecting a
channel for the bot.

Twitch redirects back from another site, and a SameSite=Strict cookie is not sent on that
navigation; so /auth/twitch/callback is only a bounce page whose meta refresh (a same-site
navigation) reaches /auth/twitch/finish, where the session — and the state nonce in it — is back.

The calls to Twitch's OAuth endpoints are not made here: `TwitchAuth` and `ChannelLink`
(web/context.py) make them with the bot's one OAuth client, wired by app.py.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session

from streamerhub.errors import StreamerHubError
from streamerhub.log import get_logger
from streamerhub.web.auth import (
    current,
    flash,
    forget_setup_token,
    require,
    setup_token_matches,
    sign_in,
)
from streamerhub.web.chatbot_page import CHATBOT, connect_account
from streamerhub.web.context import Services, TwitchAuth, TwitchIdentity, services
from streamerhub.web.security import public_url
from streamerhub.web.users import User, UserStore

log = get_logger(__name__)

PURPOSES = ("signin", "setup", "connect", "bot")  # bot: the chat bot's account (chatbot_page)


class TwitchLoginError(StreamerHubError):
    """The Twitch round trip failed; the message is shown on the page."""


def redirect_uri(request: web.Request) -> str:
    base: str = public_url(services(request).settings) or f"{request.scheme}://{request.host}"
    return f"{base}/auth/twitch/callback"


def _twitch_auth(request: web.Request) -> TwitchAuth:
    auth = services(request).twitch_auth
    if auth is None:
        raise web.HTTPServiceUnavailable(text="Twitch sign-in is not available in this daemon.")
    return auth


async def start(request: web.Request) -> web.StreamResponse:
    """GET /auth/twitch?purpose=signin|setup|connect: off to Twitch with a fresh state nonce."""
    svc = services(request)
    purpose = request.query.get("purpose", "signin")
    client_id = svc.twitch_client_id()
    if purpose not in PURPOSES:
        raise web.HTTPBadRequest(text="Unknown Twitch sign-in purpose.")
    if not client_id:
        raise web.HTTPBadRequest(
            text="Twitch sign-in needs the Twitch application: the owner enters its Client ID "
            "and secret on the Settings page (or [twitch] in config.toml: see the README)."
        )
    scopes: tuple[str, ...] = ()
    if purpose == "connect":
        who = current(request)
        if who is None or not who.user.is_owner:
            raise web.HTTPForbidden(text="Only the owner can connect a Twitch channel.")
        if svc.channel_link is None:
            raise web.HTTPServiceUnavailable(
                text="Connecting channels is not available in this "
                "daemon (the Twitch bot is not running)."
            )
        scopes = svc.channel_link.scopes
    if purpose == "bot":
        scopes = _bot_account_scopes(request)
    auth = _twitch_auth(request)
    state = secrets.token_urlsafe(24)
    session = await get_session(request)
    session["oauth"] = {
        "state": state,
        "purpose": purpose,
        "setup": request.query.get("token", "") if purpose == "setup" else "",
    }
    # force_verify on connect: let the owner pick which account to connect.
    raise web.HTTPFound(
        auth.authorize_url(
            redirect_uri(request), scopes, state, force_verify=purpose in ("connect", "bot")
        )
    )


def _bot_account_scopes(request: web.Request) -> tuple[str, ...]:
    who = current(request)
    if who is None or not who.user.is_owner:
        raise web.HTTPForbidden(text="Only the owner can connect the chat bot's account.")
    bot = request.config_dict.get(CHATBOT)
    if bot is None or bot.account is None:
        raise web.HTTPServiceUnavailable(text="The chat bot is not running in this daemon.")
    return bot.account.scopes


async def callback(request: web.Request) -> web.StreamResponse:
    """GET /auth/twitch/callback: bounce to /finish as a same-site navigation (see module doc)."""
    target = "/auth/twitch/finish?" + urlencode(
        {
            k: v
            for k, v in request.query.items()
            if k in ("code", "state", "error", "error_description")
        }
    )
    return aiohttp_jinja2.render_template("bounce.html", request, {"target": target})


async def finish(request: web.Request) -> web.StreamResponse:
    """GET /auth/twitch/finish: check the state, swap the code for a token, act on it."""
    session = await get_session(request)
    pending = session.pop("oauth", None)
    query = request.query
    if not pending or not secrets.compare_digest(str(pending.get("state")), query.get("state", "")):
        return await _failed(
            request,
            None,
            "This Twitch sign-in was not started here (or was already used). Start again.",
        )
    purpose = pending["purpose"]
    if query.get("error"):
        why = query.get("error_description") or query["error"]
        return await _failed(request, purpose, f"Twitch did not authorise StreamerHub: {why}.")
    try:
        if purpose == "connect":
            return await _connect(request, query.get("code", ""))
        if purpose == "bot":
            return await connect_account(request, query.get("code", ""), redirect_uri(request))
        auth = _twitch_auth(request)
        grant = await auth.exchange_code(query.get("code", ""), redirect_uri(request))
        identity = await auth.validate(grant.access_token)
        user = await _user_for(request, purpose, pending.get("setup", ""), identity)
        await auth.revoke(grant.access_token)  # signing in needs no token afterwards
    except StreamerHubError as exc:  # TwitchLoginError, UserError, the Twitch services' errors
        return await _failed(request, purpose, str(exc))
    await sign_in(request, user, "twitch")
    return aiohttp_jinja2.render_template("bounce.html", request, {"target": "/"})


async def _failed(request: web.Request, purpose: str | None, message: str) -> web.StreamResponse:
    log.warning("twitch_login_failed", purpose=purpose, reason=message)
    if purpose in ("connect", "bot"):
        await flash(request, message, "error")
        raise web.HTTPSeeOther("/settings" if purpose == "connect" else "/chatbot")
    return aiohttp_jinja2.render_template(
        "login.html",
        request,
        {"error": message, "login": "", "next": "/", "needs_setup": False, "twitch": True},
        status=400,
    )


async def _user_for(
    request: web.Request, purpose: str, token: str, identity: TwitchIdentity
) -> User:
    """The dashboard user this Twitch account signs in as, creating it when allowed.

    Matched by Twitch user id: a login name can be changed and then taken by someone else, who
    must not inherit the role that went with it. A user the owner added by login is bound to the
    id of the first account signing in under that name.
    """
    svc = services(request)
    store = UserStore(svc.db)
    login, twitch_id = identity.login.lower(), identity.user_id
    if purpose == "setup":
        if await store.owner_exists() or not setup_token_matches(svc.settings.data_dir, token):
            raise TwitchLoginError("The setup link was already used: sign in instead.")
        user = await store.create(login, "owner", twitch_login=login, twitch_user_id=twitch_id)
        forget_setup_token(svc.settings.data_dir)
        return user
    if existing := await store.by_twitch_id(twitch_id):
        return existing
    added = await store.by_twitch_login(login)
    if added is not None and added.twitch_user_id is None:
        return await store.bind_twitch(added, twitch_id, login)
    role = await allowed_role(svc, login, twitch_id)
    if role is None:
        raise TwitchLoginError(
            f"The Twitch account {login!r} is not allowed to sign in here. "
            "The owner can add it on the Settings page."
        )
    name = login if await store.by_login(login) is None else f"{login}-twitch"
    # The name may be held by an account that was renamed since: this one gets no login tie.
    tie = None if added is not None else login
    return await store.create(name, role, twitch_login=tie, twitch_user_id=twitch_id)


async def allowed_role(svc: Services, login: str, twitch_id: str) -> str | None:
    """Owner for a connected (or once connected) channel's own account, by id; viewer for
    [web] twitch_logins (names the owner typed); else None."""
    overview = svc.twitch_overview
    channels = await overview.channels() if overview is not None else []
    if any(c.channel_id == twitch_id for c in channels):
        return "owner"
    allowed = {name.strip().lower() for name in svc.settings.web.twitch_logins}
    return "viewer" if login in allowed else None


async def _connect(request: web.Request, code: str) -> web.StreamResponse:
    svc = services(request)
    who = current(request)
    if who is None or not who.user.is_owner or svc.channel_link is None:
        raise TwitchLoginError("Only the signed-in owner can connect a channel.")
    info = await svc.channel_link.connect(code, redirect_uri(request))
    log.info("twitch_channel_connected_web", channel_id=info.channel_id, login=info.login)
    await flash(
        request,
        f"Connected the Twitch channel {info.display_name}. Events start arriving within a minute.",
    )
    raise web.HTTPSeeOther("/settings")


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
