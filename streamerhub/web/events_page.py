"""The Events page: every stored event, filtered by type, user and dates, keyset-paginated
(analytics/browse.py), and its export (analytics/export.py, the columns of `streamerhub export`)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from streamerhub.analytics import browse
from streamerhub.analytics.browse import EventFilter, EventRow
from streamerhub.analytics.export import FORMATS, export_events, media_type
from streamerhub.analytics.periods import Calendar, PeriodError, parse_day
from streamerhub.events.text import GROUPS, types_for
from streamerhub.web.auth import require
from streamerhub.web.channel_picker import channels, chosen_channel
from streamerhub.web.context import services
from streamerhub.web.event_view import fold_gift_bombs, view
from streamerhub.web.feed import cursor_id, parse_cursor
from streamerhub.web.render import zone


def _day(value: str | None, label: str, tz: dt.tzinfo) -> dt.datetime | None:
    """A YYYY-MM-DD form value → midnight in the streamer's zone (None when left empty)."""
    if not value:
        return None
    return dt.datetime.combine(parse_day(value, label), dt.time(), tz)


def _event_filter(request: web.Request, channel: str | None) -> tuple[EventFilter, list[str]]:
    query, tz = request.query, zone(request)
    errors: list[str] = []
    groups = [g for g in query.getall("type", []) if g]
    user = query.get("user", "").strip().lstrip("@").lower() or None
    since = until = None
    try:
        since = _day(query.get("from"), "From", tz)
    except PeriodError as exc:
        errors.append(str(exc))
    try:
        until = _day(query.get("to"), "To", tz)
    except PeriodError as exc:
        errors.append(str(exc))
    if until is not None:
        until = until + dt.timedelta(days=1)  # "to" is inclusive: up to the end of that day
    if since and until and since >= until:
        errors.append("From must be on or before To.")
    unknown = [g for g in groups if not types_for([g])]
    if unknown:
        errors.append(f"Unknown event type: {', '.join(unknown)}.")
    return EventFilter(channel, tuple(types_for(groups)), user, since, until), errors


@require("viewer")
async def events_page(request: web.Request) -> web.StreamResponse:
    known = await channels(request)
    channel = chosen_channel(request, known)
    flt, errors = _event_filter(request, channel)
    rows: list[EventRow] = []
    nxt = None
    if not errors:
        before = parse_cursor(request.query.get("before"))
        rows, nxt = await browse.page(services(request).db, flt, before)
    keep = [(k, v) for k, v in request.query.items() if k != "before"]
    tz = zone(request)
    return aiohttp_jinja2.render_template(
        "events.html",
        request,
        {
            "channels": known,
            "channel": channel,
            "groups": list(GROUPS),
            "errors": errors,
            "selected": request.query.getall("type", []),
            "q": request.query,
            "events": fold_gift_bombs([view(r, tz) for r in rows]),
            "next_cursor": cursor_id(nxt) if nxt else None,
            "keep": keep,
            "export_query": urlencode([(k, v) for k, v in keep if k != "format"]),
        },
        status=400 if errors else 200,
    )


@require("viewer")
async def events_export(request: web.Request) -> web.StreamResponse:
    """GET /events/export?format=csv|json&<the page's filter>: the export of `streamerhub export
    events` (same columns) for what the page shows, newest first, streamed in constant memory."""
    known = await channels(request)
    flt, errors = _event_filter(request, chosen_channel(request, known))
    fmt = request.query.get("format", "csv")
    if errors or fmt not in FORMATS:
        raise web.HTTPBadRequest(text=" ".join(errors) or "format: csv or json.")
    svc = services(request)
    cal = Calendar.from_settings(svc.settings)
    stamp = dt.datetime.now(zone(request)).strftime("%Y%m%d-%H%M")
    response = web.StreamResponse(
        headers={
            "Content-Type": media_type(fmt),
            "Content-Disposition": f'attachment; filename="streamerhub-events-{stamp}.{fmt}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    async for chunk in export_events(
        svc.db.pool,
        cal,
        flt.since,
        flt.until,
        fmt,
        flt.channel,
        types=flt.types,
        user=flt.user,
        newest_first=True,
    ):
        await response.write(chunk)
    await response.write_eof()
    return response
