"""How the API shows a target's live status and sums up a job's state in one word."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from streamerhub.ffmpeg.jobs import Job
from streamerhub.ffmpeg.status import LiveLog, TargetStatus
from streamerhub.log import redact


def wall_iso(seconds: float | None, tz: dt.tzinfo) -> str | None:
    """A wall-clock time (time.time()) in ISO 8601, in the streamer's time zone."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, tz).isoformat(timespec="seconds")


def status_json(s: TargetStatus, tz: dt.tzinfo) -> dict[str, Any]:
    """One target's live status for the API and the dashboard's event stream."""
    return {
        "state": s.state.value,
        "pid": s.pid,
        "run": s.run,
        "started_at": wall_iso(s.started_at, tz),
        "live_since": wall_iso(s.live_since, tz),
        "uptime_s": s.uptime,
        "out_time_s": s.out_time,
        "bitrate_kbps": s.bitrate_kbps,
        "fps": s.fps,
        "speed": s.speed,
        "drop_frames": s.drop_frames,
        "dup_frames": s.dup_frames,
        "restarts": s.restarts,
        "last_error": s.last_error and redact(s.last_error),
        "failure_class": s.failure.value if s.failure else None,
        "next_retry_at": wall_iso(s.next_retry_at, tz),
        "next_retry_in_s": None
        if s.next_retry_at is None
        else max(0.0, round(s.next_retry_at - time.time(), 1)),
    }


def log_json(target_id: int, name: str, log: LiveLog) -> dict[str, Any]:
    """One target's recent FFmpeg output for the API (lines redacted once more on the way out)."""
    return {
        "target_id": target_id,
        "name": name,
        "run": log.run,
        "running": log.running,
        "lines": [redact(line) for line in log.lines],
    }


def job_state(job: Job, states: list[str]) -> str:
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
