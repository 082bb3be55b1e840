"""Templates (aiohttp-jinja2) and error pages: every failure a user can cause ends on a page that
says what happened in words, never a stack trace or a blank page."""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from streamerhub import __version__
from streamerhub.db import is_connection_error
from streamerhub.errors import StreamerHubError
from streamerhub.log import get_logger, redact
from streamerhub.web.auth import csrf_token, current, take_flash, wants_json
from streamerhub.web.context import SERVICES

log = get_logger(__name__)

HERE = Path(__file__).parent
NAV = (
    ("overview", "/", "Overview", "viewer"),
    ("events", "/events", "Events", "viewer"),
    ("streams", "/streams", "Streams", "viewer"),
    ("multistream", "/multistream", "Multistream", "owner"),
    ("chatbot", "/chatbot", "Chat bot", "viewer"),  # moderators may read it; the owner edits
    ("settings", "/settings", "Settings", "owner"),
)
ERROR_TITLES = {
    400: "That did not work",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    413: "Too large",
    421: "Wrong address",
    429: "Slow down",
    500: "Something went wrong",
    503: "Not available right now",
}
DEFAULT_MESSAGES = {
    404: "There is no page at this address.",
    405: "This address does not accept that kind of request.",
    413: "That upload is larger than this StreamerHub accepts.",
}


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        context_processors=[page_context],
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(number=number, duration=duration, local=local_time, pct=percent)
    env.globals.update(version=__version__)


async def page_context(request: web.Request) -> dict[str, Any]:
    """Variables every template sees: who is signed in, the CSRF token, demo mode, the zone."""
    svc = request.config_dict.get(SERVICES)
    who = current(request)
    role = who.user.role if who else None
    nav = [n for n in NAV if who and (n[3] == "viewer" or role == "owner")]
    return {
        "request": request,
        "me": who.user if who else None,
        "nav": nav,
        "csrf": await csrf_token(request),
        "demo": bool(svc and svc.demo),
        "capture_problems": svc.extra["capture_problems"]()
        if svc and "capture_problems" in svc.extra
        else [],
        "timezone": svc.settings.general.timezone if svc else "UTC",
        "active": request.match_info.route.name or "",
        "flash": await take_flash(request),
        "backup_banner": svc.backups.banner() if svc and svc.backups and role == "owner" else None,
    }


def zone(request: web.Request) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(request.config_dict[SERVICES].settings.general.timezone)


# ----------------------------------------------------------------------------- filters


def number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}" if isinstance(value, (int, float)) else str(value)


def percent(value: Any) -> str:
    return "—" if value is None else f"{value:+.0f} %"


def duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds.total_seconds() if isinstance(seconds, dt.timedelta) else seconds)
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


@jinja2.pass_context
def local_time(ctx: Any, value: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A moment in the streamer's time zone."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    text: str = value.astimezone(zoneinfo.ZoneInfo(ctx.get("timezone", "UTC"))).strftime(fmt)
    return text


# ----------------------------------------------------------------------------- errors

DATABASE_DOWN = (
    "StreamerHub cannot reach its database right now. Twitch events keep being "
    "captured (they wait in the spool) and show up here once it is back: try again "
    "in a moment."
)


def _status_and_message(exc: BaseException) -> tuple[int, str]:
    if is_connection_error(exc):
        return 503, DATABASE_DOWN
    if isinstance(exc, web.HTTPException):
        text = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else ""
        return exc.status, text or DEFAULT_MESSAGES.get(exc.status, exc.reason)
    if isinstance(exc, StreamerHubError):
        return 400, redact(str(exc))
    return 500, ""


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception of a dashboard request into a page (or JSON) saying what happened.

    The JSON API (/api/) answers its own errors; only dashboard routes are handled here.
    """
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or request.path.startswith("/api/") or exc.empty_body:
            raise
        return await error_response(request, exc)
    except Exception as exc:  # a bug must still end on a page: log the details, show a reference
        if request.path.startswith("/api/"):
            raise
        return await error_response(request, exc)


async def error_response(request: web.Request, exc: BaseException) -> web.StreamResponse:
    status, message = _status_and_message(exc)
    reference = ""
    if status == 500:
        reference = uuid.uuid4().hex[:8]
        log.error(
            "web_request_failed",
            path=request.path,
            method=request.method,
            reference=reference,
            exc_info=exc,
        )
        message = (
            "StreamerHub hit an unexpected problem while answering this page. It has been "
            f"logged with reference {reference}; try again, and if it keeps happening, "
            "look for that reference in the log."
        )
    if wants_json(request):
        return web.json_response({"error": message, "status": status}, status=status)
    context = {"status": status, "title": ERROR_TITLES.get(status, "Error"), "message": message}
    try:
        # The failure may have come before aiohttp-jinja2's own middleware filled the page
        # context (a refused CSRF token, a database gone): fill it here.
        context = {**await page_context(request), **context}
        response = aiohttp_jinja2.render_template("error.html", request, context, status=status)
    except Exception as render_exc:  # noqa: BLE001 - the template itself failed: still say something readable
        log.warning("web_error_page_failed", error=repr(render_exc))
        response = web.Response(status=status, text=f"{context['title']}: {message}")
    if isinstance(exc, web.HTTPException) and exc.status == 405:
        response.headers["Allow"] = exc.headers.get("Allow", "")
    return response
