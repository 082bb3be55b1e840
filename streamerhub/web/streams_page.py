"""Streams: one row per Twitch stream session, and a page per session with its viewer curve, the
events during it and multistream markers (target up / down / restarted) on the same time axis."""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

import aiohttp_jinja2
from aiohttp import web

from streamerhub.analytics.browse import events_during
from streamerhub.analytics.rollups import activity_totals
from streamerhub.analytics.sessions import SessionSummary, get_session, list_sessions
from streamerhub.web.auth import require
from streamerhub.web.channel_picker import channels, chosen_channel
from streamerhub.web.context import services
from streamerhub.web.event_view import fold_gift_bombs, moments, view
from streamerhub.web.render import zone
from streamerhub.web.services import RunSummary

PAGE = 50
COMPARE_WITH = 5  # previous streams the summary compares this one with


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


async def comparison(conn: Any, s: SessionSummary, chat_messages: int) -> dict[str, Any]:
    """This stream's figures next to the average of the previous streams of the channel:
    {"n": how many, "rows": [{label, this, before, change}]} (no rows when it is the first)."""
    earlier = await list_sessions(conn, s.channel_id, limit=COMPARE_WITH, before=s.started_at)
    if not earlier:
        return {"n": 0, "rows": []}
    windows = [(p.started_at, p.ended_at or p.started_at) for p in earlier]
    chats = [t["chat_messages"] for t in await activity_totals(conn, s.channel_id, windows)]
    figures: list[tuple[str, float, list[float]]] = [
        ("Peak viewers", s.viewers_peak, [p.viewers_peak for p in earlier]),
        ("Avg viewers", s.viewers_avg, [p.viewers_avg for p in earlier]),
        ("Follows", s.follows, [p.follows for p in earlier]),
        ("Subs", _subs(s), [_subs(p) for p in earlier]),
        ("Bits", s.bits, [p.bits for p in earlier]),
        ("Chat messages", chat_messages, chats),
    ]
    rows = []
    for label, this, before in figures:
        mean = sum(before) / len(before)
        rows.append(
            {
                "label": label,
                "this": this,
                "before": round(mean, 1),
                "change": change(this, mean),
                "trend": _trend(this, mean),
            }
        )
    return {"n": len(earlier), "rows": rows}


def _trend(this: float, before: float) -> str:
    return "up" if this > before else "down" if this < before else "same"


def _subs(s: SessionSummary) -> int:
    return s.subs_new + s.subs_resub + s.subs_gifted


def change(this: float, before: float) -> str:
    """+x % / −y % against the earlier average; "new" when there was none before."""
    if before == 0:
        return "±0 %" if this == 0 else "new"
    pct = round((this - before) / before * 100)
    if pct == 0:
        return "±0 %"
    return f"+{pct} %" if pct > 0 else f"\u2212{-pct} %"


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
        compared = await comparison(conn, s, detail.activity["chat_messages"])
    history = svc.multistream_history
    marks = markers(await history.runs_between(s.started_at, end) if history else [])
    linked = await history.linked_between(s.started_at, end) if history else []
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
            "compared": compared,
            "linked": linked,
        },
    )
