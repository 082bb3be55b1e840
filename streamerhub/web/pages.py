"""The dashboard's pages: Overview, Events, Streams, Multistream; Settings lives in settings_page.py.

Every page is server-rendered; the little JavaScript in static/ adds live updates (the feed,
multistream states) and the upload progress bar.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from streamerhub.errors import StreamerHubError
from streamerhub.events.text import GROUPS, types_for
from streamerhub.web import events_query, overview, settings_page, streams_page
from streamerhub.web.auth import require
from streamerhub.web.context import services
from streamerhub.web.feed import cursor_id, parse_cursor
from streamerhub.web.render import zone

DATE_FORMAT = "%Y-%m-%d"


# ----------------------------------------------------------------------------- channels

async def channels(request: web.Request) -> list[dict[str, Any]]:
    """Connected (and formerly connected) channels, for the channel selector."""
    async with services(request).db.pool.acquire() as conn:
        rows = await conn.fetch("SELECT channel_id, login, display_name, status FROM "
                                "twitch_channels ORDER BY connected_at, channel_id")
    return [dict(r) for r in rows]


def chosen_channel(request: web.Request, known: list[dict[str, Any]]) -> str | None:
    wanted = request.query.get("channel")
    ids = [c["channel_id"] for c in known]
    if wanted in ids:
        return wanted
    return ids[0] if ids else None


def parse_day(value: str | None, label: str, tz: dt.tzinfo) -> dt.datetime | None:
    """A YYYY-MM-DD form value → midnight in the streamer's zone; ValueError says what is wrong."""
    if not value:
        return None
    try:
        day = dt.datetime.strptime(value.strip(), DATE_FORMAT)
    except ValueError:
        raise ValueError(f"{label}: {value!r} is not a date like 2025-06-01.") from None
    return day.replace(tzinfo=tz)


# ----------------------------------------------------------------------------- events

def _event_filter(request: web.Request, channel: str | None) -> tuple[events_query.EventFilter,
                                                                      list[str]]:
    query, tz = request.query, zone(request)
    errors: list[str] = []
    groups = [g for g in query.getall("type", []) if g]
    user = query.get("user", "").strip().lstrip("@").lower() or None
    since = until = None
    try:
        since = parse_day(query.get("from"), "From", tz)
    except ValueError as exc:
        errors.append(str(exc))
    try:
        until = parse_day(query.get("to"), "To", tz)
    except ValueError as exc:
        errors.append(str(exc))
    if until is not None:
        until = until + dt.timedelta(days=1)  # "to" is inclusive: up to the end of that day
    if since and until and since >= until:
        errors.append("From must be on or before To.")
    unknown = [g for g in groups if not types_for([g])]
    if unknown:
        errors.append(f"Unknown event type: {', '.join(unknown)}.")
    flt = events_query.EventFilter(channel, tuple(types_for(groups)), user, since, until)
    return flt, errors


@require("viewer")
async def events_page(request: web.Request) -> web.StreamResponse:
    known = await channels(request)
    channel = chosen_channel(request, known)
    flt, errors = _event_filter(request, channel)
    rows, nxt = [], None
    if not errors:
        before = parse_cursor(request.query.get("before"))
        rows, nxt = await events_query.page(services(request).db, flt, before)
    keep = [(k, v) for k, v in request.query.items() if k != "before"]
    return aiohttp_jinja2.render_template("events.html", request, {
        "channels": known, "channel": channel, "groups": list(GROUPS), "errors": errors,
        "selected": request.query.getall("type", []), "q": request.query,
        "events": events_query.rows_json(rows, zone(request)),
        "next_cursor": cursor_id(nxt) if nxt else None, "keep": keep,
        "export_query": urlencode([(k, v) for k, v in keep if k != "format"])},
        status=400 if errors else 200)


@require("viewer")
async def events_export(request: web.Request) -> web.StreamResponse:
    """GET /events/export?format=csv|json&<the page's filter>: streamed, constant memory."""
    known = await channels(request)
    flt, errors = _event_filter(request, chosen_channel(request, known))
    fmt = request.query.get("format", "csv")
    if errors or fmt not in ("csv", "json"):
        raise web.HTTPBadRequest(text=" ".join(errors) or "format: csv or json.")
    tz = zone(request)
    stamp = dt.datetime.now(tz).strftime("%Y%m%d-%H%M")
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/json",
        "Content-Disposition": f'attachment; filename="streamerhub-events-{stamp}.{fmt}"'})
    await response.prepare(request)
    await _write_export(response, services(request).db, flt, fmt, tz)
    await response.write_eof()
    return response


async def _write_export(response: web.StreamResponse, db: Any, flt: Any, fmt: str,
                        tz: dt.tzinfo) -> None:
    batch: list[dict[str, Any]] = []
    first = True
    if fmt == "json":
        await response.write(b"[")
    async for row in events_query.export_rows(db, flt):
        batch.append(events_query.export_record(row, tz))
        if len(batch) >= 500:
            await response.write(_encode(batch, fmt, first))
            first, batch = False, []
    if batch or first:
        await response.write(_encode(batch, fmt, first))
    if fmt == "json":
        await response.write(b"\n]\n")


def _encode(batch: list[dict[str, Any]], fmt: str, first: bool) -> bytes:
    if fmt == "csv":
        return events_query.csv_chunk(batch, header=first)
    lines = ",".join("\n" + json.dumps(r, separators=(",", ":")) for r in batch)
    return (lines if first else ("," + lines if lines else "")).encode()


# ----------------------------------------------------------------------------- multistream

@require("owner")
async def multistream_page(request: web.Request) -> web.StreamResponse:
    """The shell of the multistream page; its tables are filled and kept live from /api/v1."""
    svc = services(request)
    return aiohttp_jinja2.render_template("multistream.html", request, {
        "channels": await channels(request), "available": svc.multistream,
        "max_upload": svc.settings.ffmpeg.max_upload_bytes})


@require("owner")
async def category_search(request: web.Request) -> web.StreamResponse:
    """GET /multistream/categories?q=…: the job form's category suggestions (JSON)."""
    query = request.query.get("q", "").strip()
    link = services(request).channel_link
    if len(query) < 2 or link is None:
        return web.json_response([])
    try:
        found = await link.search_categories(query[:100])
    except StreamerHubError as exc:
        return web.json_response({"error": f"Twitch category search failed: {exc}"}, status=502)
    return web.json_response(found[:10])


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview.overview_page, name="overview")
    app.router.add_get("/overview/data", overview.overview_data)
    app.router.add_get("/events", events_page, name="events")
    app.router.add_get("/events/export", events_export)
    app.router.add_get("/streams", streams_page.streams_page, name="streams")
    app.router.add_get("/streams/{channel_id}/{stream_id}", streams_page.stream_page,
                       name="stream")
    app.router.add_get("/multistream", multistream_page, name="multistream")
    app.router.add_get("/multistream/categories", category_search)
    settings_page.add_routes(app)

