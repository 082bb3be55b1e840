"""Multistream, running: one TargetRunner per (job, target), the scheduler, restore after restart.

`Multistream` is built (without I/O) by app.py, started by `multistream_ctx` once the database and
the keyring are up, and stopped before them. Stopping the daemon stops every FFmpeg child but
keeps each job's desired state, so the next start brings running jobs back.

With several daemons on one database, only the holder of the multistream lease (ffmpeg/lease.py)
restores, schedules and runs jobs; the others refuse to start or stop them (naming the daemon
that runs them) and take over, restoring every running job, once the holder's lease lapses. A
holder that cannot renew its lease stops its children within half of it (the fence).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import shutil
from dataclasses import replace
from typing import Any, AsyncIterator, Callable, TypeVar

from streamerhub.clock import Clock, StreamerClock
from streamerhub.config import Settings
from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.errors import Conflict, InvalidInput, NotFound, StreamerHubError
from streamerhub.ffmpeg import account_export
from streamerhub.ffmpeg.argv import DEFAULT_PROFILE, EncodeProfile
from streamerhub.ffmpeg.binary import FFmpegBinary, find_ffmpeg
from streamerhub.ffmpeg.channels import ChannelUpdater, update_channels
from streamerhub.ffmpeg.jobs import Job
from streamerhub.ffmpeg.jobstore import JobStore
from streamerhub.ffmpeg.keytest import KeyTests, in_use, masker, try_publish
from streamerhub.ffmpeg.lease import Lease, holder_name
from streamerhub.ffmpeg.library import Library, probe_from_json
from streamerhub.ffmpeg.linked import (
    LinkedStore,
    StreamKeyUnavailable,
    TwitchAccounts,
    TwitchUser,
    parse_link,
)
from streamerhub.ffmpeg.liveness import Liveness, LivenessMonitor
from streamerhub.ffmpeg.policy import (
    DEFAULT_POLICY,
    DEFAULT_TIMING,
    MAX_SEND_BUFFER,
    RestartPolicy,
    RunnerTiming,
    send_buffer_for,
)
from streamerhub.ffmpeg.presets import PRESETS, platform_of, requirement_problems
from streamerhub.ffmpeg.scheduler import Scheduler, now_utc
from streamerhub.ffmpeg.status import LiveLog, RunRecord, TargetState, TargetStatus
from streamerhub.ffmpeg.supervisor import TargetRunner
from streamerhub.ffmpeg.targets import (
    Target,
    TargetStore,
    output_url,
    shown_url,
)
from streamerhub.ffmpeg.tasks import BackgroundTasks
from streamerhub.ffmpeg.view import job_state, log_json, status_json
from streamerhub.log import get_logger, redact

log = get_logger(__name__)
T = TypeVar("T")

Publish = Callable[[dict[str, Any]], None]
STOP_BUDGET = 15.0  # seconds for every child to stop when the daemon stops
JOB_DIR = "jobs"
__all__ = ["ChannelUpdater", "Multistream", "Publish"]


class Multistream:
    """Targets, library and jobs, and the FFmpeg children that carry them out."""

    def __init__(
        self,
        settings: Settings,
        *,
        publish: Publish | None = None,
        channel_updater: ChannelUpdater | None = None,
        timing: RunnerTiming = DEFAULT_TIMING,
        policy: RestartPolicy = DEFAULT_POLICY,
        clock: StreamerClock | None = None,
    ) -> None:
        self.settings = settings
        # The streamer's zone (streamerhub/clock.py): config.toml's unless app.py hands over the
        # daemon's clock, which follows the choice made in Settings.
        self.clock = clock or StreamerClock.from_settings(settings)
        self.clock.listeners.append(self._on_clock)
        self.data_dir = settings.data_dir
        self.publish = publish or (lambda _event: None)
        self.channel_updater = channel_updater
        # Twitch's word on linked accounts (bot/accounts.py, wired by app.py); None: no Twitch.
        self.accounts: TwitchAccounts | None = None
        self._linked: LinkedStore | None = None
        self._liveness: LivenessMonitor | None = None
        self._liveness_task: asyncio.Task[None] | None = None
        self.timing, self.policy = timing, policy
        self.ffmpeg: FFmpegBinary | None = None
        self._targets: TargetStore | None = None
        self._library: Library | None = None
        self._jobs: JobStore | None = None
        self._schedule: Scheduler | None = None
        self._runners: dict[tuple[int, int], TargetRunner] = {}
        self._locks: collections.defaultdict[int, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        self._tasks = BackgroundTasks()
        self._key_tests = KeyTests()
        self._scheduler: asyncio.Task[None] | None = None
        self._lease: Lease | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._active = False  # this daemon holds the lease and runs the jobs

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
        """The streamer's zone now: job schedules, status and exports are in it."""
        return self.clock.tz

    def _on_clock(self, clock: Clock) -> None:
        # Times without an offset are read in the new zone from the next call on (JobStore asks
        # the clock each time); the scheduler looks again now, so a daily repeat's next start
        # is counted in the new zone rather than at a moment planned in the old one.
        log.info("multistream_clock_changed", timezone=clock.timezone)
        self._nudge_scheduler()

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self, db: Database, keyring: Keyring) -> None:
        """Open the stores, resume the preparation queue, restore running jobs, schedule."""
        self.ffmpeg = find_ffmpeg(self.settings.ffmpeg.path or None)
        log.info(
            "ffmpeg_found",
            path=self.ffmpeg.path,
            version=self.ffmpeg.version,
            source=self.ffmpeg.source,
        )
        self._open_stores(db, keyring, self.ffmpeg)
        await self.targets.register_all_keys()
        await self.library.start()
        self._lease = Lease(
            db, holder_name(self.data_dir), self.settings.leases.multistream_seconds
        )
        await self._hold_lease()
        self._lease_task = asyncio.create_task(self._keep_lease(), name="multistream-lease")

    # ----------------------------------------------------------------------------- lease

    async def _keep_lease(self) -> None:
        """Renew the lease forever; run the jobs while it is ours, stop them when it is not."""
        lease = _ready(self._lease)
        while True:
            wait = lease.renew_every
            if self._active:
                wait = max(0.0, min(wait, lease.fenced_in()))
            await asyncio.sleep(wait)
            try:
                await self._hold_lease()
            except Exception:  # the loop that fences must outlive any failure
                log.exception("multistream_lease_loop_failed")

    async def _hold_lease(self) -> None:
        lease = _ready(self._lease)
        try:
            ours = await lease.renew()
            why = "another daemon holds the multistream lease"
        except Exception as exc:  # noqa: BLE001 - unreachable database: the fence decides
            log.warning(
                "multistream_lease_renew_failed", error=redact(f"{type(exc).__name__}: {exc}")
            )
            ours, why = lease.held(), "the database did not renew the multistream lease"
        if ours and not self._active:
            await self._activate()
        elif not ours and self._active:
            await self._deactivate(why)

    async def _activate(self) -> None:
        """The lease is ours: bring back the running jobs, schedule."""
        self._active = True
        lease = _ready(self._lease)
        log.info("multistream_active", holder=lease.holder, generation=lease.generation)
        try:
            await self.restore()
        except Exception as exc:  # noqa: BLE001 - e.g. the database went away meanwhile
            log.warning("multistream_restore_failed", error=redact(str(exc)))
            lease.drop()
            await self._deactivate("restoring the running jobs failed")
            return
        self._scheduler = asyncio.create_task(_ready(self._schedule).run(), name="job-scheduler")
        self._liveness_task = asyncio.create_task(
            _ready(self._liveness).run(), name="linked-liveness"
        )

    async def _deactivate(self, why: str) -> None:
        """Fenced: stop scheduling and every child now; the desired states stay for the next
        holder (or for this daemon when the lease comes back)."""
        self._active = False
        await self._stop_tasks()
        runners, self._runners = list(self._runners.values()), {}
        await _stop_abandoning(runners, STOP_BUDGET)
        log.warning("multistream_fenced", reason=why, children=len(runners))

    async def _stop_tasks(self) -> None:
        for task in (self._scheduler, self._liveness_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._scheduler = self._liveness_task = None

    async def _check_holder(self) -> None:
        """Jobs are started and stopped by the lease holder only: say which daemon that is."""
        if self._active:
            return
        holder = await _ready(self._lease).current_holder()
        raise Conflict(
            f"another daemon runs the multistream jobs ({holder or 'taking over now'}): start "
            "and stop jobs on its dashboard or CLI; this daemon takes them over if it stops"
        )

    def _open_stores(self, db: Database, keyring: Keyring, ffmpeg: FFmpegBinary) -> None:
        video_kbps = self.settings.ffmpeg.video_kbps or DEFAULT_PROFILE.video_kbps
        profile = EncodeProfile(video_kbps, self.settings.ffmpeg.audio_kbps)
        self._targets = TargetStore(db, keyring)
        self._library = Library(
            db,
            self.data_dir,
            ffmpeg,
            profile=profile,
            max_upload_bytes=self.settings.ffmpeg.max_upload_bytes,
            publish=self.publish,
            import_dirs=self.settings.library.import_dirs,
            kbps_by_resolution=self.settings.ffmpeg.video_kbps == 0,
        )
        self._jobs = JobStore(db, self.clock)
        self._schedule = Scheduler(self._jobs, self.start_job, self.stop_job)
        self._linked = LinkedStore(db)
        ms = self.settings.ffmpeg
        self._liveness = LivenessMonitor(
            self._linked,
            lambda: self.accounts,
            self._pushing,
            interval=ms.twitch_check_interval,
            warn_after=ms.twitch_offline_warning,
            refresh_every=ms.twitch_refresh_interval,
            on_change=self._on_liveness,
        )

    async def stop(self) -> None:
        """Stop the scheduler and every child (bounded), keeping desired states; idempotent."""
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
            self._lease_task = None
        await self._stop_tasks()
        runners = list(self._runners.values())
        await _stop_abandoning(runners, STOP_BUDGET)
        if self._active and self._lease is not None:
            self._active = False
            with contextlib.suppress(Exception):  # else it lapses by itself
                await self._lease.release()  # another daemon takes the jobs over at once
        if self._library is not None:
            await self._library.stop()
        await self._tasks.wait(timeout=5)
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
        now = now_utc()
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
            # The channel may have been retitled while the daemon was down: resuming a rerun
            # under someone else's title is what a viewer would notice.
            self._tasks.spawn(update_channels(self.jobs, self.channel_updater, job))

    # ----------------------------------------------------------------------------- targets

    async def update_target(self, target_id: int, body: Any) -> Target:
        """Edit a target; a new URL, key or enabled flag applies to its running pushes at once."""
        target = await self.targets.update(target_id, body)
        if not {"url", "stream_key", "enabled"} & set(body):
            return target
        for job in await self.jobs.with_desired("running"):
            if job.target_desired(target_id) is not None:
                await self._reapply_target(job, target)
        return target

    async def _reapply_target(self, job: Job, target: Target) -> None:
        async with self._locks[job.id]:
            runner = self._runners.get((job.id, target.id))
            if runner is not None:
                await runner.stop()
            if job.target_desired(target.id) == "running" and target.enabled and self._active:
                await self._start_runner(job, target)

    async def create_target(self, body: Any) -> Target:
        """Store a target; with "test_key": true its key is tested in the background at once
        (the answer lands in the target's key_test)."""
        target = await self.targets.create(body)
        if isinstance(body, dict) and body.get("test_key"):
            self._tasks.spawn(self.test_target(target.id))
        return target

    async def test_target(self, target_id: int) -> dict[str, Any]:
        """Publish a few seconds of a test stream with the target's key: is it right?"""
        target = await self.targets.get(target_id)
        key = await self.targets.open_key(target_id)
        url = output_url(target.url, key)
        if self._pushes_to(target_id):
            checked = in_use()
        else:
            checked = await self._key_tests.run(
                target_id,
                try_publish(
                    _ready(self.ffmpeg), url, mask=masker(url, key), ca_file=self._ca_file(target)
                ),
            )
        log.info("target_tested", target=target_id, result=checked.result)
        answer = {**checked.to_json(), "at": now_utc().isoformat(timespec="seconds")}
        await self.targets.record_key_test(target_id, answer)
        return {"target_id": target_id, **answer}

    def _pushes_to(self, target_id: int) -> bool:
        """A job's FFmpeg holds (or is about to hold) this target's key."""
        return any(
            t == target_id and r.status.state is not TargetState.STOPPED
            for (_, t), r in self._runners.items()
        )

    def _ca_file(self, target: Target) -> str | None:
        """The target's own CA file (a private CA), else [ffmpeg] ca_file, else the system's."""
        return target.ca_file or self.settings.ffmpeg.ca_file or None

    # ----------------------------------------------------------------------------- linked

    async def link_target(self, target_id: int, body: Any) -> dict[str, Any]:
        """Link a Twitch account to a target: a connected channel, or any account by login.

        With fill_key (a connected channel that granted channel:read:stream_key) the key is
        read from Helix and stored sealed, so it cannot be mistyped or another account's;
        otherwise the key test checks that the ingest accepts the key.
        """
        wanted = parse_link(body)
        await self.targets.get(target_id)
        accounts = self._twitch()
        connected = set(await accounts.connected_ids())
        user = await self._find_user(accounts, wanted.login, wanted.channel_id, connected)
        via = "connected" if user.user_id in connected else "login"
        if wanted.fill_key and via != "connected":
            raise InvalidInput(
                f"fill_key: {user.login} is not a connected channel, so StreamerHub cannot read "
                "its stream key: connect it (asking for the stream key), or paste the key and "
                "let the key test check it"
            )
        followers = await accounts.follower_total(user.user_id)
        answer: dict[str, Any] = {}
        if wanted.fill_key:
            try:
                key = await accounts.stream_key(user.user_id)
            except StreamKeyUnavailable as exc:
                raise InvalidInput(f"fill_key: {exc}") from None
            await self.update_target(target_id, {"stream_key": key})
        await _ready(self._linked).link(
            target_id, user, followers, via, "helix" if wanted.fill_key else "typed"
        )
        if via == "connected":
            await self.targets.update(target_id, {"channel_id": user.user_id})
        if not wanted.fill_key:
            answer["key_test"] = await self.test_target(target_id)
        log.info("target_linked", target=target_id, user_id=user.user_id, via=via)
        return {"target": (await self.targets.get(target_id)).to_json(), **answer}

    async def _find_user(
        self,
        accounts: TwitchAccounts,
        login: str | None,
        channel_id: str | None,
        connected: set[str],
    ) -> TwitchUser:
        if channel_id is not None:
            if channel_id not in connected:
                raise InvalidInput(
                    f"channel_id: {channel_id} is not a connected channel (connect it first, "
                    "or link the account by its login)"
                )
            found = await accounts.users_by_id([channel_id])
            if not found:
                raise NotFound(f"Twitch has no account with id {channel_id}")
            return found[0]
        assert login is not None  # parse_link asks for one of the two
        user = await accounts.user_by_login(login)
        if user is None:
            raise InvalidInput(f"login: Twitch has no account named {login!r}")
        return user

    async def unlink_target(self, target_id: int) -> None:
        await self.targets.get(target_id)
        if not await _ready(self._linked).unlink(target_id):
            raise NotFound(f"target {target_id} is not linked to a Twitch account")

    async def account_stats(self, target_id: int) -> dict[str, Any]:
        """The linked account's figures over the history of the jobs pushing to it."""
        await self.targets.get(target_id)
        gap = self.settings.ffmpeg.twitch_check_interval * 4 * 3
        stats = await _ready(self._linked).stats(target_id, gap)
        if stats is None:
            raise NotFound(f"target {target_id} is not linked to a Twitch account")
        return {"target_id": target_id, **stats}

    async def account_export(self, job_id: int, fmt: str) -> tuple[bytes, str]:
        """(file, media type): the job's per-linked-account figures as CSV or JSON."""
        media = account_export.check_format(fmt)
        await self.jobs.get(job_id)
        gap = self.settings.ffmpeg.twitch_check_interval * 4 * 3
        stats = await _ready(self._linked).job_stats(job_id, gap)
        return account_export.render(account_export.account_rows(stats, self.tz), fmt), media

    def _twitch(self) -> TwitchAccounts:
        if self.accounts is None:
            raise Conflict("no Twitch client in this daemon: set [twitch] client_id first")
        return self.accounts

    def _pushing(self, job_id: int, target_id: int) -> bool:
        runner = self._runners.get((job_id, target_id))
        return runner is not None and runner.status.state is TargetState.LIVE

    def _on_liveness(self, job_id: int, target_id: int, liveness: Liveness) -> None:
        self.publish(
            {
                "type": "twitch",
                "job_id": job_id,
                "target_id": target_id,
                **liveness.to_json(),
            }
        )

    async def delete_target(self, target_id: int) -> None:
        """Delete a target; refused while a job uses it."""
        await self.targets.delete(target_id)

    # ----------------------------------------------------------------------------- jobs

    async def create_job(self, body: Any) -> Job:
        """Store a new job; the scheduler looks at it at once."""
        if isinstance(body, dict) and isinstance(body.get("videos"), list):
            await self.library.check_playlist(_ids(body["videos"]))
        job = await self.jobs.create(body)
        self._nudge_scheduler()
        return job

    async def update_job(self, job_id: int, body: Any) -> Job:
        """Edit a job; the scheduler looks at it at once."""
        if isinstance(body, dict) and isinstance(body.get("videos"), list):
            await self.library.check_playlist(_ids(body["videos"]))
        job = await self.jobs.update(job_id, body)
        self._nudge_scheduler()
        return job

    async def delete_job(self, job_id: int) -> None:
        """Stop a job, delete it and its runners' playlist files."""
        await self.stop_job(job_id, reason="deleted")
        await self.jobs.delete(job_id)
        self._runners = {k: r for k, r in self._runners.items() if k[0] != job_id}
        for folder in (self.data_dir / JOB_DIR).glob(f"{job_id}-*"):
            shutil.rmtree(folder, ignore_errors=True)

    async def start_job(
        self, job_id: int, *, deadline: dt.datetime | None = None, fired: dt.datetime | None = None
    ) -> Job:
        """Start every enabled target of a job (again); set linked Twitch channels' info."""
        await self._check_holder()
        async with self._locks[job_id]:
            job = await self.jobs.get(job_id)
            await self._check_startable(job)
            if fired is None:
                deadline = job.schedule.deadline_for_manual_start(now_utc())
            await self.jobs.set_running(job_id, deadline, fired)
            job = await self.jobs.get(job_id)
            await self._launch(job)
        log.info("job_started", job=job_id, name=job.name, scheduled=fired is not None)
        if self._liveness is not None:
            self._liveness.wake.set()
        self._tasks.spawn(update_channels(self.jobs, self.channel_updater, job))
        self._nudge_scheduler()
        return job

    async def stop_job(self, job_id: int, reason: str = "stopped by user") -> Job:
        """Stop every target of a job and remember why."""
        await self._check_holder()
        async with self._locks[job_id]:
            await self.jobs.get(job_id)
            await self.jobs.set_stopped(job_id, reason)
            await _stop_runners(self._runners_of(job_id))
        log.info("job_stopped", job=job_id, reason=reason)
        return await self.jobs.get(job_id)

    async def start_job_target(self, job_id: int, target_id: int) -> Job:
        """Start (or retry) one target of a running job; the others are not touched."""
        await self._check_holder()
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
        """Stop one target of a job; the others are not touched."""
        await self._check_holder()
        async with self._locks[job_id]:
            job = await self.jobs.get(job_id)
            await self._member(job, target_id)
            await self.jobs.set_target_desired(job_id, target_id, "stopped")
            runner = self._runners.get((job_id, target_id))
            if runner is not None:
                await runner.stop()
        return await self.jobs.get(job_id)

    async def tick(self, now: dt.datetime) -> float:
        """Fire due starts and stops; return seconds until the next thing to do (≤ 30)."""
        return await _ready(self._schedule).tick(now)

    def _nudge_scheduler(self) -> None:
        if self._schedule is not None:
            self._schedule.wake.set()

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
        await self._check_holder()  # fenced meanwhile: never a child beside the new holder's
        files = await self.library.ready_files(job.videos)
        duration, bitrate = await self._playlist_figures(job)
        key = await self.targets.open_key(target.id)
        old = self._runners.get((job.id, target.id))
        if old is not None:
            await old.stop()
        await self._key_tests.give_way(target.id)  # an ingest takes one stream per key
        runner = TargetRunner(
            _ready(self.ffmpeg),
            output_url(target.url, key),
            files,
            key=key,
            name=f"{job.name}/{target.name}",
            loop=job.loop,
            playlist_duration=duration,
            work_dir=self.data_dir / JOB_DIR / f"{job.id}-{target.id}",
            timing=self._timing_for(bitrate),
            policy=self.policy,
            on_status=lambda s: self._on_status(job.id, target.id, s),
            on_run_end=lambda r: self._on_run_end(job.id, target.id, r),
            ca_file=self._ca_file(target),
        )
        self._runners[(job.id, target.id)] = runner
        runner.start()
        self._tasks.spawn(self._watch_end(job.id, runner))

    async def _playlist_figures(self, job: Job) -> tuple[float | None, float | None]:
        """(total duration, highest bitrate in kbit/s) of the job's prepared files."""
        probes = [
            probe_from_json((await self.library.get(v)).prepared_probe or {}) for v in job.videos
        ]
        duration = sum(p.duration or 0 for p in probes)
        bitrate = max((p.bitrate_kbps or 0 for p in probes), default=0)
        return duration or None, bitrate or None

    def _timing_for(self, bitrate_kbps: float | None) -> RunnerTiming:
        # A configured buffer (tests, benchmarks) wins; the default follows the stream's rate.
        if self.timing.send_buffer != MAX_SEND_BUFFER:
            return self.timing
        return replace(self.timing, send_buffer=send_buffer_for(bitrate_kbps))

    def _runners_of(self, job_id: int) -> list[TargetRunner]:
        return [r for (j, _), r in self._runners.items() if j == job_id]

    def _on_status(self, job_id: int, target_id: int, status: TargetStatus) -> None:
        self.publish(
            {
                "type": "target",
                "job_id": job_id,
                "target_id": target_id,
                **status_json(status, self.tz),
            }
        )

    def _on_run_end(self, job_id: int, target_id: int, record: RunRecord) -> None:
        self._tasks.spawn(self._record_run(job_id, target_id, record))

    async def _record_run(self, job_id: int, target_id: int, record: RunRecord) -> None:
        tail = redact("\n".join(record.stderr_tail))
        await self.jobs.record_run(
            job_id,
            target_id,
            record.started_at,
            record.ended_at,
            record.exit_code,
            record.failure.value if record.failure else None,
            redact(record.error) if record.error else None,
            tail,
        )

    async def _watch_end(self, job_id: int, runner: TargetRunner) -> None:
        """When a finite playlist has played to its end on every target, the job is done."""
        await runner.wait()
        if not (runner.last_run and runner.last_run.finished):
            return
        if all(r.status.state is TargetState.STOPPED for r in self._runners_of(job_id)):
            job = await self.jobs.get(job_id)
            if job.running:
                await self.jobs.set_stopped(job_id, "playlist finished")
                log.info("job_finished", job=job_id)

    # ----------------------------------------------------------------------------- reading

    async def job_json(self, job: Job, detail: bool = False) -> dict[str, Any]:
        """A job with the live state of each of its targets (and history when detail)."""
        body = job.to_json(self.tz, now_utc())
        body["targets"] = [await self._target_json(job, t, d) for t, d in job.targets]
        probes = await self._prepared_probes(job)
        for shown in body["targets"]:
            shown["requirements"] = self._requirements(shown["url"], probes)
        body["state"] = job_state(job, [t["state"] for t in body["targets"]])
        body["warnings"] = (
            await self.jobs.channel_warnings(job.id)
            + [
                f"{t['name']}: {t['twitch']['warning']}"
                for t in body["targets"]
                if t.get("twitch") and t["twitch"].get("warning")
            ]
            + [problem for t in body["targets"] for problem in t["requirements"]]
        )
        if detail:
            body["runs"] = await self.jobs.runs(job.id)
            body["channel_updates"] = await self.jobs.channel_updates(job.id)
            body["linked_accounts"] = [
                await self.account_stats(t["target_id"]) for t in body["targets"] if t["account"]
            ]
        return body

    async def _target_json(self, job: Job, target_id: int, desired: str) -> dict[str, Any]:
        target = await self.targets.get(target_id)
        runner = self._runners.get((job.id, target_id))
        status = runner.status if runner else TargetStatus(target.name, TargetState.STOPPED)
        state = status.state.value
        if runner is None and not target.enabled:
            state = "disabled"
        finished = bool(
            runner
            and runner.last_run
            and runner.last_run.finished
            and status.state is TargetState.STOPPED
        )
        return {
            "target_id": target_id,
            "name": target.name,
            "url": shown_url(target.url),
            "enabled": target.enabled,
            "desired": desired,
            **status_json(status, self.tz),
            "state": state,
            "finished": finished,
            "account": target.account,
            "twitch": self._twitch_json(job.id, target),
        }

    async def _prepared_probes(self, job: Job) -> list[tuple[str, Any]]:
        """(label, probe) of the job's prepared files, for the platform checks."""
        found = []
        for video_id in dict.fromkeys(job.videos):
            try:
                video = await self.library.get(video_id)
            except NotFound:
                continue
            if video.prepared_probe:
                found.append((video.label, probe_from_json(video.prepared_probe)))
        return found

    @staticmethod
    def _requirements(url: str, probes: list[tuple[str, Any]]) -> list[str]:
        """Where the job's prepared files break the target platform's ingest requirements."""
        platform = platform_of(url)
        if platform is None:
            return []
        return [p for label, probe in probes for p in requirement_problems(platform, probe, label)]

    async def job_log(self, job_id: int) -> dict[str, Any]:
        """Each target's recent FFmpeg output: the running child's lines as they come."""
        job = await self.jobs.get(job_id)
        shown = []
        for target_id, _ in job.targets:
            runner = self._runners.get((job_id, target_id))
            name = (await self.targets.get(target_id)).name
            tail = runner.live_log() if runner else LiveLog(0, False, ())
            shown.append(log_json(target_id, name, tail))
        return {"job_id": job_id, "targets": shown}

    def presets(self) -> list[dict[str, Any]]:
        """The platforms a target can be made from, with their ingest requirements."""
        return [p.to_json() for p in PRESETS.values()]

    def _twitch_json(self, job_id: int, target: Target) -> dict[str, Any] | None:
        """Twitch's word on a linked target's push (None when no account is linked)."""
        if target.account is None:
            return None
        liveness = self._liveness.of(job_id, target.id) if self._liveness else None
        return (liveness or Liveness(ours_live=self._pushing(job_id, target.id))).to_json()


async def _stop_runners(runners: list[TargetRunner]) -> None:
    """Stop runners side by side; a supervisor's crash reaches the caller."""
    if runners:
        await asyncio.gather(*(r.stop() for r in runners))


async def _stop_abandoning(runners: list[TargetRunner], budget: float) -> None:
    """Stop runners side by side, giving up (logged) on those slower than the budget."""
    if not runners:
        return
    _done, pending = await asyncio.wait(
        [asyncio.ensure_future(r.stop()) for r in runners], timeout=budget
    )
    if pending:
        log.error("ffmpeg_stop_abandoned", children=len(pending))


def _ready(part: T | None) -> T:
    if part is None:
        raise StreamerHubError("multistream is not started yet")
    return part


def _ids(values: list[Any]) -> list[int]:
    """The whole-number ids of a request's list; parse_job explains anything else."""
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
