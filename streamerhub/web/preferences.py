"""The streamer's clock, chosen in the browser: time zone and the hour their day starts.

Stored in `web_preferences` (one row) at setup and from Settings; while a row exists it overrides
`[general] timezone` and `day_start_hour` for the whole daemon (streamerhub/clock.py): what the
dashboard shows and counts (periods, "today", event times), multistream job schedules, the daily
backup time and exports; at once and after restarts."""

from __future__ import annotations

import dataclasses
import zoneinfo
from functools import cache
from typing import Any, Mapping

from aiohttp import web

from streamerhub.clock import Clock
from streamerhub.config import Settings
from streamerhub.db import Database
from streamerhub.errors import InvalidInput
from streamerhub.log import get_logger
from streamerhub.web.context import services

log = get_logger(__name__)

LOAD = "SELECT timezone, day_start_hour FROM web_preferences WHERE id"
SAVE = """
INSERT INTO web_preferences (id, timezone, day_start_hour) VALUES (true, $1, $2)
ON CONFLICT (id) DO UPDATE SET timezone = $1, day_start_hour = $2, updated_at = now()"""


__all__ = [
    "Clock",
    "applied",
    "clock_choices",
    "in_effect",
    "load",
    "parse",
    "save",
    "use_clock",
    "zones",
]


@cache
def zones() -> list[str]:
    """Every IANA zone name this machine knows, sorted, for the picker."""
    return sorted(z for z in zoneinfo.available_timezones() if "/" in z or z == "UTC")


def parse(form: Mapping[str, str]) -> Clock:
    """The form's zone and hour, or InvalidInput saying which field is wrong and how."""
    name = form.get("timezone", "").strip()
    if name not in zoneinfo.available_timezones():
        raise InvalidInput(
            f"Time zone {name!r} is not one this machine knows: pick one from the list "
            '(a region and a city, like "Europe/Berlin").'
        )
    try:
        hour = int(form.get("day_start_hour", "0"))
    except ValueError:
        hour = -1
    if not 0 <= hour <= 23:
        raise InvalidInput("Day starts at: choose an hour from 0 to 23.")
    return Clock(name, hour)


async def load(db: Database) -> Clock | None:
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow(LOAD)
    return Clock(row["timezone"], row["day_start_hour"]) if row else None


async def in_effect(db: Database, settings: Settings) -> Clock:
    """The clock the daemon uses (for the CLI, which runs apart from it): the stored choice,
    else config.toml's."""
    general = settings.general
    return await load(db) or Clock(general.timezone, general.day_start_hour)


async def save(db: Database, clock: Clock) -> None:
    async with db.pool.acquire() as conn:
        await conn.execute(SAVE, clock.timezone, clock.day_start_hour)


def applied(settings: Settings, clock: Clock | None) -> Settings:
    """The settings with the chosen clock in [general] (unchanged without a choice)."""
    if clock is None:
        return settings
    values = {
        **settings.values,
        ("general", "timezone"): clock.timezone,
        ("general", "day_start_hour"): clock.day_start_hour,
    }
    return dataclasses.replace(settings, values=values)


async def use_clock(request: web.Request, clock: Clock) -> None:
    """Store the choice and put it in effect for the whole daemon (every page and the feed, job
    schedules, the backup time, exports), without a restart."""
    svc = services(request)
    await save(svc.db, clock)
    svc.clock.set(clock)  # its listeners update svc.settings and the other parts
    log.info("web_clock_changed", timezone=clock.timezone, day_start_hour=clock.day_start_hour)


def clock_choices(request: web.Request, guess: bool = False) -> dict[str, Any]:
    """What the clock fields need: the zones, the current choice, whether to guess the browser's."""
    general = services(request).settings.general
    return {
        "zones": zones(),
        "clock": Clock(general.timezone, general.day_start_hour),
        "clock_guess": guess,
    }
