"""One clock for the whole daemon (issue 16): the time zone and day start chosen in the browser
(setup, Settings) are the ones job schedules, the daily backup, exports and the CLI use, from the
moment they are chosen and after a restart; config.toml's only while nothing is chosen."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from conftest import make_settings
from test_export import read_csv
from web_support import add_channel, csrf_of, dashboard, notification, store_events

from streamerhub.app import BACKUPS, CLOCK, MULTISTREAM
from streamerhub.backup.archive import Backup, file_name
from streamerhub.backup.service import BackupService
from streamerhub.clock import Clock, StreamerClock
from streamerhub.commands.main import main
from streamerhub.ffmpeg.jobs import Job
from streamerhub.ffmpeg.schedule import DAYS, Schedule
from streamerhub.ffmpeg.scheduler import Scheduler
from streamerhub.web.auth import api_token

UTC = dt.timezone.utc
NEW_YORK = "America/New_York"
# 23:00 on 10 March in New York (EDT since the 8th): the 10th there, the 11th in UTC.
LATE = dt.datetime(2026, 3, 11, 3, 0, tzinfo=UTC)
CONFIG = '[general]\ntimezone = "UTC"\n[backup]\nschedule = "03:30"\n'


def recent_backup(folder: Path, now: dt.datetime) -> None:
    """A verified daily backup three hours old: the next one waits for the scheduled time."""
    folder.mkdir(parents=True, exist_ok=True)
    at = now - dt.timedelta(hours=3)
    backup = Backup(folder / file_name(at, "daily"), at, "daily", 1, verified_at=at)
    backup.path.touch()
    backup.write_manifest()


async def seed_library(db: Any) -> int:
    """A ready video (jobs only need its row to be created and scheduled)."""
    async with db.pool.acquire() as conn:
        video: int = await conn.fetchval(
            "INSERT INTO videos (label, source, path, size_bytes, status, video_kbps, audio_kbps) "
            "VALUES ('clip.mp4', 'import', '/nowhere/clip.mp4', 1, 'ready', 2500, 160) "
            "RETURNING id"
        )
    return video


async def test_the_zone_chosen_in_settings_is_the_one_of_jobs_backups_and_exports(
    tmp_path: Path, db_url: str
) -> None:
    """config.toml says UTC; the streamer picks New York in Settings. At once, without a restart,
    and again after one: a job's start without an offset is read and shown in New York, a daily
    repeat keeps its New York time of day across DST, the daily backup runs at 03:30 New York
    time, and an export's days start at 06:00 New York time."""
    async with dashboard(tmp_path, db_url, CONFIG) as dash:
        await dash.create_owner()
        assert (await dash.login("owner")).status == 303
        api = {"Authorization": f"Bearer {api_token(dash.settings.data_dir)}"}
        await add_channel(dash.db)
        await store_events(
            dash.db,
            dash.settings.data_dir,
            [notification("channel.follow", LATE, user_login="late_fan", user_name="Late_Fan")],
        )
        video = await seed_library(dash.db)
        made = await dash.client.post(
            "/api/v1/targets",
            headers=api,
            json={"name": "t", "url": "rtmp://127.0.0.1:9/live", "stream_key": "zone-key-0001"},
        )
        assert made.status < 300, await made.text()
        target = (await made.json())["id"]
        backups: BackupService = dash.app[BACKUPS]
        now = dt.datetime(2026, 7, 1, 12, tzinfo=UTC)
        recent_backup(backups.folder, now)
        assert backups.next_run(now) == dt.datetime(2026, 7, 2, 3, 30, tzinfo=UTC)  # config's

        async def create_job(name: str) -> dict[str, Any]:
            body = {
                "name": name,
                "videos": [video],
                "targets": [target],
                "schedule": {"start_at": "2030-01-15T20:00", "days": list(DAYS)},
            }
            resp = await dash.client.post("/api/v1/jobs", headers=api, json=body)
            assert resp.status < 300, await resp.text()
            return cast(dict[str, Any], await resp.json())

        before = await create_job("made under config.toml's UTC")
        assert before["schedule"]["start_at"] == "2030-01-15T20:00:00+00:00"

        settings = await (await dash.client.get("/settings")).text()
        changed = await dash.client.post(
            "/settings/clock",
            data={"csrf_token": csrf_of(settings), "timezone": NEW_YORK, "day_start_hour": "6"},
        )
        assert changed.status == 200 and f"Times now show in {NEW_YORK}" in await changed.text()

        # Jobs: read and shown in New York, and the job made before is shown there too.
        after = await create_job("made in New York")
        assert after["schedule"]["start_at"] == "2030-01-15T20:00:00-05:00"
        stored = await dash.db.pool.fetchval(
            "SELECT start_at FROM stream_jobs WHERE id = $1", after["id"]
        )
        assert stored == dt.datetime(2030, 1, 16, 1, 0, tzinfo=UTC)
        shown = await (await dash.client.get(f"/api/v1/jobs/{before['id']}", headers=api)).json()
        assert shown["schedule"]["start_at"] == "2030-01-15T15:00:00-05:00"
        # The daily repeat counts its days in New York: 20:00 there in summer too (EDT).
        ms = dash.app[MULTISTREAM]
        job = await ms.jobs.get(after["id"])
        assert job.schedule.next_start(dt.datetime(2030, 7, 1, tzinfo=UTC), ms.tz) == (
            dt.datetime(2030, 7, 2, 0, 0, tzinfo=UTC)
        )

        # The daily backup: 03:30 in New York (EDT), i.e. 07:30 UTC.
        assert backups.next_run(now) == dt.datetime(2026, 7, 2, 7, 30, tzinfo=UTC)

        # Exports: the 10th in New York (from 06:00) holds the follow at 23:00 there.
        resp = await dash.client.get(
            "/api/v1/export/events?from=2026-03-10&to=2026-03-10&format=json", headers=api
        )
        assert resp.status == 200, await resp.text()
        rows = json.loads(await resp.read())
        assert [r["occurred_at_local"] for r in rows] == ["2026-03-10T23:00:00-04:00"]
        resp = await dash.client.get(
            "/api/v1/export/events?from=2026-03-11&to=2026-03-11&format=json", headers=api
        )
        assert json.loads(await resp.read()) == []

    async with dashboard(tmp_path, db_url, CONFIG) as again:  # a restart keeps the choice
        assert again.app[CLOCK].current == Clock(NEW_YORK, 6)
        assert again.app[BACKUPS].next_run(now) == dt.datetime(2026, 7, 2, 7, 30, tzinfo=UTC)
        shown = await (await again.client.get(f"/api/v1/jobs/{before['id']}", headers=api)).json()
        assert shown["schedule"]["start_at"] == "2030-01-15T15:00:00-05:00"


def test_the_cli_export_uses_the_zone_chosen_in_settings(
    db_url: str, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    async def seed() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(
                "INSERT INTO twitch_channels (channel_id, login, display_name) "
                "VALUES ('1000', 'streamer', 'Streamer')"
            )
            await conn.execute(
                "INSERT INTO web_preferences (id, timezone, day_start_hour) VALUES (true, $1, 6)",
                NEW_YORK,
            )
        finally:
            await conn.close()
        from streamerhub.db import Database, create_pool

        db = Database(await create_pool(db_url, 2), db_url)
        try:
            await store_events(db, tmp_path / "data", [notification("channel.follow", LATE)])
        finally:
            await db.close()

    asyncio.run(seed())
    capsysbinary.readouterr()  # the store's log lines
    config = tmp_path / "config.toml"
    config.write_text(
        f'[general]\ntimezone = "UTC"\n[database]\nurl = "{db_url}"\n'
        'connect_timeout = 5.0\n[log]\nlevel = "warning"\n'
    )
    base = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    day = ["--from", "2026-03-10", "--to", "2026-03-10"]
    assert main(["export", "events", *base, *day]) == 0
    rows = read_csv(capsysbinary.readouterr().out)
    assert [r["occurred_at_local"] for r in rows] == ["2026-03-10T23:00:00-04:00"]


def test_the_backup_schedule_plans_again_when_the_zone_changes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CONFIG)
    clock = StreamerClock.from_settings(settings)
    backups = BackupService(settings, None, embedded=True, clock=clock)  # type: ignore[arg-type]
    recent_backup(backups.folder, dt.datetime.now(UTC))
    planned: list[dt.datetime | None] = []
    next_run = backups.next_run

    def recording(now: dt.datetime) -> dt.datetime | None:
        planned.append(at := next_run(now))
        return at

    backups.next_run = recording  # type: ignore[method-assign]

    async def scenario() -> None:
        task = asyncio.create_task(backups.run_schedule())
        try:
            while not planned:
                await asyncio.sleep(0.01)
            clock.set(Clock("Asia/Tokyo", 0))  # 9 hours ahead of UTC: 03:30 there is 18:30 UTC
            while len(planned) < 2:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    first, second = planned[:2]
    assert first is not None and second is not None
    assert (first.hour, first.minute) == (3, 30) and (second.hour, second.minute) == (18, 30)


# ----------------------------------------------------------------------------- the scheduler


class OneJob:
    """JobStore as far as the scheduler uses it, over one job in memory."""

    def __init__(self, job: Job, clock: StreamerClock) -> None:
        self.job, self.clock = job, clock

    @property
    def tz(self) -> dt.tzinfo:
        return self.clock.tz

    async def scheduled(self) -> list[Job]:
        return [self.job]

    async def get(self, _job_id: int) -> Job:
        return self.job

    async def mark_fired(self, _job_id: int, start: dt.datetime, end: Any) -> None:
        self.job = dataclasses.replace(self.job, last_fired_at=start, stop_deadline=end)

    async def set_stopped(self, _job_id: int, reason: str) -> None:
        self.job = dataclasses.replace(self.job, desired="stopped", ended_reason=reason)


def test_a_daily_job_follows_the_new_zone_and_never_starts_twice_on_the_day_of_the_change() -> None:
    # Every day at 20:00, set in January under UTC (20:00 in London too, GMT).
    start = dt.datetime(2026, 1, 5, 20, 0, tzinfo=UTC)
    job = Job(
        1, "daily", (1,), ((1, "stopped"),), 1, None, None, (),
        Schedule(start_at=start, duration_s=60, days=(1, 2, 3, 4, 5, 6, 7)),
        "stopped", None, None, None, None, start,
    )  # fmt: skip
    clock = StreamerClock(Clock("UTC", 0))
    jobs = OneJob(job, clock)
    starts: list[dt.datetime] = []

    async def start_job(_job_id: int, *, deadline: Any, fired: dt.datetime) -> Job:
        starts.append(fired)
        await jobs.mark_fired(1, fired, None)
        return jobs.job

    async def stop_job(_job_id: int, reason: str) -> Job:
        return jobs.job

    scheduler = Scheduler(cast(Any, jobs), start_job, stop_job)
    july = dt.datetime(2026, 7, 1, tzinfo=UTC)

    async def scenario() -> None:
        # Under UTC the summer start is 20:00 UTC; the streamer picks London: 20:00 BST is
        # 19:00 UTC, and the scheduler's next wake-up says so.
        assert await scheduler.tick(july.replace(hour=18, minute=59, second=50)) == 30.0
        clock.set(Clock("Europe/London", 0))
        assert await scheduler.tick(july.replace(hour=18, minute=59, second=50)) == 10.0
        await scheduler.tick(july.replace(hour=19, minute=0, second=5))
        assert starts == [july.replace(hour=19)]
        # Back to UTC the same evening: today's start (20:00 UTC) is the one already made.
        clock.set(None)
        await scheduler.tick(july.replace(hour=20, minute=0, second=5))
        assert starts == [july.replace(hour=19)]
        # The next day starts at 20:00 UTC.
        await scheduler.tick(july.replace(day=2, hour=20, minute=0, second=5))
        assert starts == [july.replace(hour=19), july.replace(day=2, hour=20)]

    asyncio.run(scenario())


def test_the_clock_tells_its_listeners_only_of_a_change_and_survives_a_failing_one() -> None:
    clock = StreamerClock(Clock("UTC", 0))
    heard: list[Clock] = []

    def broken(_clock: Clock) -> None:
        raise RuntimeError("a bug in one part")

    clock.listeners += [broken, heard.append]
    clock.set(None)  # config.toml's already: nothing to tell
    clock.set(Clock("UTC", 0))  # the same clock, now chosen in the browser
    assert heard == [] and clock.chosen
    clock.set(Clock(NEW_YORK, 6))
    assert heard == [Clock(NEW_YORK, 6)] and clock.timezone == NEW_YORK
    assert clock.tz.key == NEW_YORK and clock.day_start_hour == 6
    clock.set(None)
    assert heard[-1] == Clock("UTC", 0) and not clock.chosen
