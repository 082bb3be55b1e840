"""When a job runs: a start moment (or its time of day on some weekdays) and a stop, read in
the streamer's time zone.

Times of day are local; everything after that is absolute time. Python adds a timedelta to an
aware datetime on the wall clock, and compares two datetimes of one tzinfo by wall clock, so
every occurrence is turned into UTC before a duration is added or a moment compared: a 3 h
window lasts 3 real hours on a DST day. A local time that does not exist (02:30 when clocks
jump from 02:00 to 03:00) starts when it would have, by the old offset (03:30 new time); one
that exists twice (02:30 when clocks go back) starts at the first of the two.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping

from streamerhub.errors import InvalidInput

UTC = dt.timezone.utc
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SCHEDULE_FIELDS = ("start_at", "stop_at", "duration_s", "days")


@dataclass(frozen=True)
class Schedule:
    """Start at a moment (or at its time of day on some weekdays); stop at/after some time."""

    start_at: dt.datetime | None = None
    stop_at: dt.datetime | None = None
    duration_s: int | None = None
    days: tuple[int, ...] = ()  # ISO weekdays, 1 = Monday

    @property
    def length(self) -> dt.timedelta | None:
        """How long one occurrence lasts (None: until stopped or the playlist ends)."""
        if self.duration_s:
            return dt.timedelta(seconds=self.duration_s)
        if self.stop_at and self.start_at:
            return self.stop_at.astimezone(UTC) - self.start_at.astimezone(UTC)
        return None

    def starts(self, tz: dt.tzinfo, around: dt.datetime, span_days: int = 8) -> list[dt.datetime]:
        """Occurrence starts (in UTC) within span_days either side of `around`, in order."""
        if self.start_at is None:
            return []
        first = self.start_at.astimezone(UTC)
        if not self.days:
            return [first]
        time_of_day = self.start_at.astimezone(tz).timetz().replace(tzinfo=None)
        today = around.astimezone(tz).date()
        days = (today + dt.timedelta(days=offset) for offset in range(-span_days, span_days + 1))
        moments = (
            dt.datetime.combine(day, time_of_day, tzinfo=tz).replace(fold=0).astimezone(UTC)
            for day in days
            if day.isoweekday() in self.days
        )
        return [moment for moment in moments if moment >= first]

    def current(
        self, now: dt.datetime, tz: dt.tzinfo
    ) -> tuple[dt.datetime, dt.datetime | None] | None:
        """The latest occurrence that has begun and not ended: (start, end or None), in UTC."""
        now = now.astimezone(UTC)
        begun = [s for s in self.starts(tz, now) if s <= now]
        if not begun:
            return None
        start = begun[-1]
        length = self.length
        end = start + length if length else None
        # In UTC: Python never calls an ambiguous local time equal to a moment of another zone.
        return (start, end) if end is None or now < end else None

    def next_start(self, now: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
        """The first occurrence starting after now, if any."""
        now = now.astimezone(UTC)
        upcoming = next((s for s in self.starts(tz, now) if s > now), None)
        return None if upcoming is None else upcoming.astimezone(tz)

    def deadline_for_manual_start(self, now: dt.datetime) -> dt.datetime | None:
        """A run started by hand still honours 'stop after' and a one-off 'stop at'."""
        if self.duration_s:
            return now + dt.timedelta(seconds=self.duration_s)
        if self.stop_at and not self.days and self.stop_at > now:
            return self.stop_at
        return None

    def to_json(self, tz: dt.tzinfo) -> dict[str, Any] | None:
        """The schedule as the API shows it (None when there is none)."""
        if self.start_at is None and self.stop_at is None and self.duration_s is None:
            return None
        return {
            "start_at": iso(self.start_at, tz),
            "stop_at": iso(self.stop_at, tz),
            "duration_s": self.duration_s,
            "days": [DAYS[d - 1] for d in self.days],
        }


def iso(moment: dt.datetime | None, tz: dt.tzinfo) -> str | None:
    """A moment in ISO 8601, in the streamer's time zone."""
    return moment.astimezone(tz).isoformat() if moment else None


def parse_moment(value: Any, field: str, tz: dt.tzinfo) -> dt.datetime | None:
    """ISO 8601; without an offset it is read in the streamer's time zone."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be a date and time like 2025-06-01T20:00")
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{field}: {value!r} is not a date and time like "
            "2025-06-01T20:00 (your time zone) or 2025-06-01T18:00Z"
        ) from None
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


def parse_days(value: Any) -> tuple[int, ...]:
    """Weekdays as names ("mon") or ISO numbers (1 = Monday), sorted and deduplicated."""
    if value in (None, "", []):
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise InvalidInput('schedule.days: a list of weekdays like ["mon", "fri"]')
    return tuple(sorted({_weekday(item) for item in items}))


def _weekday(item: Any) -> int:
    name = str(item).strip().lower()[:3]
    if isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= 7:
        return item
    if name in DAYS:
        return DAYS.index(name) + 1
    raise InvalidInput(f"schedule.days: {item!r} is not a weekday (mon … sun or 1 … 7)")


def parse_schedule(value: Any, tz: dt.tzinfo, now: dt.datetime) -> Schedule:
    """Validate a schedule object from the API."""
    if value is None:
        return Schedule()
    if not isinstance(value, Mapping):
        raise InvalidInput("schedule: an object with start_at, stop_at, duration_s, days")
    unknown = sorted(set(value) - set(SCHEDULE_FIELDS))
    if unknown:
        raise InvalidInput(
            f"schedule: unknown field {unknown[0]!r} (known: start_at, stop_at, duration_s, days)"
        )
    schedule = Schedule(
        parse_moment(value.get("start_at"), "schedule.start_at", tz),
        parse_moment(value.get("stop_at"), "schedule.stop_at", tz),
        value.get("duration_s"),
        parse_days(value.get("days")),
    )
    _check_duration(schedule)
    _check_window(schedule, now)
    return schedule


def _check_duration(schedule: Schedule) -> None:
    duration = schedule.duration_s
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0
    ):
        raise InvalidInput("schedule.duration_s: a whole number of seconds above 0")
    if duration is not None and schedule.stop_at is not None:
        raise InvalidInput("schedule: give stop_at or duration_s, not both")


def _check_window(schedule: Schedule, now: dt.datetime) -> None:
    start, stop, days = schedule.start_at, schedule.stop_at, schedule.days
    if days and start is None:
        raise InvalidInput("schedule.days: needs start_at (its time of day is used)")
    if start and stop and stop <= start:
        raise InvalidInput("schedule.stop_at: must be after start_at")
    if days and start and stop and stop - start >= dt.timedelta(days=7):
        raise InvalidInput("schedule.stop_at: a repeating occurrence must last less than a week")
    if (
        start
        and not days
        and start < now - dt.timedelta(minutes=1)
        and (stop is None or stop <= now)
    ):
        raise InvalidInput("schedule.start_at: is in the past")
