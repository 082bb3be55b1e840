"""Streams: one row per Twitch stream session, and a page per session with its viewer curve, the
events during it and multistream markers (target up / down / restarted) on the same time axis."""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

import aiohttp_jinja2
from aiohttp import web

from streamerhub.analytics.browse import events_during
from streamerhub.analytics.sessions import SessionSummary, get_session, list_sessions
from streamerhub.web.auth import require
from streamerhub.web.channel_picker import channels, chosen_channel
from streamerhub.web.context import services
from streamerhub.web.event_view import fold_gift_bombs, moments, view
from streamerhub.web.render import zone
from streamerhub.web.services import RunSummary

PAGE = 50


@require("viewer")
async def streams_page(request: web.Request) -> web.StreamResponse:
    known = await channels(request)
    channel = chosen_channel(request, known)
    before = _instant(request.query.get("before"))
    sessions: list[SessionSummary] = []
    if channel:
        async with services(request).db.pool.acquire() as conn:
            sessions = await list_sessions(conn, channel, limit=PAGE + 1, before=before)
    more = len(sessions) > PAGE
    sessions = sessions[:PAGE]
    nxt = sessions[-1].started_at.isoformat() if more and sessions else None
    return aiohttp_jinja2.render_template(
        "streams.html",
        request,
        {
            "channels": known,
            "channel": channel,
            "sessions": sessions,
            "next_cursor": nxt,
            "q": request.query,
        },
    )


def _instant(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except ValueError:
        raise web.HTTPBadRequest(text="This page link is damaged: open Streams again.") from None


def markers(runs: Sequence[RunSummary]) -> list[dict[str, Any]]:
    """Multistream markers from FFmpeg runs: up (first run), restarted (later runs), down."""
    found = []
    for run in runs:
        kind = "up" if run.nth == 1 else "restarted"
        found.append(
            {
                "t": run.started_at.timestamp(),
                "kind": kind,
                "target": run.target,
                "job": run.job,
                "at": run.started_at,
                "detail": "",
            }
        )
        if run.ended_at is not None:
            detail = run.failure_class or run.error or "stopped"
            found.append(
                {
                    "t": run.ended_at.timestamp(),
                    "kind": "down",
                    "target": run.target,
                    "job": run.job,
                    "at": run.ended_at,
                    "detail": detail,
                }
            )
    return sorted(found, key=lambda m: m["t"])


def ad_moments(ads: Sequence[tuple[dt.datetime, int]]) -> list[dict[str, Any]]:
    """Ad breaks as moments of the stream chart: a band from the start for its length."""
    return [
        {
            "t": at.timestamp(),
            "at": at.isoformat(),
            "kind": "ad",
            "seconds": seconds,
            "label": f"Ad break, {seconds} s" if seconds else "Ad break (length not reported)",
        }
        for at, seconds in ads
    ]


@require("viewer")
async def stream_page(request: web.Request) -> web.StreamResponse:
    channel, stream = request.match_info["channel_id"], request.match_info["stream_id"]
    tz = zone(request)
    svc = services(request)
    async with svc.db.pool.acquire() as conn:
        detail = await get_session(conn, channel, stream)
        if detail is None:
            raise web.HTTPNotFound(
                text="No such stream session: it may belong to a channel that is no longer stored."
            )
        s = detail.summary
        end = s.ended_at or dt.datetime.now(dt.timezone.utc)
        events = await events_during(conn, channel, s.started_at, end)
    history = svc.multistream_history
    marks = markers(await history.runs_between(s.started_at, end) if history else [])
    shown = fold_gift_bombs([view(e, tz) for e in events])
    chart = {
        "t": [int(at.timestamp()) for at, _ in detail.samples],
        "viewers": [count for _, count in detail.samples],
        "start": s.started_at.timestamp(),
        "end": end.timestamp(),
        "tz": str(tz),
        "markers": [
            {"t": m["t"], "kind": m["kind"], "label": f"{m['target']} {m['kind']}"} for m in marks
        ],
        "events": [
            {"t": e["occurred_at"].timestamp(), "type": e["subscription_type"]} for e in events
        ],
        "gaps": [[a.timestamp(), b.timestamp()] for a, b, _ in detail.gaps],
        "moments": sorted(moments(shown) + ad_moments(detail.ad_breaks), key=lambda m: m["t"]),
        "ads": [[at.timestamp(), seconds] for at, seconds in detail.ad_breaks],
    }
    return aiohttp_jinja2.render_template(
        "stream.html",
        request,
        {
            "s": s,
            "events": shown,
            "markers": marks,
            "changes": detail.changes,
            "chart": chart,
            "a": detail.activity,
            "top_chatters": detail.top_chatters,
            "top_supporters": detail.top_supporters,
            "ads": detail.ad_breaks,
        },
    )
