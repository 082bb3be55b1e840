"""Signing in and out: the one-time setup link, password login (slowed down after failures),
logout. Twitch sign-in lives in twitch_oauth.py."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web

from streamerhub.errors import InvalidInput
from streamerhub.log import get_logger
from streamerhub.web import preferences
from streamerhub.web.auth import (
    current,
    forget_setup_token,
    setup_token_matches,
    sign_in,
    sign_out,
)
from streamerhub.web.context import services
from streamerhub.web.preferences import clock_choices, use_clock
from streamerhub.web.security import LoginThrottle, client_address, public_url
from streamerhub.web.twitch_oauth import redirect_uri
from streamerhub.web.users import (
    LOGIN_RE,
    UserError,
    UserStore,
    check_login,
    check_password,
    verify_password,
)

log = get_logger(__name__)

THROTTLE = web.AppKey("web_login_throttle", LoginThrottle)


def safe_next(value: str | None) -> str:
    """Only a path on this site: never an open redirect to another host."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return "/" if parts.scheme or parts.netloc else value


def _twitch_ready(request: web.Request) -> bool:
    return bool(services(request).twitch_client_id())


# ----------------------------------------------------------------------------- setup


async def setup_page(request: web.Request) -> web.StreamResponse:
    """GET /setup/{token}: the first-start page where the owner chooses a password."""
    return await _setup_form(request, error=None, status=200)


async def _setup_form(
    request: web.Request, error: str | None, status: int, login: str = "owner"
) -> web.StreamResponse:
    token = request.match_info["token"]
    store = UserStore(services(request).db)
    if await store.owner_exists():
        return aiohttp_jinja2.render_template("setup_done.html", request, {}, status=410)
    if not setup_token_matches(services(request).settings.data_dir, token):
        raise web.HTTPNotFound(
            text="This setup link is not valid. Use the link StreamerHub "
            "printed when it started (also in the data dir's "
            "setup-token file)."
        )
    return aiohttp_jinja2.render_template(
        "setup.html",
        request,
        {
            "token": token,
            "error": error,
            "login": login,
            "twitch": _twitch_ready(request),
            "redirect_uri": redirect_uri(request),
            **clock_choices(request, guess=True),
        },
        status=status,
    )


async def setup_submit(request: web.Request) -> web.StreamResponse:
    """POST /setup/{token}: create the owner, use up the link, sign in."""
    form = await request.post()
    svc = services(request)
    token = request.match_info["token"]
    login = str(form.get("login", ""))
    if await UserStore(svc.db).owner_exists() or not setup_token_matches(
        svc.settings.data_dir, token
    ):
        return await _setup_form(request, None, 200)
    try:
        check_login(login)
        password = check_password(str(form.get("password", "")), str(form.get("confirm", "")))
        # A form without the zone (a script, an older page) keeps config.toml's clock.
        clock = (
            preferences.parse({k: str(v) for k, v in form.items()}) if "timezone" in form else None
        )
        user = await UserStore(svc.db).create(login, "owner", password)
    except (UserError, InvalidInput) as exc:
        return await _setup_form(request, str(exc), 400, login)
    if clock is not None:
        await use_clock(request, clock)
    forget_setup_token(svc.settings.data_dir)
    log.info("web_owner_created", login=user.login)
    await sign_in(request, user, "setup")
    raise web.HTTPSeeOther("/")


# ----------------------------------------------------------------------------- login


async def login_page(request: web.Request) -> web.StreamResponse:
    if current(request):
        raise web.HTTPSeeOther(safe_next(request.query.get("next")))
    needs_setup = not await UserStore(services(request).db).owner_exists()
    return aiohttp_jinja2.render_template(
        "login.html",
        request,
        {
            # Never text from the query string: a crafted link must not put words on our page.
            "error": None,
            "login": "",
            "next": safe_next(request.query.get("next")),
            "needs_setup": needs_setup,
            "twitch": _twitch_ready(request),
        },
    )


async def login_submit(request: web.Request) -> web.StreamResponse:
    """POST /login: check the password; each failure slows the next attempts for this client
    and this login (3 free, then 1, 2, 4 … s, up to 30 s), attempts queued one at a time."""
    form = await request.post()
    login = str(form.get("login", "")).strip().lower()
    password = str(form.get("password", ""))
    next_url = safe_next(str(form.get("next", "/")))
    svc = services(request)
    throttle = request.app[THROTTLE]
    client = client_address(request, behind_proxy=public_url(svc.settings) is not None)
    # A login that no account can have (NUL, surrogates, 10 kB) is a wrong login, not a 500:
    # it still costs one hash and one throttled attempt, like any unknown name.
    name = login if LOGIN_RE.fullmatch(login) else ""
    async with throttle.attempt(client, name) as wait:
        found = await UserStore(svc.db).by_login(name) if name else None
        if await verify_password(found[1] if found else None, password):
            throttle.succeeded(client, name)
        else:
            throttle.failed(client, name)
            found = None
    if found is None:
        log.warning("web_login_failed", login=name or "(invalid)", remote=client, delay_s=wait)
        return aiohttp_jinja2.render_template(
            "login.html",
            request,
            {
                "error": "Wrong login or password.",
                "login": name,
                "next": next_url,
                "needs_setup": False,
                "twitch": _twitch_ready(request),
            },
            status=401,
        )
    await sign_in(request, found[0], "password")
    raise web.HTTPSeeOther(next_url)


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /logout: end the session server-side and drop the cookie."""
    who = current(request)
    await sign_out(request)
    if who:
        log.info("web_signed_out", login=who.user.login)
    raise web.HTTPSeeOther("/login")


def add_routes(app: web.Application) -> None:
    app[THROTTLE] = LoginThrottle()
    app.router.add_get("/setup/{token}", setup_page, name="setup")
    app.router.add_post("/setup/{token}", setup_submit)
    app.router.add_get("/login", login_page, name="login")
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
