"""Filling a response template: {user}, {args}, {count}, {uptime}, {followage}, {title}, {game}.

Values that ask Twitch (uptime, followage, title, game) are fetched only when the template names
them, each within FACT_TIMEOUT so a slow Helix never holds a reply back for long.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Awaitable, Callable, Mapping, TypeVar

from streamerhub.chatbot.ports import MAX_MESSAGE, ChannelFacts
from streamerhub.log import get_logger

log = get_logger(__name__)

FACT_TIMEOUT = 3.0
VARIABLE = re.compile(r"\{([a-z_]+)\}")
T = TypeVar("T")


def fill(template: str, values: Mapping[str, object]) -> str:
    """Replace every known {name}; unknown ones stay as written."""
    return VARIABLE.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


def clip(text: str) -> str:
    """At most Twitch's 500 characters, cut with an ellipsis."""
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def duration(seconds: float) -> str:
    """3d 4h, 2h 5m, 7m, under a minute."""
    minutes = int(seconds // 60)
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {mins}m"
    return f"{mins}m" if mins else "under a minute"


def age(since: dt.datetime, now: dt.datetime) -> str:
    """A follow age in years, months and days."""
    days = max(0, (now - since).days)
    years, months, rest = days // 365, days % 365 // 30, days % 365 % 30
    parts = [
        f"{n} {unit}{'s' if n != 1 else ''}"
        for n, unit in ((years, "year"), (months, "month"), (rest, "day"))
        if n
    ]
    return ", ".join(parts) if parts else "less than a day"


async def _bounded(what: str, call: Callable[[], Awaitable[T]], fallback: T) -> T:
    try:
        return await asyncio.wait_for(call(), FACT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - Twitch away: the reply says "unknown", not nothing
        log.warning("chatbot_fact_failed", fact=what, error=str(exc))
        return fallback


async def facts_for(
    template: str, facts: ChannelFacts, channel_id: str, user_id: str
) -> dict[str, str]:
    """The Twitch-backed values the template names."""
    wanted = set(VARIABLE.findall(template))
    values: dict[str, str] = {}
    now = dt.datetime.now(dt.timezone.utc)
    if wanted & {"title", "game"}:
        title, game = await _bounded(
            "title", lambda: facts.title_and_game(channel_id), ("unknown", "unknown")
        )
        values.update(title=title or "(no title)", game=game or "(no category)")
    if "uptime" in wanted:
        since = await _bounded("uptime", lambda: facts.live_since(channel_id), None)
        values["uptime"] = duration((now - since).total_seconds()) if since else "offline"
    if "followage" in wanted:
        followed = await _bounded("followage", lambda: facts.followed_at(channel_id, user_id), None)
        values["followage"] = age(followed, now) if followed else "not following"
    return values
