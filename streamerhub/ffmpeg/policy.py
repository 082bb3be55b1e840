"""How a target's FFmpeg child is watched and restarted: timings and the restart policy."""

from __future__ import annotations

from dataclasses import dataclass

from streamerhub.ffmpeg.progress import FailureClass

# Failures only a human can fix (a wrong key or URL, an unreadable file, a certificate the
# target does not trust): after a crash loop the target is marked `failed` with what to fix,
# and still tried again every half_open_after seconds, so it comes back by itself when the
# cause goes away (a key fixed on the platform's side, a certificate renewed).
NEEDS_A_HUMAN = frozenset({FailureClass.KEY_REJECTED, FailureClass.INPUT_ERROR, FailureClass.TLS})

# What `failed` tells the user to do, per class.
FIX_HINTS = {
    FailureClass.KEY_REJECTED: "the ingest refused the stream key: copy the key (and check the "
    "URL) from the platform's stream settings, then save the target or press Retry",
    FailureClass.INPUT_ERROR: "the video file cannot be read: prepare it again or re-upload it",
    FailureClass.TLS: "the secure connection failed: check the URL and the ingest's "
    "certificate (a private CA needs the target's CA file)",
}


MIN_SEND_BUFFER = 64 * 1024
MAX_SEND_BUFFER = 512 * 1024


def send_buffer_for(bitrate_kbps: float | None, seconds: float = 1.0) -> int:
    """About `seconds` of the stream, within [64 KiB, 512 KiB].

    A frozen ingest is only noticed once FFmpeg's socket buffer is full and its progress stops:
    a fixed 512 KiB held ~8 s of a 500 kbit/s stream, which pushed detection past 25 s.
    """
    if not bitrate_kbps:
        return MAX_SEND_BUFFER
    wanted = bitrate_kbps * 1000 / 8 * seconds
    return int(min(MAX_SEND_BUFFER, max(MIN_SEND_BUFFER, wanted)))


@dataclass(frozen=True)
class RunnerTiming:
    # No out_time advance for this long → kill and restart. FFmpeg prints progress every
    # second while it can write, so 4 s of silence is never a healthy push; the buffers in
    # between (~1 s of stream in our send buffer, the ingest's receive buffer) take another
    # 2–5 s to fill, so a frozen ingest is detected within 10 s (bench/multistream.py measures
    # it): 10 s here made it 16–20 s.
    stall_after: float = 4.0
    progress_period: float = 1.0  # -stats_period
    io_timeout: float = 10.0  # -rw_timeout: FFmpeg's own bound on a blocked socket
    send_buffer: int | None = MAX_SEND_BUFFER  # bounded; per job: send_buffer_for(bitrate)
    quit_wait: float = 3.0  # stop(): q → wait → SIGTERM → wait → SIGKILL
    term_wait: float = 3.0
    stall_quit_wait: float = 1.0  # after a stall the child is usually wedged: shorter waits
    stall_term_wait: float = 2.0

    def stop_waits(self, stalled: bool) -> tuple[float, float]:
        """(quit wait, SIGTERM wait) for stopping a child, shorter when it stalled."""
        if stalled:
            return self.stall_quit_wait, self.stall_term_wait
        return self.quit_wait, self.term_wait


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial: float = 1.0
    backoff_max: float = 8.0  # with jitter ≤ 9.6 s: live again ≤ ~12 s after the ingest
    jitter: float = 0.2  # ± this fraction of each delay
    key_rejected_initial: float = 60.0  # a wrong key is not a blip: do not hammer the ingest
    key_rejected_max: float = 600.0
    breaker_restarts: int = 5  # more than this many crashes needing a human…
    breaker_window: float = 300.0  # …within this many seconds → failed
    healthy_after: float = 30.0  # a run live this long resets the backoff and is no crash
    half_open_after: float = 300.0  # a failed target is still tried this often

    def delay(self, failure: FailureClass, streak: int, rand: float) -> float:
        """Seconds to wait before attempt `streak` (1 = first retry) after `failure`."""
        if failure is FailureClass.KEY_REJECTED:
            base, cap = self.key_rejected_initial, self.key_rejected_max
        else:
            base, cap = self.backoff_initial, self.backoff_max
        factor: int = 2 ** max(0, streak - 1)
        raw = min(cap, base * factor)
        return round(raw * (1 + self.jitter * (2 * rand - 1)), 3)


# Frozen: safe to share as default arguments.
DEFAULT_TIMING = RunnerTiming()
DEFAULT_POLICY = RestartPolicy()
