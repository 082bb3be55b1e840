"""The Overview page: stat cards and charts (streamerhub.analytics) for a channel and a period,
the period and channel selectors, and the live feed panel."""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

import aiohttp_jinja2
from aiohttp import web

from streamerhub.analytics.periods import (
    Calendar,
    Period,
    PeriodError,
    calendar_period,
    chart_bucket,
    parse_day,
)
from streamerhub.analytics.queries import (
    Series,
    StatCards,
    load_period,
    stat_cards,
    time_series,
)
from streamerhub.events.text import GROUPS
from streamerhub.web.auth import require
from streamerhub.web.channel_picker import channels, chosen_channel
from streamerhub.web.context import services

PERIODS = (("day", "Today"), ("week", "This week"), ("month", "This month"), ("all", "All time"))
LABELS = {
    "day": "Today",
    "week": "This week",
    "month": "This month",
    "all": "All time",
    "custom": "Custom range",
}


async def resolve(
    conn: Any, cal: Calendar, channel: str | None, query: Mapping[str, str]
) -> tuple[Period, str | None]:
    """The period asked for, or this week and a message saying what was wrong."""
    kind = query.get("period", "week")
    try:
        if kind not in LABELS:
            raise PeriodError(f"Unknown period {kind!r}: choose day, week, month, all or custom.")
        first = last = None
        if kind == "custom":
            if not query.get("from") or not query.get("to"):
                raise PeriodError("Custom period: give both a From and a To date.")
            first, last = parse_day(query["from"], "From"), parse_day(query["to"], "To")
            if last < first:
                raise PeriodError("Custom period: From must be on or before To.")
        if channel is None and kind in ("all", "custom"):
            kind = "week"
        period = await load_period(conn, cal, channel or "", kind, first_day=first, last_day=last)
        return period, None
    except PeriodError as exc:
        return calendar_period(cal, "week"), str(exc)


def _sum(cards: StatCards, names: tuple[str, ...], previous: bool = False) -> float | None:
    values = [getattr(cards.cards[n], "previous" if previous else "value") for n in names]
    return None if any(v is None for v in values) else sum(values)


def _pct(now: float | None, before: float | None) -> float | None:
    return None if now is None or not before else round(100.0 * (now - before) / before, 1)


NO_TOTAL = (
    "Twitch's total is not known for then: it is checked on connecting and every 15 minutes, "
    "never counted from events."
)
AVG_TIP = (
    "Average concurrent viewers: watch time ÷ the live time the viewer samples cover "
    "(Twitch's definition). Unsampled time counts neither way, never as zero viewers."
)


def _signed(value: float | None) -> str:
    return "?" if value is None else f"{value:+,}"


def card_view(stats: StatCards) -> list[dict[str, Any]]:
    """The cards as the page shows them: a value, one line of detail, the change in %, and a
    tooltip that says what the number is. A total Twitch has not told us is "—", never a count
    of events."""
    c = stats.cards
    subs = ("subs_new", "subs_resub", "subs_gifted")
    gained = c["followers_gained"]
    now_viewers = c["viewers_current"].value

    def card(
        key: str,
        label: str,
        value: Any,
        sub: str,
        change: float | None,
        digits: int = 0,
        tip: str = "",
    ) -> dict[str, Any]:
        return {
            "key": key,
            "label": label,
            "value": value,
            "sub": sub,
            "delta": change,
            "digits": digits,
            "tip": tip,
        }

    total = c["followers_total"].value
    sub_total = c["subs_total"].value
    follow_line = f"+{gained.value:,} in this period"
    if c["followers_net"].value is not None:
        lost = c["followers_lost"].value
        follow_line += f" · {'−' + format(lost, ',') if lost is not None else '?'} unfollows"
        follow_line += f" · net {_signed(c['followers_net'].value)}"
    coverage = c["watch_coverage"].value
    partial = bool(c["watch_partial"].value) and coverage is not None
    bits = c["bits"]
    return [
        card(
            "followers",
            "Followers",
            total,
            follow_line if total is not None else f"{follow_line} · total not known yet",
            gained.change_pct,
            tip="Twitch's follower total at the end of the period. New follows are events "
            "stored; unfollows = new follows − the total's net change."
            if total is not None
            else NO_TOTAL,
        ),
        card(
            "subs",
            "Subscribers",
            sub_total,
            f"{c['subs_new'].value} new · {c['subs_resub'].value} resub · "
            f"{c['subs_gifted'].value} gifted",
            _pct(_sum(stats, subs), _sum(stats, subs, previous=True)),
            tip="Twitch's subscriber total at the end of the period."
            if sub_total is not None
            else NO_TOTAL,
        ),
        card(
            "viewers",
            "Average viewers",
            c["viewers_avg"].value,
            f"peak {c['viewers_peak'].value:,} · now "
            f"{'—' if now_viewers is None else f'{now_viewers:,}'}",
            c["viewers_avg"].change_pct,
            1,
            tip=AVG_TIP,
        ),
        card(
            "watch_hours",
            "Watch hours",
            c["watch_hours"].value,
            f"partial: samples cover {coverage:g}% of live time"
            if partial
            else "viewers × time watched",
            c["watch_hours"].change_pct,
            1,
            tip="Σ viewers × time, from the viewer samples. Partial when StreamerHub connected "
            "mid-stream or samples were missed: the unsampled time is not counted.",
        ),
        card(
            "streamed",
            "Hours streamed",
            c["hours_streamed"].value,
            "",
            c["hours_streamed"].change_pct,
            1,
        ),
        card(
            "bits",
            "Bits",
            bits.value,
            f"{c['bits_cheers'].value:,} cheers · {c['bits_power_ups'].value:,} Power-ups · "
            f"{c['bits_combos'].value:,} combos",
            bits.change_pct,
            tip="Cheers (channel.cheer) plus Power-ups and combos (channel.bits.use).",
        ),
        card(
            "raids",
            "Raids",
            c["raids"].value,
            f"{c['raid_viewers'].value:,} viewers brought",
            c["raids"].change_pct,
        ),
        card(
            "chat",
            "Chat messages",
            c["chat_messages"].value,
            f"{c['chatters'].value:,} chatters · "
            f"{number_text(c['messages_per_minute'].value)} per minute live",
            c["chat_messages"].change_pct,
            tip="Messages in your own channel's chat; per minute = messages ÷ minutes live.",
        ),
        card(
            "ads",
            "Ad breaks",
            c["ad_breaks"].value,
            f"{c['ad_minutes'].value:g} minutes of ads",
            c["ad_breaks"].change_pct,
        ),
        card(
            "shoutouts",
            "Shoutouts received",
            c["shoutouts"].value,
            f"{c['shoutout_viewers'].value:,} viewers brought · charity {c['charity'].value:,.2f}",
            c["shoutouts"].change_pct,
            tip="Viewers brought: the shouting channel's viewers when it shouted you out.",
        ),
    ]


def number_text(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def series_view(series: Series, tz: str) -> dict[str, Any]:
    """Columns for uPlot: one value per bucket (zeros kept), viewer lines broken off-stream."""
    points = series.points
    live = [p.hours_streamed > 0 or p.viewers_peak > 0 for p in points]
    return {
        "t": [int(p.start.timestamp()) for p in points],
        "follows": [p.follows for p in points],
        "subs": [p.subs_new + p.subs_resub + p.subs_gifted for p in points],
        "bits": [p.bits for p in points],
        "chat": [p.chat_messages for p in points],
        "avg_viewers": [p.viewers_avg if on else None for p, on in zip(points, live, strict=True)],
        "peak_viewers": [
            p.viewers_peak if on else None for p, on in zip(points, live, strict=True)
        ],
        "gap": [p.gap for p in points],
        # Exact missing ranges by kind: the events chart shades only EventSub outages, the
        # viewers chart also the minutes no viewer count was sampled while live.
        "gaps": [[g.start.timestamp(), g.end.timestamp(), g.kind] for g in series.gaps],
        "bucket": series.period.bucket,
        "tz": tz,
    }


async def overview(request: web.Request, channel: str | None) -> dict[str, Any]:
    """Period, cards and series for a channel (cards/series None without a channel)."""
    svc = services(request)
    cal = Calendar.from_settings(svc.settings)
    async with svc.db.pool.acquire() as conn:
        period, error = await resolve(conn, cal, channel, request.query)
        if channel is None:
            return {
                "period": period,
                "error": error,
                "cards": None,
                "series": None,
                "previous": None,
            }
        stats = await stat_cards(conn, channel, period)
        series = await time_series(conn, channel, chart_bucket(period))
    return {
        "period": period,
        "error": error,
        "cards": card_view(stats),
        "series": series_view(series, cal.timezone),
        "previous": stats.previous_window,
        "window": stats.window,
    }


@require("viewer")
async def overview_page(request: web.Request) -> web.StreamResponse:
    known = await channels(request)
    channel = chosen_channel(request, known)
    data = await overview(request, channel)
    period = data["period"]
    return aiohttp_jinja2.render_template(
        "overview.html",
        request,
        {
            "channels": known,
            "channel": channel,
            "period": period,
            "periods": PERIODS,
            "label": LABELS.get(period.kind, period.kind),
            "period_error": data["error"],
            "data": data,
            "groups": list(GROUPS),
            "series": data["series"],
            "q": request.query,
            "last_day": period.calendar.local(period.end - dt.timedelta(seconds=1)).date(),
        },
        status=400 if data["error"] else 200,
    )


@require("viewer")
async def overview_data(request: web.Request) -> web.StreamResponse:
    """GET /overview/data?period=…&channel=…: the page's numbers as JSON (scripts, tests)."""
    channel = chosen_channel(request, await channels(request))
    data = await overview(request, channel)
    if data["error"]:
        raise web.HTTPBadRequest(text=data["error"])
    return web.json_response(
        {
            "channel": channel,
            "period": data["period"].to_dict(),
            "cards": data["cards"],
            "series": data["series"],
        }
    )
