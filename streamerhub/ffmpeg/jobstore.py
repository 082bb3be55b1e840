"""Jobs in PostgreSQL: their playlists and targets, desired states, runs and Helix results."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Sequence

import asyncpg

from streamerhub.clock import StreamerClock
from streamerhub.db import REFERENCE_VIOLATIONS, Database
from streamerhub.errors import Conflict, InvalidInput, NotFound
from streamerhub.ffmpeg.jobs import EDITABLE_WHILE_RUNNING, Job, parse_job
from streamerhub.ffmpeg.linked import LinkedStore
from streamerhub.ffmpeg.schedule import Schedule, iso

_SELECT = """
SELECT j.*,
       ARRAY(SELECT video_id FROM stream_job_videos v WHERE v.job_id = j.id
             ORDER BY position) AS video_ids,
       ARRAY(SELECT target_id FROM stream_job_targets t WHERE t.job_id = j.id
             ORDER BY target_id) AS target_ids,
       ARRAY(SELECT desired FROM stream_job_targets t WHERE t.job_id = j.id
             ORDER BY target_id) AS target_desired
  FROM stream_jobs j"""

_INSERT = """
INSERT INTO stream_jobs (name, loop_count, title, category, tags, start_at, stop_at, duration_s,
                         repeat_days)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id"""

_UPDATE = """
UPDATE stream_jobs SET name = $2, loop_count = $3, title = $4, category = $5, tags = $6,
       start_at = $7, stop_at = $8, duration_s = $9, repeat_days = $10,
       last_fired_at = CASE WHEN $11 THEN NULL ELSE last_fired_at END, updated_at = now()
 WHERE id = $1"""


def _job(row: asyncpg.Record) -> Job:
    return Job(
        id=row["id"],
        name=row["name"],
        videos=tuple(row["video_ids"]),
        targets=tuple(zip(row["target_ids"], row["target_desired"], strict=True)),
        loop=row["loop_count"],
        title=row["title"],
        category=row["category"],
        tags=tuple(row["tags"]),
        schedule=Schedule(
            row["start_at"], row["stop_at"], row["duration_s"], tuple(row["repeat_days"])
        ),
        desired=row["desired"],
        started_at=row["started_at"],
        stop_deadline=row["stop_deadline"],
        last_fired_at=row["last_fired_at"],
        ended_reason=row["ended_reason"],
        created_at=row["created_at"],
    )


def _columns(fields: dict[str, Any], base: Job | None = None) -> list[Any]:
    """Values for name … repeat_days ($2 … $10 of _UPDATE): edited fields over `base`'s."""

    def pick(name: str, default: Any) -> Any:
        return fields[name] if name in fields else default

    schedule = pick("schedule", base.schedule if base else Schedule())
    return [
        pick("name", base and base.name),
        pick("loop", base.loop if base else 1),
        pick("title", base and base.title),
        pick("category", base and base.category),
        list(pick("tags", base.tags if base else ())),
        schedule.start_at,
        schedule.stop_at,
        schedule.duration_s,
        list(schedule.days),
    ]


class JobStore:
    """Jobs, their playlists and targets, runs and Helix results in PostgreSQL."""

    def __init__(self, db: Database, clock: StreamerClock) -> None:
        self.db, self.clock = db, clock

    @property
    def tz(self) -> dt.tzinfo:
        """The streamer's zone now (a change in Settings applies to the next call): schedules
        without an offset are read in it, times shown in it, daily repeats counted in it."""
        return self.clock.tz

    async def get(self, job_id: int) -> Job:
        """One job, or NotFound."""
        row = await self.db.pool.fetchrow(_SELECT + " WHERE j.id = $1", job_id)
        if row is None:
            raise NotFound(f"no job with id {job_id}")
        return _job(row)

    async def with_desired(self, desired: str) -> list[Job]:
        """The jobs whose desired state is `desired`."""
        rows = await self.db.pool.fetch(_SELECT + " WHERE j.desired = $1 ORDER BY j.id", desired)
        return [_job(r) for r in rows]

    async def scheduled(self) -> list[Job]:
        """The jobs the scheduler looks at: with a start time or a stop deadline."""
        rows = await self.db.pool.fetch(
            _SELECT + " WHERE j.start_at IS NOT NULL OR j.stop_deadline IS NOT NULL ORDER BY j.id"
        )
        return [_job(r) for r in rows]

    async def create(self, body: Any) -> Job:
        """Validate and store a new job (desired state: stopped)."""
        fields = parse_job(body, self.tz, dt.datetime.now(dt.timezone.utc))
        async with self.db.pool.acquire() as conn, conn.transaction():
            job_id = await conn.fetchval(_INSERT, *_columns(fields))
            await _write_items(conn, job_id, fields["videos"], fields["targets"])
        return await self.get(job_id)

    async def update(self, job_id: int, body: Any) -> Job:
        """Edit a job; its playlist, targets and loop only while it is stopped."""
        fields = parse_job(body, self.tz, dt.datetime.now(dt.timezone.utc), partial=True)
        job = await self.get(job_id)
        locked = sorted(set(fields) - EDITABLE_WHILE_RUNNING)
        if job.running and locked:
            raise Conflict(
                f"{locked[0]}: stop the job before changing its playlist, targets or loop"
            )
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(_UPDATE, job_id, *_columns(fields, job), "schedule" in fields)
            if "videos" in fields or "targets" in fields:
                await _replace_items(conn, job, fields)
        return await self.get(job_id)

    async def delete(self, job_id: int) -> None:
        """Delete a job and (by cascade) its items and history."""
        done = await self.db.pool.execute("DELETE FROM stream_jobs WHERE id = $1", job_id)
        if done.endswith(" 0"):
            raise NotFound(f"no job with id {job_id}")

    async def set_running(
        self, job_id: int, deadline: dt.datetime | None, fired: dt.datetime | None = None
    ) -> None:
        """Desired state 'running' for the job and every one of its targets."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE stream_jobs SET desired = 'running', started_at = now(), "
                "stop_deadline = $2, last_fired_at = COALESCE($3, last_fired_at), "
                "ended_reason = NULL, updated_at = now() WHERE id = $1",
                job_id,
                deadline,
                fired,
            )
            await conn.execute(
                "UPDATE stream_job_targets SET desired = 'running' WHERE job_id = $1", job_id
            )

    async def set_stopped(self, job_id: int, reason: str) -> None:
        """Desired state 'stopped', with the reason shown on the dashboard."""
        await self.db.pool.execute(
            "UPDATE stream_jobs SET desired = 'stopped', stop_deadline = NULL, ended_reason = $2,"
            " updated_at = now() WHERE id = $1",
            job_id,
            reason,
        )

    async def mark_fired(
        self, job_id: int, fired: dt.datetime, deadline: dt.datetime | None
    ) -> None:
        """Remember an occurrence as handled; a run without a deadline gets the window's end."""
        await self.db.pool.execute(
            "UPDATE stream_jobs SET last_fired_at = $2, stop_deadline = CASE WHEN desired = "
            "'running' THEN COALESCE(stop_deadline, $3) END WHERE id = $1",
            job_id,
            fired,
            deadline,
        )

    async def set_target_desired(self, job_id: int, target_id: int, desired: str) -> None:
        """Desired state of one target of a job."""
        done = await self.db.pool.execute(
            "UPDATE stream_job_targets SET desired = $3 WHERE job_id = $1 AND target_id = $2",
            job_id,
            target_id,
            desired,
        )
        if done.endswith(" 0"):
            raise NotFound(f"target {target_id} is not part of job {job_id}")

    # ----------------------------------------------------------------------------- history

    async def record_run(
        self,
        job_id: int,
        target_id: int,
        started: float,
        ended: float,
        exit_code: int | None,
        failure_class: str | None,
        error: str | None,
        stderr_tail: str,
    ) -> None:
        """One finished FFmpeg child (wall-clock seconds); stderr_tail already redacted."""
        await self.db.pool.execute(
            "INSERT INTO stream_runs (job_id, target_id, started_at, ended_at, exit_code, "
            "failure_class, error, stderr_tail) VALUES ($1, $2, to_timestamp($3), "
            "to_timestamp($4), $5, $6, $7, $8)",
            job_id,
            target_id,
            started,
            ended,
            exit_code,
            failure_class,
            error,
            stderr_tail,
        )

    async def runs(self, job_id: int, limit: int = 20) -> list[dict[str, Any]]:
        """The job's latest finished runs, newest first."""
        rows = await self.db.pool.fetch(
            "SELECT id, target_id, started_at, ended_at, exit_code, failure_class, error, "
            "stderr_tail FROM stream_runs WHERE job_id = $1 ORDER BY id DESC LIMIT $2",
            job_id,
            limit,
        )
        return [
            {
                **dict(r),
                "started_at": iso(r["started_at"], self.tz),
                "ended_at": iso(r["ended_at"], self.tz),
            }
            for r in rows
        ]

    async def linked_channels(self, target_ids: Sequence[int]) -> Sequence[tuple[int, str]]:
        """(target id, channel id) of targets linked to a Twitch channel; whether that channel
        is connected is the bot's to say (ffmpeg/channels.py asks it)."""
        rows = await self.db.pool.fetch(
            "SELECT id, channel_id FROM stream_targets WHERE id = ANY($1) "
            "AND channel_id IS NOT NULL ORDER BY id",
            target_ids,
        )
        return [(r["id"], r["channel_id"]) for r in rows]

    async def record_channel_update(
        self, job_id: int, channel_id: str, requested: dict[str, Any], ok: bool, detail: str
    ) -> None:
        """What a job start asked of a Twitch channel and how it went."""
        await self.db.pool.execute(
            "INSERT INTO stream_channel_updates (job_id, channel_id, requested, ok, detail) "
            "VALUES ($1, $2, $3, $4, $5)",
            job_id,
            channel_id,
            requested,
            ok,
            detail,
        )

    async def channel_updates(self, job_id: int, limit: int = 10) -> list[dict[str, Any]]:
        """The job's latest Twitch channel updates, newest first."""
        rows = await self.db.pool.fetch(
            "SELECT channel_id, requested, ok, detail, at FROM stream_channel_updates "
            "WHERE job_id = $1 ORDER BY id DESC LIMIT $2",
            job_id,
            limit,
        )
        return [{**dict(r), "at": iso(r["at"], self.tz)} for r in rows]

    async def channel_warnings(self, job_id: int) -> list[str]:
        """The latest update of each channel of the job, where it failed: what the user must
        see (a missing scope, a refused category), not only the API's detail view."""
        rows = await self.db.pool.fetch(
            "SELECT DISTINCT ON (channel_id) channel_id, ok, detail FROM stream_channel_updates "
            "WHERE job_id = $1 ORDER BY channel_id, id DESC",
            job_id,
        )
        return [
            f"title/category not set on Twitch channel {r['channel_id']}: {r['detail']}"
            for r in rows
            if not r["ok"]
        ]

    # Last in the class: a method named `list` shadows the builtin in annotations after it.
    async def list(self) -> list[Job]:
        """Every job, oldest first."""
        return [_job(r) for r in await self.db.pool.fetch(_SELECT + " ORDER BY j.id")]


async def _replace_items(conn: asyncpg.Connection, job: Job, fields: dict[str, Any]) -> None:
    await conn.execute("DELETE FROM stream_job_videos WHERE job_id = $1", job.id)
    await conn.execute("DELETE FROM stream_job_targets WHERE job_id = $1", job.id)
    await _write_items(
        conn,
        job.id,
        fields.get("videos", job.videos),
        fields.get("targets", [t for t, _ in job.targets]),
    )


async def _write_items(conn: asyncpg.Connection, job_id: int, videos: Any, targets: Any) -> None:
    try:
        await conn.executemany(
            "INSERT INTO stream_job_videos (job_id, position, video_id) VALUES ($1, $2, $3)",
            [(job_id, i, v) for i, v in enumerate(videos)],
        )
    except REFERENCE_VIOLATIONS:
        raise InvalidInput("videos: one of the ids is not a video in the library") from None
    try:
        await conn.executemany(
            "INSERT INTO stream_job_targets (job_id, target_id) VALUES ($1, $2)",
            [(job_id, t) for t in targets],
        )
    except REFERENCE_VIOLATIONS:
        raise InvalidInput("targets: one of the ids is not a target") from None


# ----------------------------------------------------------------------------- runs by time
# For the Streams page (web/services.py `MultistreamHistory`): which targets were up, restarted
# or down during a Twitch stream.

RUNS_BETWEEN = """
SELECT j.name AS job, t.name AS target, r.started_at, r.ended_at, r.failure_class, r.error,
       row_number() OVER (PARTITION BY r.job_id, r.target_id ORDER BY r.started_at) AS nth
  FROM stream_runs r
  JOIN stream_targets t ON t.id = r.target_id
  JOIN stream_jobs j ON j.id = r.job_id
 WHERE r.started_at < $2 AND coalesce(r.ended_at, now()) > $1
 ORDER BY r.started_at"""


@dataclass(frozen=True)
class RunSummary:
    """One FFmpeg run of a job to a target; `nth` is 1 for the first run of that pair."""

    job: str
    target: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    failure_class: str | None
    error: str | None
    nth: int


@dataclass(frozen=True)
class LinkedFigures:
    """A linked account's figures in a time window (web/services.py LinkedAccountFigures)."""

    target: str
    login: str | None
    display_name: str | None
    streams_pushed: int
    hours_on_air: float
    hours_confirmed_live: float
    peak_viewers: int | None
    avg_viewers: float | None


class RunHistory:
    """Multistream runs by time, read from the job store's tables; linked accounts' figures
    by time, read through LinkedStore. `linked_gap_s` is the longest pause between two
    liveness samples that still counts as one push (the service's own rule)."""

    def __init__(self, db: Database, linked_gap_s: float) -> None:
        self.db = db
        self.linked_gap_s = linked_gap_s

    async def linked_between(self, start: dt.datetime, end: dt.datetime) -> list[LinkedFigures]:
        """Each linked account pushed to in [start, end), its figures from inside it only."""
        rows = await LinkedStore(self.db).window_stats(start, end, self.linked_gap_s)
        return [
            LinkedFigures(
                r["target_name"] or f"target {r['target_id']}",
                r["login"],
                r["display_name"],
                r["streams_pushed"],
                r["hours_on_air"],
                r["hours_confirmed_live"],
                r["peak_viewers"],
                r["avg_viewers"],
            )
            for r in rows
        ]

    async def runs_between(self, start: dt.datetime, end: dt.datetime) -> list[RunSummary]:
        """Runs that overlap [start, end) (a running one counts until now), by start time."""
        rows = await self.db.pool.fetch(RUNS_BETWEEN, start, end)
        return [
            RunSummary(
                r["job"],
                r["target"],
                r["started_at"],
                r["ended_at"],
                r["failure_class"],
                r["error"],
                r["nth"],
            )
            for r in rows
        ]
