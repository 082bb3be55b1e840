"""The job scheduler: fires scheduled starts and stops, waking early when a job changes."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Awaitable, Callable

from streamerhub.errors import StreamerHubError
from streamerhub.ffmpeg.jobs import Job
from streamerhub.ffmpeg.jobstore import JobStore
from streamerhub.log import get_logger, redact

log = get_logger(__name__)

StartJob = Callable[..., Awaitable[Job]]  # start_job(job_id, *, deadline=, fired=)
StopJob = Callable[..., Awaitable[Job]]  # stop_job(job_id, reason=)
HORIZON = 30.0  # seconds: look again at least this often (an edit may have been missed)
RETRY_AFTER = 5.0  # seconds after a failed tick (e.g. the database restarting)
# Within one zone a repeat's starts are at least 23 h apart (a DST day), so a start fired less
# than this before an occurrence is that occurrence. Once the streamer's zone changes (Settings)
# today's occurrence may move by the two zones' DST difference (≤ 2 h): still the same one, so a
# daily job does not run twice on the day of the change.
SAME_OCCURRENCE = dt.timedelta(hours=12)


def now_utc() -> dt.datetime:
    """The current moment, time-zone aware."""
    return dt.datetime.now(dt.timezone.utc)


class Scheduler:
    """Starts and stops jobs at their scheduled moments, through the service's own calls."""

    def __init__(self, jobs: JobStore, start_job: StartJob, stop_job: StopJob) -> None:
        self.jobs, self._start_job, self._stop_job = jobs, start_job, stop_job
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            try:
                delay = await self.tick(now_utc())
            except (StreamerHubError, OSError) as exc:
                log.warning("scheduler_tick_failed", error=redact(str(exc)))
                delay = RETRY_AFTER
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def tick(self, now: dt.datetime) -> float:
        """Fire due starts and stops; return seconds until the next thing to do (≤ 30)."""
        upcoming = [now + dt.timedelta(seconds=HORIZON)]
        for job in await self.jobs.scheduled():
            await self._tick_job(job, now)
            job = await self.jobs.get(job.id)
            upcoming += [
                m
                for m in (job.stop_deadline, job.schedule.next_start(now, self.jobs.tz))
                if m is not None
            ]
        return max(0.2, min((m - now).total_seconds() for m in upcoming))

    async def _tick_job(self, job: Job, now: dt.datetime) -> None:
        if job.running and job.stop_deadline and now >= job.stop_deadline:
            await self._stop_job(job.id, reason="stop time reached")
            return
        occurrence = job.schedule.current(now, self.jobs.tz)
        if occurrence is None or (
            job.last_fired_at and job.last_fired_at > occurrence[0] - SAME_OCCURRENCE
        ):
            return
        start, end = occurrence
        if job.running:  # started by hand inside the window: the window's end still applies
            await self.jobs.mark_fired(job.id, start, end)
            return
        await self._fire(job, start, end)

    async def _fire(self, job: Job, start: dt.datetime, end: dt.datetime | None) -> None:
        try:
            await self._start_job(job.id, deadline=end, fired=start)
        except StreamerHubError as exc:
            log.error("scheduled_start_failed", job=job.id, error=redact(str(exc)))
            await self.jobs.mark_fired(job.id, start, None)
            await self.jobs.set_stopped(job.id, f"scheduled start failed: {exc}")
