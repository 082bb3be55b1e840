"""Supervision of one FFmpeg copy-mode push per RTMP target.

A `TargetRunner` keeps one child alive for one target: it declares the target live when
FFmpeg's progress advances, kills a child whose progress stalls (a frozen ingest keeps FFmpeg
alive and deaf to `q`), restarts with exponential backoff and jitter, waits long after a
rejected stream key, and stops retrying (`failed`, until `retry()`) when runs keep crashing.
Runners share nothing, so one failing target never slows or stops another.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from streamerhub.ffmpeg.argv import (
    build_concat_list,
    build_push_argv,
    masked_url,
    resume_point,
    url_secrets,
)
from streamerhub.ffmpeg.binary import (
    FFmpegBinary,
    StopMethod,
    ffmpeg_path,
    iter_lines,
    spawn,
    stop_process,
    system_ca_file,
)
from streamerhub.ffmpeg.policy import (
    DEFAULT_POLICY,
    DEFAULT_TIMING,
    FIX_HINTS,
    NEEDS_A_HUMAN,
    RestartPolicy,
    RunnerTiming,
)
from streamerhub.ffmpeg.progress import (
    FailureClass,
    Progress,
    ProgressParser,
    classify_failure,
    first_error,
)
from streamerhub.ffmpeg.status import LiveLog, RunRecord, TargetState, TargetStatus
from streamerhub.log import MASK, get_logger, redact, register_secret

log = get_logger(__name__)
RATE_WINDOW = 5.0  # seconds over which the shown bitrate and fps are measured
LOG_LINES = 100  # FFmpeg stderr lines kept per run (each at most 4,000 characters)


@dataclass
class _Run:
    number: int
    started_at: float
    started_mono: float
    ring: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    parser: ProgressParser = field(default_factory=ProgressParser)
    max_out_us: int = -1
    last_advance: float = 0.0
    live_mono: float | None = None
    stalled: bool = False
    # (monotonic time, total bytes, frames) per progress block, for current rates: FFmpeg's
    # own bitrate and fps are averages since the start that never drop when the push stalls.
    samples: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=64))

    def rates(self, now: float, window: float) -> tuple[float | None, float | None]:
        """(kbit/s, frames/s) over the last `window` seconds up to now; None before 2 samples."""
        recent = [s for s in self.samples if now - s[0] <= window + 0.5]
        if len(recent) < 2:
            return None, None
        first, last = recent[0], recent[-1]
        span = now - first[0]  # to now, not to the last block: a stall drops the rates
        if span <= 0:
            return None, None
        kbps = (last[1] - first[1]) * 8 / 1000 / span
        return round(kbps, 1), round((last[2] - first[2]) / span, 2)


class TargetRunner:
    """Keeps one FFmpeg child pushing `inputs` to `url` until stopped."""

    def __init__(
        self,
        ffmpeg: FFmpegBinary | str,
        url: str,
        inputs: Sequence[Path],
        *,
        name: str = "",
        key: str | None = None,
        loop: int | None = None,
        playlist_duration: float | None = None,
        work_dir: Path | None = None,
        timing: RunnerTiming = DEFAULT_TIMING,
        policy: RestartPolicy = DEFAULT_POLICY,
        on_status: Callable[[TargetStatus], None] | None = None,
        on_run_end: Callable[[RunRecord], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        ca_file: str | None = None,
    ) -> None:
        if not inputs:
            raise ValueError("a target needs at least one input file")
        self._ffmpeg, self._url, self._inputs = ffmpeg_path(ffmpeg), url, list(inputs)
        self._masked_url = masked_url(url)
        self.name = name or self._masked_url
        self._loop, self._duration, self._work_dir = loop, playlist_duration, work_dir
        self.timing, self.policy = timing, policy
        self._on_status, self._on_run_end = on_status, on_run_end
        self._clock, self._wall, self._rand = clock, wall, rand
        self._ca_file = ca_file or system_ca_file()
        self._secrets = url_secrets(url, key)
        for secret in self._secrets:
            register_secret(secret)
        self._status = TargetStatus(self.name, TargetState.STOPPED)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._streak = 0
        self._crashes: deque[float] = deque()
        self._position = 0.0
        self._run: _Run | None = None
        self._own_dir: Path | None = None
        self.history: deque[RunRecord] = deque(maxlen=20)

    # public --------------------------------------------------------------------------------
    @property
    def status(self) -> TargetStatus:
        """Current snapshot, progress included."""
        run, status = self._run, self._status
        if run is None or run.parser.last is None:
            return status
        p, now = run.parser.last, self._clock()
        kbps, fps = run.rates(now, RATE_WINDOW)
        return replace(
            status,
            out_time=p.out_time,
            bitrate_kbps=kbps,
            fps=fps,
            speed=p.speed,
            drop_frames=p.drop_frames,
            dup_frames=p.dup_frames,
            uptime=None if run.live_mono is None else round(now - run.live_mono, 3),
        )

    @property
    def last_run(self) -> RunRecord | None:
        return self.history[-1] if self.history else None

    def live_log(self) -> LiveLog:
        """FFmpeg's recent output: the running child's own lines as they come, else the last
        run's tail. Lines are masked as they are read, so no key reaches a reader."""
        run = self._run
        if run is not None:
            return LiveLog(run.number, True, tuple(run.ring))
        last = self.last_run
        if last is not None:
            return LiveLog(last.run, False, last.stderr_tail)
        return LiveLog(0, False, ())

    def mask(self, text: str) -> str:
        """Hide this target's stream key (and any registered secret) in text."""
        text = text.replace(self._url, self._masked_url)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return redact(text)

    def start(self) -> None:
        """Start supervising (from a running event loop); a no-op while already running."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def stop(self) -> None:
        """Stop the child (q → SIGTERM → SIGKILL, bounded) and supervision; idempotent."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    def retry(self) -> None:
        """Leave `failed` (or cut a backoff short) and try again now."""
        self._crashes.clear()
        self._streak = 0
        self._wake.set()

    async def wait(self) -> TargetStatus:
        """Wait until supervision ends (stopped, or a finite playlist finished)."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.status

    # supervision ----------------------------------------------------------------------------
    async def _supervise(self) -> None:
        try:
            while not self._stopping:
                plan = resume_point(self._position, self._duration, self._loop)
                if plan is None:
                    break
                record = await self._run_once(*plan)
                self._run = None
                self._finish(record)
                if self._stopping or record.finished:
                    break
                await self._pause_after(record)
        except Exception:
            log.exception("ffmpeg_supervisor_crashed", target=self.name)
            raise
        finally:
            self._run = None
            self._cleanup_dir()
            self._publish(state=TargetState.STOPPED, pid=None, next_retry_at=None)

    async def _run_once(self, start_at: float, loop: int | None) -> RunRecord:
        run = _Run(self._status.run + 1, self._wall(), self._clock())
        run.last_advance = run.started_mono
        self._run = run
        self._publish(
            state=TargetState.STARTING,
            pid=None,
            run=run.number,
            next_retry_at=None,
            started_at=run.started_at,
            live_since=None,
        )
        try:
            proc = await spawn(self._argv(start_at, loop))
        except Exception as exc:  # noqa: BLE001 - no binary, no disk for the playlist: a crash, not a hang
            return self._record(run, None, None, FailureClass.OTHER, self.mask(str(exc)))
        log.info("ffmpeg_started", target=self.name, run=run.number, pid=proc.pid)
        self._publish(pid=proc.pid)
        stopped_by = await self._watch(proc, run)
        return self._judge(run, proc.returncode, stopped_by)

    def _argv(self, start_at: float, loop: int | None) -> list[str]:
        concat = None
        if len(self._inputs) > 1:
            concat = self._dir() / "playlist.ffconcat"
            concat.write_text(build_concat_list(self._inputs))
        t = self.timing
        return build_push_argv(
            self._ffmpeg,
            self._inputs,
            self._url,
            loop,
            concat_list=concat,
            start_at=start_at,
            io_timeout=t.io_timeout,
            send_buffer=t.send_buffer,
            progress_period=t.progress_period,
            ca_file=self._ca_file,
        )

    async def _watch(self, proc: asyncio.subprocess.Process, run: _Run) -> StopMethod | None:
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            asyncio.ensure_future(self._read_progress(proc.stdout, run)),
            asyncio.ensure_future(self._read_stderr(proc.stderr, run)),
        ]
        exited = asyncio.ensure_future(proc.wait())
        stop = asyncio.ensure_future(self._wait_for_stop())
        stall = asyncio.ensure_future(self._watch_stall(run))
        stopped_by = None
        try:
            await asyncio.wait({exited, stop, stall}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                quit_wait, term_wait = self.timing.stop_waits(stall.done())
                stopped_by = await stop_process(proc, quit_wait=quit_wait, term_wait=term_wait)
        finally:
            for task in (exited, stop, stall):
                task.cancel()
            await _reap(proc, readers)
        return stopped_by

    async def _wait_for_stop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    async def _watch_stall(self, run: _Run) -> None:
        limit = self.timing.stall_after
        while self._clock() - run.last_advance < limit:
            await asyncio.sleep(min(0.5, limit / 4))
        run.stalled = True
        log.warning(
            "ffmpeg_stalled",
            target=self.name,
            run=run.number,
            seconds=limit,
            out_time=run.max_out_us / 1e6 if run.max_out_us >= 0 else None,
        )
        # Off air from now, not from when the wedged child has finally been killed (seconds).
        self._publish(
            state=TargetState.BACKOFF,
            last_error=f"no progress for {limit:g} s (ingest stalled); restarting",
            failure=FailureClass.TIMEOUT,
        )

    async def _read_progress(self, stdout: asyncio.StreamReader, run: _Run) -> None:
        async for line in iter_lines(stdout):
            block = run.parser.feed(line)
            if block is not None:
                self._on_progress(block, run)

    def _on_progress(self, block: Progress, run: _Run) -> None:
        if block.total_size is not None and block.frame is not None:
            run.samples.append((self._clock(), block.total_size, block.frame))
        out_us = block.out_time_us
        if out_us is None or out_us <= run.max_out_us:
            return
        run.max_out_us = out_us
        run.last_advance = self._clock()
        if run.live_mono is None and out_us > 0:
            run.live_mono = run.last_advance
            log.info("ffmpeg_live", target=self.name, run=run.number)
            self._publish(
                state=TargetState.LIVE, live_since=self._wall(), last_error=None, failure=None
            )

    async def _read_stderr(self, stderr: asyncio.StreamReader, run: _Run) -> None:
        async for line in iter_lines(stderr):
            if line.strip():
                run.ring.append(self.mask(line))

    # outcome --------------------------------------------------------------------------------
    def _judge(self, run: _Run, code: int | None, stopped_by: StopMethod | None) -> RunRecord:
        lines = list(run.ring)
        said = first_error(lines)
        if self._stopping and not run.stalled:
            return self._record(run, code, stopped_by, None, None)
        last = run.parser.last
        if code == 0 and said is None and self._loop is not None and last and last.ended:
            return self._record(run, code, stopped_by, None, None, finished=True)
        if run.stalled:
            limit = self.timing.stall_after
            error = f"no progress for {limit:g} s (ingest stalled)" + (
                f"; FFmpeg: {said}" if said else ""
            )
            return self._record(run, code, stopped_by, FailureClass.TIMEOUT, error)
        error = said or f"FFmpeg exited with code {code}"
        return self._record(run, code, stopped_by, classify_failure(lines), error)

    def _record(
        self,
        run: _Run,
        code: int | None,
        stopped_by: StopMethod | None,
        failure: FailureClass | None,
        error: str | None,
        finished: bool = False,
    ) -> RunRecord:
        out = run.max_out_us / 1e6 if run.max_out_us >= 0 else None
        return RunRecord(
            run.number,
            run.started_at,
            self._wall(),
            code,
            run.live_mono is not None,
            out,
            failure,
            error and self.mask(error),
            stopped_by,
            tuple(run.ring),
            finished,
        )

    def _finish(self, record: RunRecord) -> None:
        previous = self.history[-1].failure if self.history else None
        self._position += record.out_time or 0.0
        self.history.append(record)
        if record.failure is not None:
            # The stderr tail goes to the log once per kind of failure, not once per retry of
            # an ingest that stays down for an hour.
            tail = list(record.stderr_tail[-10:]) if record.failure != previous else None
            log.warning(
                "ffmpeg_exited",
                target=self.name,
                run=record.run,
                exit_code=record.exit_code,
                failure=record.failure.value,
                error=record.error,
                stderr_tail=tail,
            )
        if self._on_run_end is not None:
            self._call(self._on_run_end, record)

    async def _pause_after(self, record: RunRecord) -> None:
        assert record.failure is not None
        healthy = record.lived >= self.policy.healthy_after
        self._streak = 1 if healthy else self._streak + 1
        # Only what a human must fix ends in `failed`; an ingest or network that misbehaves
        # (refused, reset, stalled, closed) is retried at most backoff_max apart, forever: a
        # 24/7 channel must come back by itself after any outage, however it looked.
        if not healthy and record.failure in NEEDS_A_HUMAN and self._crash_loop():
            await self._fail(record)
            return
        delay = self.policy.delay(record.failure, self._streak, self._rand())
        log.info(
            "ffmpeg_restarting",
            target=self.name,
            attempt=self._streak,
            delay=delay,
            failure=record.failure.value,
        )
        self._publish(
            state=TargetState.BACKOFF,
            pid=None,
            restarts=self._status.restarts + 1,
            last_error=record.error,
            failure=record.failure,
            next_retry_at=round(self._wall() + delay, 3),
        )
        await self._sleep(delay)

    def _crash_loop(self) -> bool:
        now, window = self._clock(), self.policy.breaker_window
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > window:
            self._crashes.popleft()
        return len(self._crashes) > self.policy.breaker_restarts

    async def _fail(self, record: RunRecord) -> None:
        assert record.failure is not None
        retry_in = self.policy.half_open_after
        error = (
            f"{FIX_HINTS[record.failure]} (FFmpeg: {record.error}; "
            f"{len(self._crashes)} failed runs in {self.policy.breaker_window:g} s; "
            f"tried again every {retry_in:g} s)"
        )
        log.error("ffmpeg_failed", target=self.name, failure=record.failure.value, error=error)
        self._publish(
            state=TargetState.FAILED,
            pid=None,
            last_error=error,
            failure=record.failure,
            next_retry_at=round(self._wall() + retry_in, 3),
        )
        # Half-open: one attempt after retry_in (or at once on retry()); if it fails again the
        # crash list, still full, sends the target straight back here.
        self._crashes.popleft()
        await self._sleep(retry_in)
        if not self._stopping:
            self._publish(restarts=self._status.restarts + 1)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        if self._stopping:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # plumbing -------------------------------------------------------------------------------
    def _publish(self, **changes: object) -> None:
        before = self._status
        self._status = replace(before, **changes)  # type: ignore[arg-type]  # checked at run time
        if self._status.key() != before.key() and self._on_status is not None:
            self._call(self._on_status, self.status)

    def _call(self, callback: Callable[..., None], value: object) -> None:
        try:
            callback(value)
        except Exception:  # a broken listener must not break supervision
            log.exception("ffmpeg_callback_failed", target=self.name)

    def _dir(self) -> Path:
        if self._work_dir is not None:
            self._work_dir.mkdir(parents=True, exist_ok=True)
            return self._work_dir
        if self._own_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="streamerhub-push-"))
        return self._own_dir

    def _cleanup_dir(self) -> None:
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None


async def _reap(proc: asyncio.subprocess.Process, readers: Sequence[asyncio.Future[None]]) -> None:
    """Make sure the child is gone and its pipes drained (bounded), whatever happened."""
    if proc.returncode is None:  # cancelled from outside: never leave a child behind
        await stop_process(proc, quit_wait=0, term_wait=1.0)
    await asyncio.wait(readers, timeout=2.0)
    for task in readers:
        task.cancel()
