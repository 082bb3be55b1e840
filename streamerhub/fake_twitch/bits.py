"""GET /helix/bits/leaderboard: per-user Bits totals of a period, with Twitch's rules.

Every cheer the fake delivers (or that happens while nobody listens) is kept in the channel's
ledger (`history(channel)["cheers"]`, see channel.py); the leaderboard sums it per user:
- scope `bits:read`; the broadcaster is the token's user;
- `count` 1-100 (default 10), ranked by score; `user_id` centres the window on that user;
- `period` day / week / month / year / all (default all; `started_at` is then ignored);
- periods begin at 00:00 Pacific time (Twitch's "PST", DST included): the day of `started_at`,
  the Monday of its week, the first of its month or year; without `started_at`, the current one;
- `date_range` gives the period's bounds in UTC (empty strings for `all`);
- anonymous cheers are on no one's line.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter
from typing import Any

from aiohttp import web

from .access import authenticate
from .replies import ApiError, int_param

PACIFIC = zoneinfo.ZoneInfo("America/Los_Angeles")
PERIODS = ("day", "week", "month", "year", "all")


def period_bounds(period: str, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the Pacific-time period holding `at`, as UTC instants."""
    local = at.astimezone(PACIFIC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = local, local + dt.timedelta(days=1)
    elif period == "week":
        start = local - dt.timedelta(days=local.weekday())
        end = start + dt.timedelta(days=7)
    elif period == "month":
        start = local.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
    else:
        start = local.replace(month=1, day=1)
        end = start.replace(year=start.year + 1)
    # Wall-clock midnights: re-attach the zone so a DST change inside the period counts right.
    start, end = (t.replace(tzinfo=None).replace(tzinfo=PACIFIC) for t in (start, end))
    return start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)


def _stamp(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(raw: str | None) -> dt.datetime:
    if raw is None:
        return dt.datetime.now(dt.timezone.utc)
    try:
        at = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "The parameter started_at must be in RFC3339 format") from None
    if at.tzinfo is None:
        raise ApiError(400, "The parameter started_at must be in RFC3339 format")
    return at


def leaderboard(
    cheers: list[dict[str, Any]], period: str, at: dt.datetime
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The ranked lines of a period (every user) and its date_range."""
    if period == "all":
        lo = hi = None
        date_range = {"started_at": "", "ended_at": ""}
    else:
        lo, hi = period_bounds(period, at)
        date_range = {"started_at": _stamp(lo), "ended_at": _stamp(hi)}
    scores: Counter[str] = Counter()
    names: dict[str, tuple[str, str]] = {}
    for cheer in cheers:
        when = dt.datetime.fromisoformat(cheer["at"])
        if not cheer.get("user_id") or (lo is not None and hi is not None and not lo <= when < hi):
            continue
        scores[cheer["user_id"]] += int(cheer["bits"])
        names[cheer["user_id"]] = (cheer.get("user_login") or "", cheer.get("user_name") or "")
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    lines = [
        {
            "user_id": user_id,
            "user_login": names[user_id][0],
            "user_name": names[user_id][1],
            "rank": rank,
            "score": score,
        }
        for rank, (user_id, score) in enumerate(ranked, 1)
    ]
    return lines, date_range


async def get_bits_leaderboard(request: web.Request) -> web.Response:
    """GET /bits/leaderboard?count=&period=&started_at=&user_id= (bits:read)."""
    state, token = authenticate(request, "bits:read")
    count = int_param(request, "count", 10, 1, 100)
    period = request.query.get("period", "all")
    if period not in PERIODS:
        raise ApiError(400, "The parameter period must be one of day, week, month, year, all")
    at = _when(request.query.get("started_at"))
    lines, date_range = leaderboard(
        state.history(token.user_id).setdefault("cheers", []), period, at
    )
    user_id = request.query.get("user_id")
    first = 0
    if user_id:
        mine = [i for i, line in enumerate(lines) if line["user_id"] == user_id]
        first = max(0, mine[0] - count // 2) if mine else len(lines)
    data = lines[first : first + count]
    return web.json_response({"data": data, "date_range": date_range, "total": len(data)})


def add_routes(app: web.Application, prefix: str = "/helix") -> None:
    """Register the leaderboard under prefix."""
    app.router.add_get(f"{prefix}/bits/leaderboard", get_bits_leaderboard)
