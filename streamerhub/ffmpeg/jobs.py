"""Stream jobs: a video or an ordered playlist × targets, looped, titled, optionally scheduled.

This module is the data side: validation, schedule arithmetic (in the streamer's time zone) and
the rows that make the desired state survive a restart. `service.py` makes it happen.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any, Mapping

import asyncpg

from streamerhub.db import Database
from streamerhub.ffmpeg.targets import Conflict, InvalidInput, NotFound

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FIELDS = ("name", "videos", "targets", "loop", "title", "category", "tags", "schedule")
EDITABLE_WHILE_RUNNING = {"name", "title", "category", "tags", "schedule"}
TAG = re.compile(r"^[^\W_]{1,25}$")  # Twitch: letters and digits, at most 25 characters


# ----------------------------------------------------------------------------- schedule

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
            return self.stop_at - self.start_at
        return None

    def starts(self, tz: dt.tzinfo, around: dt.datetime, span_days: int = 8) -> list[dt.datetime]:
        """Occurrence starts within span_days either side of `around`, in order."""
        if self.start_at is None:
            return []
        if not self.days:
            return [self.start_at]
        first = self.start_at.astimezone(tz)
        today = around.astimezone(tz).date()
        found = []
        for offset in range(-span_days, span_days + 1):
            day = today + dt.timedelta(days=offset)
            moment = dt.datetime.combine(day, first.timetz().replace(tzinfo=None), tzinfo=tz)
            if day.isoweekday() in self.days and moment >= self.start_at:
                found.append(moment)
        return found

    def current(self, now: dt.datetime, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime | None] | None:
        """The latest occurrence that has begun and not ended: (start, end or None)."""
        begun = [s for s in self.starts(tz, now) if s <= now]
        if not begun:
            return None
        start = begun[-1]
        end = start + self.length if self.length else None
        return (start, end) if end is None or now < end else None

    def next_start(self, now: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
        return next((s for s in self.starts(tz, now) if s > now), None)

    def deadline_for_manual_start(self, now: dt.datetime) -> dt.datetime | None:
        """A run started by hand still honours 'stop after' and a one-off 'stop at'."""
        if self.duration_s:
            return now + dt.timedelta(seconds=self.duration_s)
        if self.stop_at and not self.days and self.stop_at > now:
            return self.stop_at
        return None

    def to_json(self, tz: dt.tzinfo) -> dict[str, Any] | None:
        if self.start_at is None and self.stop_at is None and self.duration_s is None:
            return None
        return {"start_at": _iso(self.start_at, tz), "stop_at": _iso(self.stop_at, tz),
                "duration_s": self.duration_s, "days": [DAYS[d - 1] for d in self.days]}


def _iso(moment: dt.datetime | None, tz: dt.tzinfo) -> str | None:
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
        raise InvalidInput(f"{field}: {value!r} is not a date and time like "
                           "2025-06-01T20:00 (your time zone) or 2025-06-01T18:00Z") from None
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


def parse_days(value: Any) -> tuple[int, ...]:
    if value in (None, "", []):
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise InvalidInput("schedule.days: a list of weekdays like [\"mon\", \"fri\"]")
    days = set()
    for item in items:
        name = str(item).strip().lower()[:3]
        if isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= 7:
            days.add(item)
        elif name in DAYS:
            days.add(DAYS.index(name) + 1)
        else:
            raise InvalidInput(f"schedule.days: {item!r} is not a weekday (mon … sun or 1 … 7)")
    return tuple(sorted(days))


def parse_schedule(value: Any, tz: dt.tzinfo, now: dt.datetime) -> Schedule:
    if value is None:
        return Schedule()
    if not isinstance(value, Mapping):
        raise InvalidInput("schedule: an object with start_at, stop_at, duration_s, days")
    unknown = sorted(set(value) - {"start_at", "stop_at", "duration_s", "days"})
    if unknown:
        raise InvalidInput(f"schedule: unknown field {unknown[0]!r} "
                           "(known: start_at, stop_at, duration_s, days)")
    start = parse_moment(value.get("start_at"), "schedule.start_at", tz)
    stop = parse_moment(value.get("stop_at"), "schedule.stop_at", tz)
    duration = value.get("duration_s")
    days = parse_days(value.get("days"))
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int)
                                 or duration <= 0):
        raise InvalidInput("schedule.duration_s: a whole number of seconds above 0")
    if duration is not None and stop is not None:
        raise InvalidInput("schedule: give stop_at or duration_s, not both")
    if days and start is None:
        raise InvalidInput("schedule.days: needs start_at (its time of day is used)")
    if start and stop and stop <= start:
        raise InvalidInput("schedule.stop_at: must be after start_at")
    if days and start and stop and stop - start >= dt.timedelta(days=7):
        raise InvalidInput("schedule.stop_at: a repeating occurrence must last less than a week")
    if start and not days and start < now - dt.timedelta(minutes=1) and (
            stop is None or stop <= now):
        raise InvalidInput("schedule.start_at: is in the past")
    return Schedule(start, stop, duration, days)


# ----------------------------------------------------------------------------- jobs

@dataclass(frozen=True)
class Job:
    id: int
    name: str
    videos: tuple[int, ...]
    targets: tuple[tuple[int, str], ...]  # (target id, desired state), in id order
    loop: int | None  # plays of the playlist; None = forever
    title: str | None
    category: str | None
    tags: tuple[str, ...]
    schedule: Schedule
    desired: str
    started_at: dt.datetime | None
    stop_deadline: dt.datetime | None
    last_fired_at: dt.datetime | None
    ended_reason: str | None
    created_at: dt.datetime

    @property
    def running(self) -> bool:
        return self.desired == "running"

    def target_desired(self, target_id: int) -> str | None:
        return dict(self.targets).get(target_id)

    def to_json(self, tz: dt.tzinfo, now: dt.datetime) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "videos": list(self.videos),
                "loop": "forever" if self.loop is None else self.loop,
                "title": self.title, "category": self.category, "tags": list(self.tags),
                "schedule": self.schedule.to_json(tz), "desired": self.desired,
                "started_at": _iso(self.started_at, tz),
                "stop_deadline": _iso(self.stop_deadline, tz),
                "next_start": _iso(self.schedule.next_start(now, tz), tz),
                "ended_reason": self.ended_reason, "created_at": _iso(self.created_at, tz)}


def _ids(value: Any, field: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{field}: a non-empty list of ids")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise InvalidInput(f"{field}: ids are whole numbers ≥ 1")
    return tuple(value)


def _loop(value: Any) -> int | None:
    if value in ("forever", None):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput("loop: \"forever\" or the number of plays (1 = play once)")
    return value


def _text(value: Any, field: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInput(f"{field}: text of at most {limit} characters")
    return value.strip() or None


def _tags(value: Any) -> tuple[str, ...]:
    if value in (None, []):
        return ()
    if not isinstance(value, list) or len(value) > 10:
        raise InvalidInput("tags: a list of at most 10 tags")
    for tag in value:
        if not isinstance(tag, str) or not TAG.match(tag):
            raise InvalidInput(f"tags: {tag!r} is not a Twitch tag (letters and digits only, "
                               "at most 25, no spaces)")
    return tuple(dict.fromkeys(value))


def parse_job(body: Any, tz: dt.tzinfo, now: dt.datetime, partial: bool = False) -> dict[str, Any]:
    """Validate a create request (name, videos, targets required) or an edit (any subset)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("send a JSON object with name, videos, targets")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    missing = [] if partial else [f for f in ("name", "videos", "targets") if f not in body]
    if missing:
        raise InvalidInput(f"{missing[0]}: required")
    checks = {"name": lambda v: _text(v, "name", 100), "videos": lambda v: _ids(v, "videos"),
              "targets": lambda v: tuple(dict.fromkeys(_ids(v, "targets"))), "loop": _loop,
              "title": lambda v: _text(v, "title", 140),
              "category": lambda v: _text(v, "category", 200), "tags": _tags,
              "schedule": lambda v: parse_schedule(v, tz, now)}
    fields = {k: checks[k](v) for k, v in body.items()}
    if "name" in body and not fields["name"]:
        raise InvalidInput("name: give the job a name")
    return fields


# ----------------------------------------------------------------------------- storage

_SELECT = """
SELECT j.*,
       ARRAY(SELECT video_id FROM stream_job_videos v WHERE v.job_id = j.id
             ORDER BY position) AS video_ids,
       ARRAY(SELECT target_id FROM stream_job_targets t WHERE t.job_id = j.id
             ORDER BY target_id) AS target_ids,
       ARRAY(SELECT desired FROM stream_job_targets t WHERE t.job_id = j.id
             ORDER BY target_id) AS target_desired
  FROM stream_jobs j"""


def _job(row: asyncpg.Record) -> Job:
    return Job(id=row["id"], name=row["name"], videos=tuple(row["video_ids"]),
               targets=tuple(zip(row["target_ids"], row["target_desired"])),
               loop=row["loop_count"], title=row["title"], category=row["category"],
               tags=tuple(row["tags"]),
               schedule=Schedule(row["start_at"], row["stop_at"], row["duration_s"],
                                 tuple(row["repeat_days"])),
               desired=row["desired"], started_at=row["started_at"],
               stop_deadline=row["stop_deadline"], last_fired_at=row["last_fired_at"],
               ended_reason=row["ended_reason"], created_at=row["created_at"])


class JobStore:
    """Jobs, their playlists and targets, runs and Helix results in PostgreSQL."""

    def __init__(self, db: Database, timezone: str) -> None:
        self.db = db
        self.tz = zoneinfo.ZoneInfo(timezone)

    async def list(self) -> list[Job]:
        return [_job(r) for r in await self.db.pool.fetch(_SELECT + " ORDER BY j.id")]

    async def get(self, job_id: int) -> Job:
        row = await self.db.pool.fetchrow(_SELECT + " WHERE j.id = $1", job_id)
        if row is None:
            raise NotFound(f"no job with id {job_id}")
        return _job(row)

    async def with_desired(self, desired: str) -> list[Job]:
        rows = await self.db.pool.fetch(_SELECT + " WHERE j.desired = $1 ORDER BY j.id", desired)
        return [_job(r) for r in rows]

    async def scheduled(self) -> list[Job]:
        rows = await self.db.pool.fetch(
            _SELECT + " WHERE j.start_at IS NOT NULL OR j.stop_deadline IS NOT NULL ORDER BY j.id")
        return [_job(r) for r in rows]

    async def create(self, body: Any) -> Job:
        fields = parse_job(body, self.tz, dt.datetime.now(dt.timezone.utc))
        schedule = fields.get("schedule", Schedule())
        async with self.db.pool.acquire() as conn, conn.transaction():
            job_id = await conn.fetchval(
                "INSERT INTO stream_jobs (name, loop_count, title, category, tags, start_at, "
                "stop_at, duration_s, repeat_days) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                "RETURNING id", fields["name"], fields.get("loop", 1), fields.get("title"),
                fields.get("category"), list(fields.get("tags", ())), schedule.start_at,
                schedule.stop_at, schedule.duration_s, list(schedule.days))
            await _write_items(conn, job_id, fields["videos"], fields["targets"])
        return await self.get(job_id)

    async def update(self, job_id: int, body: Any) -> Job:
        fields = parse_job(body, self.tz, dt.datetime.now(dt.timezone.utc), partial=True)
        job = await self.get(job_id)
        locked = sorted(set(fields) - EDITABLE_WHILE_RUNNING)
        if job.running and locked:
            raise Conflict(f"{locked[0]}: stop the job before changing its playlist, targets "
                           "or loop")
        schedule = fields.get("schedule", job.schedule)
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE stream_jobs SET name = $2, loop_count = $3, title = $4, category = $5, "
                "tags = $6, start_at = $7, stop_at = $8, duration_s = $9, repeat_days = $10, "
                "last_fired_at = CASE WHEN $11 THEN NULL ELSE last_fired_at END, "
                "updated_at = now() WHERE id = $1",
                job_id, fields.get("name", job.name),
                fields["loop"] if "loop" in fields else job.loop,
                fields["title"] if "title" in fields else job.title,
                fields["category"] if "category" in fields else job.category,
                list(fields.get("tags", job.tags)), schedule.start_at, schedule.stop_at,
                schedule.duration_s, list(schedule.days), "schedule" in fields)
            if "videos" in fields or "targets" in fields:
                await conn.execute("DELETE FROM stream_job_videos WHERE job_id = $1", job_id)
                await conn.execute("DELETE FROM stream_job_targets WHERE job_id = $1", job_id)
                await _write_items(conn, job_id, fields.get("videos", job.videos),
                                   fields.get("targets", [t for t, _ in job.targets]))
        return await self.get(job_id)

    async def delete(self, job_id: int) -> None:
        done = await self.db.pool.execute("DELETE FROM stream_jobs WHERE id = $1", job_id)
        if done.endswith(" 0"):
            raise NotFound(f"no job with id {job_id}")

    async def set_running(self, job_id: int, deadline: dt.datetime | None,
                          fired: dt.datetime | None = None) -> None:
        """Desired state 'running' for the job and every one of its targets."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE stream_jobs SET desired = 'running', started_at = now(), "
                "stop_deadline = $2, last_fired_at = COALESCE($3, last_fired_at), "
                "ended_reason = NULL, updated_at = now() WHERE id = $1", job_id, deadline, fired)
            await conn.execute("UPDATE stream_job_targets SET desired = 'running' "
                               "WHERE job_id = $1", job_id)

    async def set_stopped(self, job_id: int, reason: str) -> None:
        await self.db.pool.execute(
            "UPDATE stream_jobs SET desired = 'stopped', stop_deadline = NULL, ended_reason = $2,"
            " updated_at = now() WHERE id = $1", job_id, reason)

    async def mark_fired(self, job_id: int, fired: dt.datetime,
                         deadline: dt.datetime | None) -> None:
        """Remember an occurrence as handled; a run without a deadline gets the window's end."""
        await self.db.pool.execute(
            "UPDATE stream_jobs SET last_fired_at = $2, stop_deadline = CASE WHEN desired = "
            "'running' THEN COALESCE(stop_deadline, $3) END WHERE id = $1", job_id, fired,
            deadline)

    async def set_target_desired(self, job_id: int, target_id: int, desired: str) -> None:
        done = await self.db.pool.execute(
            "UPDATE stream_job_targets SET desired = $3 WHERE job_id = $1 AND target_id = $2",
            job_id, target_id, desired)
        if done.endswith(" 0"):
            raise NotFound(f"target {target_id} is not part of job {job_id}")

    # ----------------------------------------------------------------------------- history

    async def record_run(self, job_id: int, target_id: int, started: float, ended: float,
                         exit_code: int | None, failure_class: str | None, error: str | None,
                         stderr_tail: str) -> None:
        """One finished FFmpeg child (wall-clock seconds); stderr_tail already redacted."""
        await self.db.pool.execute(
            "INSERT INTO stream_runs (job_id, target_id, started_at, ended_at, exit_code, "
            "failure_class, error, stderr_tail) VALUES ($1, $2, to_timestamp($3), "
            "to_timestamp($4), $5, $6, $7, $8)", job_id, target_id, started, ended, exit_code,
            failure_class, error, stderr_tail)

    async def runs(self, job_id: int, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self.db.pool.fetch(
            "SELECT id, target_id, started_at, ended_at, exit_code, failure_class, error, "
            "stderr_tail FROM stream_runs WHERE job_id = $1 ORDER BY id DESC LIMIT $2",
            job_id, limit)
        return [{**dict(r), "started_at": _iso(r["started_at"], self.tz),
                 "ended_at": _iso(r["ended_at"], self.tz)} for r in rows]

    async def connected_channels(self, target_ids: list[int]) -> list[tuple[int, str]]:
        """(target id, channel id) of targets linked to a connected Twitch channel."""
        rows = await self.db.pool.fetch(
            "SELECT t.id, t.channel_id FROM stream_targets t JOIN twitch_channels c "
            "ON c.channel_id = t.channel_id WHERE t.id = ANY($1) AND c.status = 'connected' "
            "ORDER BY t.id", target_ids)
        return [(r["id"], r["channel_id"]) for r in rows]

    async def record_channel_update(self, job_id: int, channel_id: str,
                                    requested: dict[str, Any], ok: bool, detail: str) -> None:
        await self.db.pool.execute(
            "INSERT INTO stream_channel_updates (job_id, channel_id, requested, ok, detail) "
            "VALUES ($1, $2, $3, $4, $5)", job_id, channel_id, requested, ok, detail)

    async def channel_updates(self, job_id: int, limit: int = 10) -> list[dict[str, Any]]:
        rows = await self.db.pool.fetch(
            "SELECT channel_id, requested, ok, detail, at FROM stream_channel_updates "
            "WHERE job_id = $1 ORDER BY id DESC LIMIT $2", job_id, limit)
        return [{**dict(r), "at": _iso(r["at"], self.tz)} for r in rows]


async def _write_items(conn: asyncpg.Connection, job_id: int, videos: Any, targets: Any) -> None:
    try:
        await conn.executemany(
            "INSERT INTO stream_job_videos (job_id, position, video_id) VALUES ($1, $2, $3)",
            [(job_id, i, v) for i, v in enumerate(videos)])
    except asyncpg.ForeignKeyViolationError:
        raise InvalidInput("videos: one of the ids is not a video in the library") from None
    try:
        await conn.executemany(
            "INSERT INTO stream_job_targets (job_id, target_id) VALUES ($1, $2)",
            [(job_id, t) for t in targets])
    except asyncpg.ForeignKeyViolationError:
        raise InvalidInput("targets: one of the ids is not a target") from None
