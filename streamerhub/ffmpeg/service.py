"""Multistream, running: one TargetRunner per (job, target), the scheduler, restore after restart.

`Multistream` is built (without I/O) by app.py, started by `multistream_ctx` once the database and
the keyring are up, and stopped before them. Stopping the daemon stops every FFmpeg child but
keeps each job's desired state, so the next start brings running jobs back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import shutil
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine

from streamerhub.config import Settings
from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.errors import StreamerHubError
from streamerhub.ffmpeg.argv import EncodeProfile
from streamerhub.ffmpeg.binary import FFmpegBinary, find_ffmpeg
from streamerhub.ffmpeg.jobs import Job, JobStore
from streamerhub.ffmpeg.library import Library, probe_from_json
from streamerhub.ffmpeg.supervisor import (RestartPolicy, RunnerTiming, RunRecord, TargetRunner,
                                           TargetState, TargetStatus)
from streamerhub.ffmpeg.targets import (Conflict, InvalidInput, NotFound, Target, TargetStore,
                                        output_url)
from streamerhub.log import get_logger, redact

log = get_logger(__name__)

# app.py passes the bot's Helix "modify channel information" here: (channel id, {"title",
# "category" (a name or id, as the user typed it), "tags"}) → a short description of what was
# done; raise with a readable message when Twitch refused. ffmpeg/ must not import bot/.
ChannelUpdater = Callable[[str, dict[str, Any]], Awaitable[str]]
Publish = Callable[[dict[str, Any]], None]
STOP_BUDGET = 15.0  # seconds for every child to stop when the daemon stops
HELIX_TIMEOUT = 15.0
JOB_DIR = "jobs"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _wall_iso(seconds: float | None, tz: dt.tzinfo) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, tz).isoformat(timespec="seconds")


class Multistream:
    """Targets, library and jobs, and the FFmpeg children that carry them out."""

    def __init__(self, settings: Settings, *, publish: Publish | None = None,
                 channel_updater: ChannelUpdater | None = None,
                 timing: RunnerTiming = RunnerTiming(),
                 policy: RestartPolicy = RestartPolicy()) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.publish = publish or (lambda _event: None)
        self.channel_updater = channel_updater
        self.timing, self.policy = timing, policy
        self.ffmpeg: FFmpegBinary | None = None
        self._targets: TargetStore | None = None
        self._library: Library | None = None
        self._jobs: JobStore | None = None
        self._runners: dict[tuple[int, int], TargetRunner] = {}
        self._locks: collections.defaultdict[int, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # ----------------------------------------------------------------------------- parts

    @property
    def targets(self) -> TargetStore:
        return _ready(self._targets)

    @property
    def library(self) -> Library:
        return _ready(self._library)

    @property
    def jobs(self) -> JobStore:
        return _ready(self._jobs)

    @property
    def tz(self) -> dt.tzinfo:
        return self.jobs.tz

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self, db: Database, keyring: Keyring) -> None:
        """Open the stores, resume the preparation queue, restore running jobs, schedule."""
        self.ffmpeg = find_ffmpeg(self.settings.get("ffmpeg", "path") or None)
        log.info("ffmpeg_found", path=self.ffmpeg.path, version=self.ffmpeg.version,
                 source=self.ffmpeg.source)
        profile = EncodeProfile(self.settings.get("ffmpeg", "video_kbps"),
                                self.settings.get("ffmpeg", "audio_kbps"))
        self._targets = TargetStore(db, keyring)
        self._library = Library(db, self.data_dir, self.ffmpeg, profile=profile,
                                max_upload_bytes=self.settings.get("ffmpeg", "max_upload_bytes"),
                                publish=self.publish)
        self._jobs = JobStore(db, self.settings.get("general", "timezone"))
        await self.targets.register_all_keys()
        await self.library.start()
        await self.restore()
        self._scheduler = asyncio.create_task(self._schedule_loop(), name="job-scheduler")

    async def stop(self) -> None:
        """Stop the scheduler and every child (bounded), keeping desired states; idempotent."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.cancel()
            await asyncio.gather(scheduler, return_exceptions=True)
        runners = list(self._runners.values())
        if runners:
            done, pending = await asyncio.wait(
                [asyncio.ensure_future(r.stop()) for r in runners], timeout=STOP_BUDGET)
            if pending:
                log.error("ffmpeg_stop_abandoned", children=len(pending))
        if self._library is not None:
            await self._library.stop()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        log.info("multistream_stopped", children=len(runners))

    @contextlib.asynccontextmanager
    async def running(self, db: Database, keyring: Keyring) -> AsyncIterator[None]:
        """For app.py's cleanup context: start after the database and keys, stop before them."""
        await self.start(db, keyring)
        try:
            yield
        finally:
            await self.stop()

    async def restore(self) -> None:
        """Bring back the jobs that were running when the daemon last stopped (or died)."""
        now = _now()
        for job in await self.jobs.with_desired("running"):
            if job.stop_deadline and job.stop_deadline <= now:
                await self.jobs.set_stopped(job.id, "stop time passed while the daemon was down")
                continue
            try:
                await self._launch(job)
            except StreamerHubError as exc:
                log.error("job_restore_failed", job=job.id, error=redact(str(exc)))
                await self.jobs.set_stopped(job.id, f"could not restart: {exc}")
                continue
            log.info("job_restored", job=job.id, name=job.name)

    # ----------------------------------------------------------------------------- targets

    async def update_target(self, target_id: int, body: Any) -> Target:
        """Edit a target; a new URL, key or enabled flag applies to its running pushes at once."""
        target = await self.targets.update(target_id, body)
        if not {"url", "stream_key", "enabled"} & set(body):
            return target
        for job in await self.jobs.with_desired("running"):
            if job.target_desired(target_id) is None:
                continue
            async with self._locks[job.id]:
                runner = self._runners.get((job.id, target_id))
                if runner is not None:
                    await runner.stop()
                if job.target_desired(target_id) == "running" and target.enabled:
                    await self._start_runner(job, target)
        return target

    async def delete_target(self, target_id: int) -> None:
        await self.targets.delete(target_id)  # refused while a job uses it

    # ----------------------------------------------------------------------------- jobs

    async def create_job(self, body: Any) -> Job:
        job = await self.jobs.create(body)
        self._wake.set()
        return job

    async def update_job(self, job_id: int, body: Any) -> Job:
        job = await self.jobs.update(job_id, body)
        self._wake.set()
        return job

    async def delete_job(self, job_id: int) -> None:
        await self.stop_job(job_id, reason="deleted")
        await self.jobs.delete(job_id)
        self._runners = {k: r for k, r in self._runners.items() if k[0] != job_id}
        for folder in (self.data_dir / JOB_DIR).glob(f"{job_id}-*"):
            shutil.rmtree(folder, ignore_errors=True)  # the runners' playlist files

    async def start_job(self, job_id: int, *, deadline: dt.datetime | None = None,
                        fired: dt.datetime | None = None) -> Job:
        """Start every enabled target of a job (again); set linked Twitch channels' info."""
        async with self._locks[job_id]:
            job = await self.jobs.get(job_id)
            await self._check_startable(job)
            if fired is None:
                deadline = job.schedule.deadline_for_manual_start(_now())
            await self.jobs.set_running(job_id, deadline, fired)
            job = await self.jobs.get(job_id)
            await self._launch(job)
        log.info("job_started", job=job_id, name=job.name, scheduled=fired is not None)
        self._background(self._update_channels(job))
        self._wake.set()
        return job

    async def stop_job(self, job_id: int, reason: str = "stopped by user") -> Job:
        async with self._locks[job_id]:
            job = await self.jobs.get(job_id)
            await self.jobs.set_stopped(job_id, reason)
            await self._stop_runners([r for (j, _), r in self._runners.items() if j == job_id])
        log.info("job_stopped", job=job_id, reason=reason)
        return await self.jobs.get(job_id)

    async def start_job_target(self, job_id: int, target_id: int) -> Job:
        """Start (or retry) one target of a running job; the others are not touched."""
        async with self._locks[job_id]:
            job = await self.jobs.get(job_id)
            if not job.running:
                raise Conflict(f"job {job_id} is not running: start the job first")
            target = await self._member(job, target_id)
            if not target.enabled:
                raise Conflict(f"target {target_id} ({target.name}) is disabled: enable it first")
            await self.jobs.set_target_desired(job_id, target_id, "running")
            runner = self._runners.get((job_id, target_id))
            if runner is not None and runner.status.state is not TargetState.STOPPED:
                runner.retry()  # failed (circuit open) or in backoff: try now
            else:
                await self._start_runner(await self.jobs.get(job_id), target)
        return await self.jobs.get(job_id)

    async def stop_job_target(self, job_id: int, target_id: int) -> Job:
        async with self._locks[job_id]:
            job = await self.jobs.get(job_id)
            await self._member(job, target_id)
            await self.jobs.set_target_desired(job_id, target_id, "stopped")
            runner = self._runners.get((job_id, target_id))
            if runner is not None:
                await runner.stop()
        return await self.jobs.get(job_id)

    async def _member(self, job: Job, target_id: int) -> Target:
        if job.target_desired(target_id) is None:
            raise NotFound(f"target {target_id} is not part of job {job.id}")
        return await self.targets.get(target_id)

    async def _check_startable(self, job: Job) -> None:
        await self.library.ready_files(job.videos)
        targets = [await self.targets.get(t) for t, _ in job.targets]
        if not any(t.enabled for t in targets):
            raise InvalidInput(f"every target of job {job.id} is disabled: enable one first")

    # ----------------------------------------------------------------------------- children

    async def _launch(self, job: Job) -> None:
        for target_id, desired in job.targets:
            target = await self.targets.get(target_id)
            running = self._runners.get((job.id, target_id))
            if desired != "running" or not target.enabled:
                continue
            if running is None or running.status.state is TargetState.STOPPED:
                await self._start_runner(job, target)
            elif running.status.state is TargetState.FAILED:
                running.retry()  # starting the job again is the user's retry

    async def _start_runner(self, job: Job, target: Target) -> None:
        files = await self.library.ready_files(job.videos)
        videos = [await self.library.get(v) for v in job.videos]
        duration = sum(probe_from_json(v.prepared_probe or {}).duration or 0 for v in videos)
        key = await self.targets.open_key(target.id)
        old = self._runners.get((job.id, target.id))
        if old is not None:
            await old.stop()
        runner = TargetRunner(
            _ready(self.ffmpeg), output_url(target.url, key), files, key=key,
            name=f"{job.name}/{target.name}", loop=job.loop, playlist_duration=duration or None,
            work_dir=self.data_dir / JOB_DIR / f"{job.id}-{target.id}", timing=self.timing,
            policy=self.policy, on_status=lambda s: self._on_status(job.id, target.id, s),
            on_run_end=lambda r: self._on_run_end(job.id, target.id, r))
        self._runners[(job.id, target.id)] = runner
        runner.start()
        self._background(self._watch_end(job.id, runner))

    async def _stop_runners(self, runners: list[TargetRunner]) -> None:
        if runners:
            await asyncio.gather(*(r.stop() for r in runners))

    def _on_status(self, job_id: int, target_id: int, status: TargetStatus) -> None:
        self.publish({"type": "target", "job_id": job_id, "target_id": target_id,
                      **self._status_json(status)})

    def _on_run_end(self, job_id: int, target_id: int, record: RunRecord) -> None:
        self._background(self._record_run(job_id, target_id, record))

    async def _record_run(self, job_id: int, target_id: int, record: RunRecord) -> None:
        tail = redact("\n".join(record.stderr_tail))
        await self.jobs.record_run(job_id, target_id, record.started_at, record.ended_at,
                                   record.exit_code,
                                   record.failure.value if record.failure else None,
                                   redact(record.error) if record.error else None, tail)

    async def _watch_end(self, job_id: int, runner: TargetRunner) -> None:
        """When a finite playlist has played to its end on every target, the job is done."""
        await runner.wait()
        if not (runner.last_run and runner.last_run.finished):
            return
        mine = [r for (j, _), r in self._runners.items() if j == job_id]
        if all(r.status.state is TargetState.STOPPED for r in mine):
            job = await self.jobs.get(job_id)
            if job.running:
                await self.jobs.set_stopped(job_id, "playlist finished")
                log.info("job_finished", job=job_id)

    # ----------------------------------------------------------------------------- Twitch

    async def _update_channels(self, job: Job) -> None:
        wanted = {k: v for k, v in (("title", job.title), ("category", job.category),
                                    ("tags", list(job.tags) or None)) if v}
        if not wanted:
            return
        for target_id, channel_id in await self.jobs.connected_channels(
                [t for t, _ in job.targets]):
            ok, detail = await self._call_updater(channel_id, wanted)
            await self.jobs.record_channel_update(job.id, channel_id, wanted, ok, detail)
            log.info("channel_info_set", job=job.id, channel=channel_id, ok=ok, detail=detail)

    async def _call_updater(self, channel_id: str, wanted: dict[str, Any]) -> tuple[bool, str]:
        if self.channel_updater is None:
            return False, "no Twitch client in this daemon: title and category not set"
        try:
            return True, str(await asyncio.wait_for(self.channel_updater(channel_id, wanted),
                                                    HELIX_TIMEOUT))
        except asyncio.TimeoutError:
            return False, f"Twitch did not answer within {HELIX_TIMEOUT:g} s"
        except Exception as exc:  # the updater's failure is recorded, never fatal to the job
            return False, redact(str(exc)) or type(exc).__name__

    # ----------------------------------------------------------------------------- schedule

    async def _schedule_loop(self) -> None:
        while True:
            try:
                delay = await self.tick(_now())
            except (StreamerHubError, OSError) as exc:  # e.g. the database restarting
                log.warning("scheduler_tick_failed", error=redact(str(exc)))
                delay = 5.0
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def tick(self, now: dt.datetime) -> float:
        """Fire due starts and stops; return seconds until the next thing to do (≤ 30)."""
        upcoming = [now + dt.timedelta(seconds=30)]
        for job in await self.jobs.scheduled():
            await self._tick_job(job, now)
            job = await self.jobs.get(job.id)
            upcoming += [m for m in (job.stop_deadline, job.schedule.next_start(now, self.tz))
                         if m is not None]
        return max(0.2, min((m - now).total_seconds() for m in upcoming))

    async def _tick_job(self, job: Job, now: dt.datetime) -> None:
        if job.running and job.stop_deadline and now >= job.stop_deadline:
            await self.stop_job(job.id, reason="stop time reached")
            return
        occurrence = job.schedule.current(now, self.tz)
        if occurrence is None or (job.last_fired_at and job.last_fired_at >= occurrence[0]):
            return
        start, end = occurrence
        if job.running:  # started by hand inside the window: the window's end still applies
            await self.jobs.mark_fired(job.id, start, end)
            return
        try:
            await self.start_job(job.id, deadline=end, fired=start)
        except StreamerHubError as exc:
            log.error("scheduled_start_failed", job=job.id, error=redact(str(exc)))
            await self.jobs.mark_fired(job.id, start, None)
            await self.jobs.set_stopped(job.id, f"scheduled start failed: {exc}")

    # ----------------------------------------------------------------------------- reading

    async def job_json(self, job: Job, detail: bool = False) -> dict[str, Any]:
        """A job with the live state of each of its targets (and history when detail)."""
        now = _now()
        body = job.to_json(self.tz, now)
        body["targets"] = [await self._target_json(job, t, d) for t, d in job.targets]
        states = [t["state"] for t in body["targets"]]
        body["state"] = _job_state(job, states)
        if detail:
            body["runs"] = await self.jobs.runs(job.id)
            body["channel_updates"] = await self.jobs.channel_updates(job.id)
        return body

    async def _target_json(self, job: Job, target_id: int, desired: str) -> dict[str, Any]:
        target = await self.targets.get(target_id)
        runner = self._runners.get((job.id, target_id))
        status = runner.status if runner else TargetStatus(target.name, TargetState.STOPPED)
        state = status.state.value
        if runner is None and not target.enabled:
            state = "disabled"
        finished = bool(runner and runner.last_run and runner.last_run.finished
                        and status.state is TargetState.STOPPED)
        return {"target_id": target_id, "name": target.name, "enabled": target.enabled,
                "desired": desired, **self._status_json(status), "state": state,
                "finished": finished}

    def _status_json(self, s: TargetStatus) -> dict[str, Any]:
        tz = self.tz
        return {"state": s.state.value, "pid": s.pid, "run": s.run,
                "started_at": _wall_iso(s.started_at, tz),
                "live_since": _wall_iso(s.live_since, tz), "uptime_s": s.uptime,
                "out_time_s": s.out_time, "bitrate_kbps": s.bitrate_kbps, "fps": s.fps,
                "speed": s.speed, "drop_frames": s.drop_frames, "dup_frames": s.dup_frames,
                "restarts": s.restarts, "last_error": s.last_error and redact(s.last_error),
                "failure_class": s.failure.value if s.failure else None,
                "next_retry_at": _wall_iso(s.next_retry_at, tz),
                "next_retry_in_s": None if s.next_retry_at is None else
                max(0.0, round(s.next_retry_at - time.time(), 1))}

    # ----------------------------------------------------------------------------- plumbing

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("multistream_task_failed", error=redact(repr(task.exception())))


def _job_state(job: Job, states: list[str]) -> str:
    """One word for the dashboard: stopped, idle, live, degraded, starting or failing."""
    active = [s for s in states if s not in ("stopped", "disabled")]
    if not job.running:
        return "stopped"
    if not active:
        return "idle"
    if all(s == "live" for s in active):
        return "live"
    if "live" in active:
        return "degraded"
    return "starting" if all(s == "starting" for s in active) else "failing"


def _ready(part: Any) -> Any:
    if part is None:
        raise StreamerHubError("multistream is not started yet")
    return part
