"""The Chat bot page (owner only) and its JSON API under /api/v1/chatbot.

The page is server-rendered with plain forms (no script needed); the API is the same
configuration for scripts and for moving commands from another bot (export / import).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import aiohttp_jinja2
from aiohttp import web

from streamerhub.chatbot.rules import (
    BUILT_INS,
    EVENT_KINDS,
    PERMISSIONS,
    parse_command,
    parse_config,
    parse_event,
    parse_timer,
)
from streamerhub.chatbot.service import ChatBot
from streamerhub.errors import InvalidInput, NotFound, StreamerHubError
from streamerhub.web.api import _body
from streamerhub.web.auth import current, flash, require
from streamerhub.web.channel_picker import channels

CHATBOT = web.AppKey("chatbot", ChatBot)
LOG_SHOWN = 50


def _path(request: web.Request, key: str) -> str:
    """A path parameter as text PostgreSQL can hold (no NUL): else there is no such thing."""
    value = request.match_info[key]
    if "\x00" in value or len(value) > 200:
        raise NotFound(f"no such {key}")
    return value


def _bot(request: web.Request) -> ChatBot:
    bot = request.config_dict.get(CHATBOT)
    if bot is None:
        raise web.HTTPServiceUnavailable(text="the chat bot is not running in this daemon")
    return bot


# ----------------------------------------------------------------------------- the API


async def overview(request: web.Request) -> web.Response:
    """GET /chatbot: status, the whole configuration and the newest log entries."""
    bot = _bot(request)
    config = await bot.store.export()
    log = await bot.store.log(LOG_SHOWN)
    return web.json_response(
        {
            "status": bot.status(),
            "account": await _account_json(bot),
            "enabled_channels": sorted(bot.enabled),
            **config.to_json(),
            "log": [e.to_json() for e in log],
        }
    )


async def _account_json(bot: ChatBot) -> dict[str, Any]:
    """Who speaks where (the bot account, or each channel's own), and what is missing."""
    view = await bot.account.describe() if bot.account is not None else None
    speakers = bot.speakers
    channels = sorted(bot.enabled)
    return {
        "bot_account": None
        if view is None or view.login is None
        else {"login": view.login, "status": view.status, "reason": view.reason},
        "speakers": [
            {"channel_id": c, "login": sp.login, "how": sp.how, "missing": list(sp.missing)}
            for c in channels
            if speakers is not None
            for sp in [speakers.speaker(c)]
        ],
    }


async def list_commands(request: web.Request) -> web.Response:
    return web.json_response([c.to_json() for c in await _bot(request).store.commands()])


async def create_command(request: web.Request) -> web.Response:
    bot = _bot(request)
    command = await bot.store.save_command(parse_command(await _body(request)))
    await bot.reload()
    return web.json_response(command.to_json(), status=201)


async def replace_command(request: web.Request) -> web.Response:
    bot = _bot(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise InvalidInput("command: expected a JSON object")
    command = parse_command({**body, "name": _path(request, "name")})
    saved = await bot.store.save_command(command, replace=True)
    await bot.reload()
    return web.json_response(saved.to_json())


async def delete_command(request: web.Request) -> web.Response:
    bot = _bot(request)
    name = _path(request, "name").lower().lstrip("!")
    await bot.store.delete_command(name)
    await bot.reload()
    return web.json_response({"deleted": name})


async def list_timers(request: web.Request) -> web.Response:
    return web.json_response([t.to_json() for t in await _bot(request).store.timers()])


async def save_timer(request: web.Request) -> web.Response:
    bot = _bot(request)
    timer = await bot.store.save_timer(parse_timer(await _body(request)))
    await bot.reload()
    return web.json_response(timer.to_json())


async def delete_timer(request: web.Request) -> web.Response:
    bot = _bot(request)
    name = _path(request, "name")
    await bot.store.delete_timer(name)
    await bot.reload()
    return web.json_response({"deleted": name})


async def list_events(request: web.Request) -> web.Response:
    return web.json_response([e.to_json() for e in await _bot(request).store.event_messages()])


async def save_event(request: web.Request) -> web.Response:
    bot = _bot(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise InvalidInput("event message: expected a JSON object")
    message = parse_event({**body, "kind": _path(request, "kind")})
    await bot.store.save_event_message(message)
    await bot.reload()
    return web.json_response(message.to_json())


async def set_channel(request: web.Request) -> web.Response:
    """PUT /chatbot/channels/{channel_id} {"enabled": bool}: the bot on or off in a channel."""
    bot = _bot(request)
    body = await _body(request)
    enabled = body.get("enabled") if isinstance(body, dict) else None
    if not isinstance(enabled, bool):
        raise InvalidInput("enabled must be true or false")
    channel_id = _path(request, "channel_id")
    if not channel_id.isdigit():
        raise NotFound(f"no channel {channel_id!r}: Twitch channel ids are digits")
    await bot.store.set_enabled(channel_id, enabled)
    await bot.reload()
    return web.json_response({"channel_id": channel_id, "enabled": enabled})


async def get_log(request: web.Request) -> web.Response:
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "100"))))
    except ValueError:
        raise InvalidInput("limit must be a whole number") from None
    entries = await _bot(request).store.log(limit)
    return web.json_response([e.to_json() for e in entries])


async def export_config(request: web.Request) -> web.Response:
    config = await _bot(request).store.export()
    return web.json_response(
        config.to_json(),
        headers={"Content-Disposition": 'attachment; filename="streamerhub-chatbot.json"'},
    )


async def import_config(request: web.Request) -> web.Response:
    """POST /chatbot/import: add or replace what the JSON names; all checked before any is saved."""
    bot = _bot(request)
    config = parse_config(await _body(request))
    counts = await bot.store.import_config(config)
    await bot.reload()
    return web.json_response({"imported": counts})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/chatbot", overview),
    ("GET", "/chatbot/commands", list_commands),
    ("POST", "/chatbot/commands", create_command),
    ("PUT", "/chatbot/commands/{name}", replace_command),
    ("DELETE", "/chatbot/commands/{name}", delete_command),
    ("GET", "/chatbot/timers", list_timers),
    ("POST", "/chatbot/timers", save_timer),
    ("DELETE", "/chatbot/timers/{name}", delete_timer),
    ("GET", "/chatbot/events", list_events),
    ("PUT", "/chatbot/events/{kind}", save_event),
    ("PUT", "/chatbot/channels/{channel_id}", set_channel),
    ("GET", "/chatbot/log", get_log),
    ("GET", "/chatbot/export", export_config),
    ("POST", "/chatbot/import", import_config),
)


# ----------------------------------------------------------------------------- the page


async def _page(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.StreamResponse:
    bot = request.config_dict.get(CHATBOT)
    context: dict[str, Any] = {
        "running": bot is not None,
        "error": error,
        "permissions": PERMISSIONS,
        "built_ins": BUILT_INS,
        "kinds": EVENT_KINDS,
        "channels": await channels(request),
    }
    who = current(request)
    context["owner"] = who is not None and who.user.is_owner
    if bot is not None:
        speakers = bot.speakers
        context.update(
            account=await bot.account.describe() if bot.account is not None else None,
            speakers=[speakers.speaker(c["channel_id"]) for c in context["channels"]]
            if speakers is not None
            else [],
            status=bot.status(),
            enabled=bot.enabled,
            commands=await bot.store.commands(),
            timers=await bot.store.timers(),
            events=await bot.store.event_messages(),
            log=await bot.store.log(LOG_SHOWN),
        )
    return aiohttp_jinja2.render_template("chatbot.html", request, context, status=status)


@require("viewer")
async def chatbot_page(request: web.Request) -> web.StreamResponse:
    """Everyone signed in may read it (moderators in the viewer role); only the owner changes."""
    return await _page(request)


async def connect_account(request: web.Request, code: str, redirect_uri: str) -> web.StreamResponse:
    """The end of the bot account's browser round trip (web/twitch_oauth.py, purpose "bot")."""
    who = current(request)
    bot = request.config_dict.get(CHATBOT)
    if who is None or not who.user.is_owner:
        raise InvalidInput("Only the signed-in owner can connect the bot account.")
    if bot is None or bot.account is None:
        raise InvalidInput("The chat bot is not running in this daemon.")
    login = await bot.account.connect(code, redirect_uri)
    await flash(request, f"The chat bot now speaks as {login} (Twitch shows its Chat Bot badge).")
    raise web.HTTPSeeOther("/chatbot")


@require("owner")
async def disconnect_account(request: web.Request) -> web.StreamResponse:
    """POST /chatbot/account/disconnect: back to speaking as each channel's own account."""
    bot = _bot(request)
    if bot.account is not None:
        await bot.account.disconnect()
    await flash(request, "Bot account disconnected: the bot speaks as each channel again.")
    raise web.HTTPSeeOther("/chatbot")


def _flag(form: Any, key: str) -> bool:
    return str(form.get(key, "")) in ("on", "true", "1")


def _number(form: Any, key: str, default: int) -> int:
    raw = str(form.get(key, "")).strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise InvalidInput(f"{key} must be a whole number, not {raw!r}") from None


async def _apply(request: web.Request, action: Callable[[ChatBot, Any], Awaitable[str]]) -> Any:
    """Run a form's action; on a mistake show the page again with the message."""
    bot = _bot(request)
    form = await request.post()
    try:
        if any("\x00" in str(v) for v in form.values()):
            raise InvalidInput("a field holds a NUL character: remove it")
        done = await action(bot, form)
    except StreamerHubError as exc:
        return await _page(request, str(exc), 400)
    await bot.reload()
    await flash(request, done)
    raise web.HTTPSeeOther("/chatbot")


async def _save_command(bot: ChatBot, form: Any) -> str:
    body = {
        "name": str(form.get("name", "")),
        "response": str(form.get("response", "")),
        "permission": str(form.get("permission", "everyone")),
        "cooldown_s": _number(form, "cooldown_s", 5),
        "user_cooldown_s": _number(form, "user_cooldown_s", 15),
        "aliases": [a for a in str(form.get("aliases", "")).replace(",", " ").split() if a],
        "enabled": _flag(form, "enabled"),
    }
    command = await bot.store.save_command(parse_command(body), replace=_flag(form, "replace"))
    return f"Saved !{command.name}."


async def _delete_command(bot: ChatBot, form: Any) -> str:
    name = str(form.get("name", ""))
    await bot.store.delete_command(name)
    return f"Deleted !{name}."


async def _save_timer(bot: ChatBot, form: Any) -> str:
    body = {
        "name": str(form.get("name", "")),
        "message": str(form.get("message", "")),
        "interval_min": _number(form, "interval_min", 15),
        "min_chat_messages": _number(form, "min_chat_messages", 5),
        "enabled": _flag(form, "enabled"),
    }
    timer = await bot.store.save_timer(parse_timer(body))
    return f"Saved timer {timer.name}."


async def _delete_timer(bot: ChatBot, form: Any) -> str:
    await bot.store.delete_timer(str(form.get("name", "")))
    return "Timer deleted."


async def _save_event(bot: ChatBot, form: Any) -> str:
    body = {
        "kind": str(form.get("kind", "")),
        "template": str(form.get("template", "")),
        "enabled": _flag(form, "enabled"),
        "minimum": _number(form, "minimum", 0),
        "per_minute": _number(form, "per_minute", 6),
    }
    message = await bot.store.save_event_message(parse_event(body))
    return f"Saved the {message.kind} message."


async def _set_channel(bot: ChatBot, form: Any) -> str:
    enabled, channel_id = _flag(form, "enabled"), str(form.get("channel_id", ""))
    if not channel_id.isdigit():
        raise InvalidInput("choose a channel")
    await bot.store.set_enabled(channel_id, enabled)
    return "The chat bot is on." if enabled else "The chat bot is off."


def _form(action: Callable[[ChatBot, Any], Awaitable[str]]) -> Handler:
    @require("owner")
    async def handler(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await _apply(request, action)
        return response

    return handler


def add_routes(app: web.Application) -> None:
    app.router.add_get("/chatbot", chatbot_page, name="chatbot")
    app.router.add_post("/chatbot/commands", _form(_save_command))
    app.router.add_post("/chatbot/commands/delete", _form(_delete_command))
    app.router.add_post("/chatbot/timers", _form(_save_timer))
    app.router.add_post("/chatbot/timers/delete", _form(_delete_timer))
    app.router.add_post("/chatbot/events", _form(_save_event))
    app.router.add_post("/chatbot/channels", _form(_set_channel))
    app.router.add_post("/chatbot/account/disconnect", disconnect_account)
