"""What a target runner reports: its state, a live snapshot, and one record per finished run."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from streamerhub.ffmpeg.binary import StopMethod
from streamerhub.ffmpeg.progress import FailureClass


class TargetState(str, Enum):
    STARTING = "starting"  # a child is being started or has not shown progress yet
    LIVE = "live"  # progress is advancing
    BACKOFF = "backoff"  # the last run ended badly; waiting until next_retry_at
    FAILED = "failed"  # crash loop: waiting for retry()
    STOPPED = "stopped"  # stopped, or the playlist finished


@dataclass(frozen=True)
class TargetStatus:
    """A snapshot for the dashboard; on_status fires only when a field outside progress changes."""

    name: str
    state: TargetState
    pid: int | None = None
    run: int = 0
    started_at: float | None = None  # wall clock (time.time()) of the current run's start
    live_since: float | None = None  # wall clock of the current run going live
    uptime: float | None = None  # seconds live in the current run
    out_time: float | None = None  # seconds of media pushed by the current run
    bitrate_kbps: float | None = None
    fps: float | None = None
    speed: float | None = None
    drop_frames: int = 0
    dup_frames: int = 0
    restarts: int = 0
    last_error: str | None = None
    failure: FailureClass | None = None
    next_retry_at: float | None = None  # wall clock

    def key(self) -> tuple[object, ...]:
        """The fields whose change is worth publishing."""
        return (
            self.state,
            self.pid,
            self.run,
            self.restarts,
            self.last_error,
            self.failure,
            self.next_retry_at,
        )


@dataclass(frozen=True)
class RunRecord:
    """One finished child: what to store per run and show when it went wrong."""

    run: int
    started_at: float
    ended_at: float
    exit_code: int | None
    went_live: bool
    out_time: float | None
    failure: FailureClass | None  # None: ended cleanly (stopped or finished)
    error: str | None
    stopped_by: StopMethod | None
    stderr_tail: tuple[str, ...]
    finished: bool = False  # a finite playlist played to its end

    @property
    def lived(self) -> float:
        """Seconds from start to end of a run that went live (0 for one that never did)."""
        return (self.ended_at - self.started_at) if self.went_live else 0.0


@dataclass(frozen=True)
class LiveLog:
    """A target's recent FFmpeg output, for watching a push while it runs."""

    run: int  # the run the lines belong to (0: no run yet)
    running: bool  # the lines are the running child's, still growing
    lines: tuple[str, ...]  # oldest first, stream keys masked
