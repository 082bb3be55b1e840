"""Periods and chart buckets in the streamer's own time zone, DST-correct, with a day start hour.

Every boundary is computed on the local wall clock and then turned into a UTC instant, so a day
in Europe/Paris is 23 hours long on 2026-03-29 and 25 hours on 2026-10-25, and with
`day_start_hour = 6` a stream from 22:00 to 02:00 belongs to one day. A local time that does not
exist (skipped by a DST jump) resolves to the first instant after the jump; a repeated one to its
first occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from streamerhub.errors import InvalidInput

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BUCKET_SIZES = ("15min", "hour", "day", "week", "month")
PERIOD_KINDS = ("day", "week", "month", "all", "custom")
ROLLUP_LEVELS = (86400, 3600, 900)  # the resolutions kept by migration 0003, coarsest first
# The activity rollup and the chatter bitmaps also keep minutes (migration 0019): a raw edge of
# chat is under a minute, whatever the chat volume.
ACTIVITY_LEVELS = (86400, 3600, 900, 60)
RAW = 0  # a piece read from the typed rows themselves
# The most buckets one chart or series export may have (20 days by the hour, 16 months by the
# day, 9 years by the week, 41 by the month): building and filling them (queries.time_series,
# rollups._pieces) runs on the event loop in one step of ~40-90 µs a bucket on a busy machine
# (1000 buckets held it ~45 ms), and that loop also reads capture's EventSub socket.
MAX_BUCKETS = 500
# Days a user may type: nothing was captured before 1970, and near year 9999 a day's end or a
# zone shift overflows Python's calendar.
FIRST_YEAR, LAST_YEAR = 1970, 9000
QUARTER = timedelta(minutes=15)
_APPROX_BUCKET = {
    "15min": QUARTER,
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(days=7),
    "month": timedelta(days=30.436875),  # the mean Gregorian month: about right, not a bound
}


class PeriodError(InvalidInput):
    """A period that cannot be built (unknown kind, empty or reversed range)."""


@dataclass(frozen=True)
class Calendar:
    """The streamer's zone and day start (streamerhub/clock.py: chosen in Settings, else
    `[general] timezone` and `day_start_hour`)."""

    timezone: str = "UTC"
    day_start_hour: int = 0
    tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.day_start_hour <= 23:
            raise PeriodError(f"day_start_hour = {self.day_start_hour} must be between 0 and 23")
        object.__setattr__(self, "tz", ZoneInfo(self.timezone))

    @classmethod
    def from_settings(cls, settings: Any) -> "Calendar":
        return cls(settings.general.timezone, settings.general.day_start_hour)

    @classmethod
    def from_clock(cls, clock: Any) -> "Calendar":
        """The calendar of a clock.Clock (the zone and day start in effect for the daemon)."""
        return cls(clock.timezone, clock.day_start_hour)

    def local(self, instant: datetime) -> datetime:
        """The instant on the streamer's wall clock."""
        return _aware(instant).astimezone(self.tz)

    def resolve(self, wall: datetime) -> datetime:
        """A naive local wall-clock time as a UTC instant (gaps: after the jump; folds: first)."""
        return wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)

    def day_start(self, day: date) -> datetime:
        """When the streamer's `day` begins, in UTC."""
        return self.resolve(datetime.combine(day, time(self.day_start_hour)))

    def day_of(self, instant: datetime) -> date:
        """The streamer's day an instant belongs to (before day_start_hour: the day before)."""
        instant = _aware(instant)
        day = self.local(instant).date()
        if instant < self.day_start(day):
            return day - timedelta(days=1)
        if instant >= self.day_start(day + timedelta(days=1)):
            return day + timedelta(days=1)
        return day

    def floor(self, instant: datetime, size: str) -> datetime:
        """Start (UTC) of the hour/day/week/month bucket holding the instant."""
        instant = _aware(instant).astimezone(UTC)
        if size == "15min":  # every zone in use is a whole number of quarters off UTC
            return _floor(instant, 900)
        if size == "hour":
            local = self.local(instant).replace(minute=0, second=0, microsecond=0)
            start = local.astimezone(UTC)
            return start if start <= instant else instant - (instant - EPOCH) % timedelta(hours=1)
        day = self.day_of(instant)
        if size == "day":
            return self.day_start(day)
        if size == "week":
            return self.day_start(day - timedelta(days=day.weekday()))
        if size == "month":
            return self.day_start(day.replace(day=1))
        raise PeriodError(f"unknown bucket size {size!r}: one of {', '.join(BUCKET_SIZES)}")

    def next_start(self, start: datetime, size: str) -> datetime:
        """Start of the bucket after the one starting (or lying) at `start`."""
        start = _aware(start).astimezone(UTC)
        if size == "15min":
            return self.floor(start, size) + QUARTER
        if size == "hour":
            after = self.floor(start + timedelta(hours=1), "hour")
            return after if after > start else start + timedelta(hours=1)
        day = self.day_of(start)
        if size == "day":
            return self.day_start(day + timedelta(days=1))
        if size == "week":
            return self.day_start(day - timedelta(days=day.weekday()) + timedelta(days=7))
        if size == "month":
            return self.day_start(_add_months(day.replace(day=1), 1))
        raise PeriodError(f"unknown bucket size {size!r}: one of {', '.join(BUCKET_SIZES)}")

    def buckets(self, start: datetime, end: datetime, size: str) -> list["Bucket"]:
        """The buckets covering [start, end), the first and last clipped to the range; PeriodError
        past MAX_BUCKETS (checked before any is built)."""
        out: list[Bucket] = []
        lo = _aware(start).astimezone(UTC)
        end = _aware(end).astimezone(UTC)
        count = estimate_buckets(lo, end, size)
        if count > MAX_BUCKETS:
            raise PeriodError(
                f"{count} {size} buckets is more than the limit of {MAX_BUCKETS}: "
                "choose a shorter range or a larger bucket"
            )
        while lo < end:
            hi = min(self.next_start(lo, size), end)
            out.append(Bucket(lo, hi, self.local(lo)))
            lo = hi
        return out

    def shift(self, instant: datetime, *, days: int = 0, months: int = 0) -> datetime:
        """The same wall-clock time `days`/`months` later (month ends clamp: 31 Mar - 1 → 28
        Feb)."""
        wall = self.local(instant).replace(tzinfo=None)
        moved = _add_months(wall.date(), months) + timedelta(days=days)
        return self.resolve(datetime.combine(moved, wall.time()))


@dataclass(frozen=True)
class Bucket:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    label: datetime  # the start on the streamer's wall clock (aware, with its offset)


@dataclass(frozen=True)
class Period:
    """A range of the streamer's calendar and the bucket size its charts use."""

    kind: str
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    bucket: str
    calendar: Calendar

    @property
    def timezone(self) -> str:
        return self.calendar.timezone

    def buckets(self) -> list[Bucket]:
        return self.calendar.buckets(self.start, self.end, self.bucket)

    def until(self, now: datetime) -> datetime:
        """The end of what has happened so far: `now` inside the period, else its end."""
        return max(self.start, min(self.end, _aware(now)))

    def previous(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The window to compare with: the period before, up to the same point in it.

        Today so far is compared with yesterday up to the same time of day, this month so far
        with last month up to the same day and time; a finished period with the whole previous
        one. `all` has nothing before it.
        """
        until = self.until(now)
        cal = self.calendar
        if self.kind == "all":
            return None
        if self.kind == "custom":
            # As many of the streamer's days just before, on the wall clock: subtracting the
            # elapsed time would put the window an hour off when a DST change lies between.
            days = (cal.day_of(self.end - timedelta(microseconds=1)) - cal.day_of(self.start)).days
            prev_start = cal.shift(self.start, days=-(days + 1))
            if until >= self.end:
                return prev_start, self.start
            return prev_start, min(self.start, cal.shift(until, days=-(days + 1)))
        step = {"day": {"days": -1}, "week": {"days": -7}, "month": {"months": -1}}[self.kind]
        prev_start = cal.floor(cal.shift(self.start, **step), self.kind)
        if until >= self.end:
            return prev_start, self.start
        moved = cal.shift(until, **step)
        if self.kind == "month" and cal.local(moved).day != cal.local(until).day:
            return prev_start, self.start  # 31 March has no 31 February: all of February
        return prev_start, max(prev_start, min(self.start, moved))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "start_local": self.calendar.local(self.start).isoformat(),
            "end_local": self.calendar.local(self.end).isoformat(),
            "bucket": self.bucket,
            "timezone": self.timezone,
            "day_start_hour": self.calendar.day_start_hour,
        }


def estimate_buckets(start: datetime, end: datetime, size: str) -> int:
    """About how many `size` buckets [start, end) holds (+2 for the clipped edges)."""
    step = _APPROX_BUCKET.get(size)
    if step is None:
        raise PeriodError(f"unknown bucket size {size!r}: one of {', '.join(BUCKET_SIZES)}")
    return max(0, (end - start) // step + 2)


def choose_bucket(start: datetime, end: datetime) -> str:
    """Hours up to 3 days, days up to ~3 months, weeks up to 2 years, then months."""
    span = end - start
    if span <= timedelta(days=3):
        return "hour"
    if span <= timedelta(days=93):
        return "day"
    if span <= timedelta(days=731):
        return "week"
    return "month"


def chart_bucket(period: "Period") -> "Period":
    """The period as a chart draws it: a day (25 hours on a DST day) by the quarter hour, the
    finest rollup, so today's 16-minute stream is two bars, not one dot; longer ranges keep
    choose_bucket's size. Exports and the API keep choose_bucket's hourly day."""
    if period.end - period.start <= timedelta(hours=25):
        return replace(period, bucket="15min")
    return period


def calendar_period(cal: Calendar, kind: str, when: datetime | date | None = None) -> Period:
    """The day, week or month holding `when` (an instant, or one of the streamer's days)."""
    if kind not in ("day", "week", "month"):
        raise PeriodError(f"unknown period {kind!r}: one of {', '.join(PERIOD_KINDS)}")
    if when is None:
        when = datetime.now(UTC)
    instant = cal.day_start(when) if not isinstance(when, datetime) else _aware(when)
    start = cal.floor(instant, kind)
    end = cal.next_start(start, kind)
    return Period(kind, start, end, choose_bucket(start, end), cal)


def custom_period(cal: Calendar, first_day: date, last_day: date) -> Period:
    """The streamer's days first_day … last_day, both included."""
    if last_day < first_day:
        raise PeriodError(f"the range {first_day} … {last_day} ends before it starts")
    start, end = cal.day_start(first_day), cal.day_start(last_day + timedelta(days=1))
    return _within_limit(Period("custom", start, end, choose_bucket(start, end), cal))


DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(text: str, label: str) -> date:
    """A day as a user types it (YYYY-MM-DD; surrounding spaces ignored), the one date parser of
    the dashboard, the API and the CLI. PeriodError names the field (`label`) and the format."""
    value = text.strip()
    if DAY.fullmatch(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            pass
        else:
            if not FIRST_YEAR <= day.year <= LAST_YEAR:
                raise PeriodError(
                    f"{label}: {text!r}: the year must be between {FIRST_YEAR} and {LAST_YEAR}."
                )
            return day
    raise PeriodError(f"{label}: {text!r} is not a date like 2025-06-01.")


def range_period(cal: Calendar, start: datetime, end: datetime) -> Period:
    """Any range of instants (exports, the API): buckets chosen to fit, edges kept exact."""
    start, end = _aware(start).astimezone(UTC), _aware(end).astimezone(UTC)
    if end <= start:
        raise PeriodError(f"the range {start.isoformat()} … {end.isoformat()} is empty")
    return Period("custom", start, end, choose_bucket(start, end), cal)


def _within_limit(period: Period) -> Period:
    """Refuse a range too long for its charts before anything is built from it."""
    count = estimate_buckets(period.start, period.end, period.bucket)
    if count > MAX_BUCKETS:
        raise PeriodError(
            f"{period.start.date()} … {period.end.date()} is {count} {period.bucket} buckets, "
            f"more than the limit of {MAX_BUCKETS}: choose a shorter range"
        )
    return period


def all_time_period(cal: Calendar, first: datetime | None, now: datetime | None = None) -> Period:
    """From the bucket holding the first data to the end of the bucket holding `now`."""
    now = _aware(now or datetime.now(UTC))
    first = min(_aware(first), now) if first else now
    size = choose_bucket(first, now)
    start = cal.floor(first, size)
    end = cal.next_start(cal.floor(now, size), size)
    return Period("all", start, end, size, cal)


def split_aligned(
    lo: datetime, hi: datetime, levels: tuple[int, ...] = ROLLUP_LEVELS
) -> list[tuple[int, datetime, datetime]]:
    """Cut [lo, hi) into (resolution, start, end) pieces the rollups can answer exactly.

    At most one run of whole UTC days and two runs of each finer level (`levels`, coarsest
    first); edges off the finest grid (a range ending "now") become RAW pieces read from the
    typed rows.
    """
    lo, hi = _aware(lo).astimezone(UTC), _aware(hi).astimezone(UTC)
    if hi <= lo:
        return []
    finest = levels[-1]
    a, b = _ceil(lo, finest), _floor(hi, finest)
    if a >= b:
        return [(RAW, lo, hi)]
    pieces = [(RAW, lo, a)] if lo < a else []
    pieces += _split_grid(a, b, levels)
    if b < hi:
        pieces.append((RAW, b, hi))
    return pieces


def _split_grid(
    lo: datetime, hi: datetime, levels: tuple[int, ...]
) -> list[tuple[int, datetime, datetime]]:
    res, finer = levels[0], levels[1:]
    a, b = _ceil(lo, res), _floor(hi, res)
    if a >= b:
        return _split_grid(lo, hi, finer) if finer else []
    left = _split_grid(lo, a, finer) if lo < a else []
    right = _split_grid(b, hi, finer) if b < hi else []
    return left + [(res, a, b)] + right


def _floor(instant: datetime, seconds: int) -> datetime:
    return instant - (instant - EPOCH) % timedelta(seconds=seconds)


def _ceil(instant: datetime, seconds: int) -> datetime:
    floored = _floor(instant, seconds)
    return floored if floored == instant else floored + timedelta(seconds=seconds)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    first_next = date(year + (month + 1) // 12, (month + 1) % 12 + 1, 1)
    last = (first_next - timedelta(days=1)).day
    return date(year, month + 1, min(day.day, last))


def _aware(value: datetime | date) -> datetime:
    if not isinstance(value, datetime):
        raise PeriodError(f"{value!r} is a date where an instant was expected")
    if value.tzinfo is None:
        raise PeriodError(f"{value.isoformat()} has no time zone: pass an aware datetime")
    return value
