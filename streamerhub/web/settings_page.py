"""Settings: the Twitch application (Client ID and secret, entered here unless config.toml sets
them), Twitch channels (connect/disconnect, subscription health, gaps), dashboard users,
the owner's password, master-key and database facts, the API token's hint. Owners only."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from streamerhub.db import redact_url
from streamerhub.errors import InvalidInput, StreamerHubError
from streamerhub.web import preferences
from streamerhub.web.auth import current, flash, require
from streamerhub.web.backups_page import add_routes as add_backup_routes
from streamerhub.web.backups_page import backups_facts
from streamerhub.web.context import Services, services
from streamerhub.web.preferences import clock_choices, use_clock
from streamerhub.web.security import public_url
from streamerhub.web.twitch_oauth import redirect_uri
from streamerhub.web.users import UserError, UserStore, check_password, verify_password

GAPS_SHOWN = 10

# Server facts only: the tables' figures come from their owners (TwitchOverview, Database).
SERVER_FACTS = """
SELECT current_setting('server_version') AS version, pg_database_size(current_database()) AS size"""


async def _facts(request: web.Request) -> dict[str, Any]:
    svc = services(request)
    twitch = svc.twitch_overview
    async with svc.db.pool.acquire() as conn:
        server = await conn.fetchrow(SERVER_FACTS)
    database = {
        "version": server["version"],
        "size": server["size"],
        "events": await twitch.events_stored() if twitch else 0,
        "schema_version": max(await svc.db.applied_versions(), default=None),
    }
    if twitch is None:
        return {
            "channels": [],
            "channel_capture": {},
            "health": {},
            "problems": [],
            "gaps": [],
            "database": database,
        }
    return {
        "channels": await twitch.channels(),
        "channel_capture": twitch.capture(),
        "health": await twitch.subscription_health(),
        "problems": await twitch.subscription_problems(),
        "gaps": await twitch.recent_gaps(GAPS_SHOWN),
        "database": database,
    }


@require("owner")
async def settings_view(request: web.Request) -> web.StreamResponse:
    return await _settings_page(request)


async def _settings_page(
    request: web.Request,
    errors: dict[str, str] | None = None,
    status: int = 200,
    form: dict[str, str] | None = None,
) -> web.StreamResponse:
    """The page, with a form's errors (the handlers calling it checked the role already)."""
    svc = services(request)
    facts = await _facts(request)
    facts["database"].update(url=redact_url(svc.db.url), embedded=not svc.settings.database.url)
    return aiohttp_jinja2.render_template(
        "settings.html",
        request,
        {
            **facts,
            "errors": errors or {},
            "users": await UserStore(svc.db).list(),
            "can_connect": svc.channel_link is not None and bool(svc.twitch_client_id()),
            "twitch_app": _twitch_app(svc),
            "twitch_app_form_id": (form or {}).get("client_id", svc.twitch_client_id()),
            "bot_running": svc.channel_link is not None,
            "redirect_uri": redirect_uri(request),
            "public_url": public_url(svc.settings),
            "key": svc.extra.get("key_info", {}),
            "api_token_hint": svc.extra.get("api_token_hint"),
            "capture": svc.extra["capture_state"]() if "capture_state" in svc.extra else None,
            "data_dir": str(svc.settings.data_dir),
            "allowed_twitch": svc.settings.web.twitch_logins,
            "backup": backups_facts(request),
            **clock_choices(request),
        },
        status=status,
    )


@require("owner")
async def add_user(request: web.Request) -> web.StreamResponse:
    """POST /settings/users: a viewer (or another owner) with a password or a Twitch login."""
    form = await request.post()
    store = UserStore(services(request).db)
    password = str(form.get("password", ""))
    twitch = str(form.get("twitch_login", "")).strip().lstrip("@").lower() or None
    try:
        if not password and not twitch:
            raise UserError("Give a password, a Twitch login, or both.")
        await store.create(
            str(form.get("login", "")),
            str(form.get("role", "viewer")),
            check_password(password) if password else None,
            twitch,
        )
    except UserError as exc:
        return await _settings_page(request, {"users": str(exc)}, 400)
    await flash(request, f"Added {form.get('login')!s} ({form.get('role', 'viewer')!s}).")
    raise web.HTTPSeeOther("/settings#users")


@require("owner")
async def delete_user(request: web.Request) -> web.StreamResponse:
    store = UserStore(services(request).db)
    try:
        await store.delete(int(request.match_info["user_id"]))
    except UserError as exc:
        return await _settings_page(request, {"users": str(exc)}, 400)
    await flash(request, "User removed; their sessions ended.")
    raise web.HTTPSeeOther("/settings#users")


@require("owner")
async def change_password(request: web.Request) -> web.StreamResponse:
    """POST /settings/password: the signed-in owner's own password (all sessions end)."""
    form = await request.post()
    who = current(request)
    assert who is not None
    store = UserStore(services(request).db)
    found = await store.by_login(who.user.login)
    try:
        if found and found[1] and not await verify_password(found[1], str(form.get("current", ""))):
            raise UserError("The current password is wrong.")
        password = check_password(str(form.get("password", "")), str(form.get("confirm", "")))
    except UserError as exc:
        return await _settings_page(request, {"password": str(exc)}, 400)
    await store.set_password(who.user.id, password)
    await flash(request, "Password changed. Sign in again with the new one.")
    raise web.HTTPSeeOther("/login")


@require("owner")
async def change_clock(request: web.Request) -> web.StreamResponse:
    """POST /settings/clock: the time zone and day start, in effect at once."""
    form = await request.post()
    try:
        clock = preferences.parse({k: str(v) for k, v in form.items()})
    except InvalidInput as exc:
        return await _settings_page(request, {"clock": str(exc)}, 400)
    await use_clock(request, clock)
    await flash(
        request, f"Times now show in {clock.timezone}; days start at {clock.day_start_hour:02d}:00."
    )
    raise web.HTTPSeeOther("/settings#clock")


def _twitch_app(svc: Services) -> dict[str, Any]:
    """Which application credentials are in effect; never the secret, only whether it is set."""
    app = svc.twitch_app
    if app is None:
        twitch = svc.settings.twitch
        return {
            "source": "config",
            "client_id": twitch.client_id,
            "secret_set": bool(twitch.client_secret),
        }
    return {"source": app.source, "client_id": app.client_id, "secret_set": app.secret_set}


@require("owner")
async def save_twitch_app(request: web.Request) -> web.StreamResponse:
    """POST /settings/twitch-app: the Twitch application's Client ID and secret, checked with
    Twitch, stored sealed, used at once (the bot reloads; no restart)."""
    form = await request.post()
    svc = services(request)
    client_id = str(form.get("client_id", "")).strip()
    if svc.twitch_app is None:
        raise web.HTTPServiceUnavailable(text="The Twitch application cannot be set here.")
    try:
        await svc.twitch_app.save(client_id, str(form.get("client_secret", "")))
    except StreamerHubError as exc:
        return await _settings_page(
            request, {"twitch_app": str(exc)}, 400, {"client_id": client_id}
        )
    await flash(
        request,
        "Twitch accepted the application and StreamerHub uses it now. Next: Connect a Twitch "
        "channel.",
    )
    raise web.HTTPSeeOther("/settings#twitch")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/settings", settings_view, name="settings")
    app.router.add_post("/settings/users", add_user)
    app.router.add_post("/settings/users/{user_id:\\d+}/delete", delete_user)
    app.router.add_post("/settings/password", change_password)
    app.router.add_post("/settings/clock", change_clock)
    app.router.add_post("/settings/twitch-app", save_twitch_app)
    add_backup_routes(app)
