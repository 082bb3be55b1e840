#!/usr/bin/env python3
"""Multistream figures on this machine, with a 1080p30 6000 kbit/s prepared file made at start.

Prints one JSON object:
- copy_cpu_pct_per_target: CPU of one copy-mode FFmpeg child (% of one core), averaged over the
  8 targets pushing at once for --seconds (60 by default);
- min_speed_8_targets: the slowest of those 8 targets, in seconds of media pushed per second of
  wall clock over the same window (1.0 = real time; FFmpeg's own cumulative speed is reported
  too);
- transcode_cpu_pct_per_target: one child re-encoding the same file with libx264 veryfast at
  6000 kbit/s, as a per-target transcoder does; when it cannot keep real time (speed < 1) the
  CPU it used is divided by its speed, i.e. the CPU one real-time target would need (raw
  figure and speed in "detail");
- copy_vs_transcode: how many times cheaper copy mode is;
- recovery_s: from an RTMP ingest coming back (after being killed) to the target `live` again,
  with the daemon's default restart policy: the worst of several outages (--down-seconds), the
  longest one reaching the backoff cap.
- reset_outage_recovery_s: the ingest dies, then for --reset-seconds (40) a listener on its
  port accepts and resets every handshake (an overloaded or restarting ingest), then the ingest
  is healthy again: seconds from healthy to `live`; `reset_outage_failed` says whether the
  target was ever marked `failed` on the way (it must not be);
- frozen_detect_s: the ingest stops reading with the connection open (SIGUSR1 to the listener):
  seconds until the target is shown off air, with the daemon's timing for this bitrate;
- loop_24h: a small clip looped for --loop-hours (24) of media, pushed without -re (as fast as
  it goes) to nginx-rtmp: wall seconds, speed, media seconds reached and stalls (progress
  silent for more than the daemon's stall limit), which must be 0.
The RTMP ingest is tests/rtmp_server.py in its own process, so it does not share our CPU; the
pushes are the daemon's own TargetRunner (ffmpeg/supervisor.py). Targets: copy ≤ 5 % of a core,
min speed ≥ 1.0, copy ≥ 15× cheaper, recovery ≤ 15 s, reset outage recovery ≤ 15 s, frozen
detection ≤ 10 s, 24 h loop with 0 stalls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from streamerhub.ffmpeg.argv import (
    EncodeProfile,
    build_global_args,
    build_progress_args,
    build_push_argv,
)
from streamerhub.ffmpeg.binary import (
    FFmpegBinary,
    find_ffmpeg,
    iter_lines,
    spawn,
    stop_process,
)
from streamerhub.ffmpeg.policy import DEFAULT_TIMING, RunnerTiming, send_buffer_for
from streamerhub.ffmpeg.prepare import prepare
from streamerhub.ffmpeg.progress import ProgressParser
from streamerhub.ffmpeg.status import TargetState
from streamerhub.ffmpeg.supervisor import TargetRunner
from streamerhub.log import setup_logging

ROOT = Path(__file__).resolve().parent.parent
LISTENER = ROOT / "tests" / "rtmp_server.py"
sys.path.insert(0, str(ROOT / "tests"))
from nginx_rtmp import NginxRtmp, nginx_available  # noqa: E402 - the tests' real ingest
from rtmp_server import ResettingListener  # noqa: E402 - what nginx cannot be made to do

TICK = os.sysconf("SC_CLK_TCK")
WARMUP = 3.0


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def make_source(ffmpeg: str, path: Path, seconds: int) -> Path:
    """1080p30 H.264 at a true constant 6000 kbit/s (filler NALs), 2 s GOP, AAC 48 kHz."""
    subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "5800k",
            "-maxrate",
            "5800k",
            "-bufsize",
            "5800k",
            "-x264-params",
            "nal-hrd=cbr",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            "160k",
            "-ac",
            "2",
            str(path),
        ],
        check=True,
        timeout=600,
    )
    return path


class Listener:
    """tests/rtmp_server.py as a subprocess that can be killed and brought back on its port."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> float:
        """Start and return the monotonic time at which it listens."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(LISTENER),
            "--port",
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
            if not line:
                raise RuntimeError("the RTMP listener did not start")
            event = json.loads(line)
            if event.get("event") == "ready":
                self.port = event["port"]
                asyncio.ensure_future(self._drain())
                return time.monotonic()

    async def _drain(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        while await proc.stdout.readline():
            pass

    def url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}"

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(sig)
            await self.proc.wait()


async def wait_live(runners: list[TargetRunner], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(r.status.state is TargetState.LIVE for r in runners):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not live: {[r.status.state.value for r in runners]}")
        await asyncio.sleep(0.1)


async def next_progress(runner: TargetRunner) -> tuple[float, float]:
    """(monotonic time, out_time) taken as a new progress block arrives: sampling the status at
    an arbitrary moment would be up to one progress period (1 s) stale."""
    before = runner.status.out_time
    while (now := runner.status.out_time) == before or now is None:
        await asyncio.sleep(0.01)
    return time.monotonic(), now


async def measure_copy(
    ffmpeg: FFmpegBinary, video: Path, listener: Listener, targets: int, seconds: float
) -> dict[str, Any]:
    runners = [
        TargetRunner(ffmpeg, listener.url(f"bench-copy-{i}"), [video], name=f"copy-{i}")
        for i in range(targets)
    ]
    for runner in runners:
        runner.start()
    try:
        await wait_live(runners)
        await asyncio.sleep(WARMUP)
        pids = [r.status.pid for r in runners]
        cpu0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
        first = await asyncio.gather(*(next_progress(r) for r in runners))
        await asyncio.sleep(seconds)
        last = await asyncio.gather(*(next_progress(r) for r in runners))
        cpu1, elapsed = [cpu_seconds(p) for p in pids], time.monotonic() - t0
        same = [r.status.pid for r in runners] == pids
        speeds = [round((m1 - m0) / (t1 - t0), 3) for (t0, m0), (t1, m1) in zip(first, last)]
        return {
            "cpu_pct": round(100 * (sum(cpu1) - sum(cpu0)) / elapsed / targets, 2),
            "speeds": speeds,
            "ffmpeg_speeds": [r.status.speed for r in runners],
            "restarts": sum(r.status.restarts for r in runners) + (0 if same else 1),
        }
    finally:
        await asyncio.gather(*(r.stop() for r in runners))


async def measure_transcode(
    ffmpeg: FFmpegBinary, video: Path, listener: Listener, seconds: float
) -> dict[str, Any]:
    argv = [
        *build_global_args(ffmpeg.path),
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        str(video),
        *build_progress_args(),
        "-map",
        "0:v:0",
        "-map",
        "0:a:0",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-b:v",
        "6000k",
        "-maxrate",
        "6000k",
        "-bufsize",
        "12000k",
        "-g",
        "60",
        "-c:a",
        "aac",
        "-b:a",
        "160k",
        "-f",
        "flv",
        listener.url("bench-transcode"),
    ]
    proc = await spawn(argv, stderr=subprocess.DEVNULL)
    parser = ProgressParser()

    async def read() -> None:
        assert proc.stdout is not None
        async for line in iter_lines(proc.stdout):
            parser.feed(line)

    reader = asyncio.ensure_future(read())
    try:
        await asyncio.sleep(WARMUP)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        media0 = parser.last.out_time if parser.last and parser.last.out_time else 0.0
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        media1 = parser.last.out_time if parser.last and parser.last.out_time else 0.0
        raw = 100 * (cpu_seconds(proc.pid) - cpu0) / elapsed
        speed = (media1 - media0) / elapsed
        # A transcoder that cannot keep up is starved, not cheap: count the CPU it would need
        # to push in real time (CPU per second of media).
        return {
            "cpu_pct": round(raw / min(1.0, max(speed, 0.01)), 1),
            "raw_cpu_pct": round(raw, 1),
            "speed": round(speed, 3),
        }
    finally:
        await stop_process(proc)
        reader.cancel()


async def measure_recovery(ffmpeg: FFmpegBinary, video: Path, down: float) -> dict[str, Any]:
    listener = Listener()
    await listener.start()
    runner = TargetRunner(ffmpeg, listener.url("bench-recovery"), [video], name="recovery")
    runner.start()
    try:
        await wait_live([runner])
        await listener.kill()
        deadline = time.monotonic() + 30
        while runner.status.state is TargetState.LIVE:
            if time.monotonic() > deadline:
                raise RuntimeError("the target never noticed its ingest died")
            await asyncio.sleep(0.05)
        noticed = runner.status.state.value
        await asyncio.sleep(down)
        back = await listener.start()
        await wait_live([runner], timeout=60)
        return {
            "down_s": down,
            "recovery_s": round(time.monotonic() - back, 2),
            "state_while_down": noticed,
            "restarts": runner.status.restarts,
        }
    finally:
        await runner.stop()
        await listener.kill()


async def measure_reset_outage(
    ffmpeg: FFmpegBinary, video: Path, resetting: float
) -> dict[str, Any]:
    """Ingest dies, then resets every handshake for `resetting` s, then comes back healthy."""
    listener = Listener()
    await listener.start()
    states: set[str] = set()
    runner = TargetRunner(
        ffmpeg,
        listener.url("bench-reset"),
        [video],
        name="reset",
        on_status=lambda s: states.add(s.state.value),
    )
    runner.start()
    try:
        await wait_live([runner])
        await listener.kill()
        resetter = ResettingListener(port=listener.port)
        await resetter.start()
        await asyncio.sleep(resetting)
        await resetter.stop()
        back = await listener.start()
        await wait_live([runner], timeout=60)
        return {
            "resetting_s": resetting,
            "handshakes_reset": resetter.resets,
            "recovery_s": round(time.monotonic() - back, 2),
            "failed": "failed" in states,
            "restarts": runner.status.restarts,
        }
    finally:
        await runner.stop()
        await listener.kill()


async def measure_frozen(ffmpeg: FFmpegBinary, video: Path, kbps: float | None) -> dict[str, Any]:
    """Seconds from the ingest freezing (connection open, nothing read) to the target off air."""
    listener = Listener()
    await listener.start()
    timing = RunnerTiming(send_buffer=send_buffer_for(kbps))  # as the daemon sets it
    runner = TargetRunner(ffmpeg, listener.url("bench-frozen"), [video], timing=timing)
    runner.start()
    try:
        await wait_live([runner])
        await asyncio.sleep(3)
        assert listener.proc is not None
        listener.proc.send_signal(signal.SIGUSR1)  # freeze
        frozen = time.monotonic()
        while runner.status.state is TargetState.LIVE:
            if time.monotonic() - frozen > 60:
                raise RuntimeError("a frozen ingest was never detected")
            await asyncio.sleep(0.05)
        return {
            "detect_s": round(time.monotonic() - frozen, 2),
            "stall_after_s": timing.stall_after,
            "send_buffer": timing.send_buffer,
        }
    finally:
        await runner.stop()
        await listener.kill()


async def measure_long_loop(ffmpeg: FFmpegBinary, work: Path, hours: float) -> dict[str, Any]:
    """A small prepared clip looped for `hours` of media without -re, into nginx-rtmp."""
    if not nginx_available():
        return {"skipped": "nginx with libnginx-mod-rtmp is not installed"}
    clip = work / "loop-source.mp4"
    make_small_clip(ffmpeg.path, clip)
    ready = await prepare(ffmpeg, clip, work / "loop.mp4", EncodeProfile(video_kbps=150))
    seconds = ready.probe.duration or 10.0
    plays = max(1, round(hours * 3600 / seconds))
    ingest = NginxRtmp(work / "nginx", keys={"bench-loop"}, record=False)
    await ingest.start()
    try:
        argv = build_push_argv(ffmpeg.path, [ready.path], f"{ingest.url}/bench-loop", plays)
        argv.remove("-re")  # simulated: as fast as the machine goes
        return await _run_loop(argv, DEFAULT_TIMING.stall_after, plays * seconds)
    finally:
        await ingest.stop()


async def _run_loop(argv: list[str], stall_after: float, media_s: float) -> dict[str, Any]:
    proc = await spawn(argv)
    assert proc.stdout is not None
    parser, stalls, longest = ProgressParser(), 0, 0.0
    start = last = time.monotonic()
    lines = iter_lines(proc.stdout)
    try:
        while True:
            try:
                line = await asyncio.wait_for(lines.__anext__(), 120)
            except StopAsyncIteration:
                break
            if parser.feed(line) is None:
                continue
            now = time.monotonic()
            gap, last = now - last, now
            longest = max(longest, gap)
            stalls += gap > stall_after
        code = await proc.wait()
    finally:
        await stop_process(proc, quit_wait=0, term_wait=2.0)
    wall = time.monotonic() - start
    reached = parser.last.out_time if parser.last and parser.last.out_time else 0.0
    return {
        "media_hours": round(media_s / 3600, 2),
        "reached_hours": round(reached / 3600, 3),
        "wall_s": round(wall, 1),
        "speed": round(reached / wall, 1),
        "stalls": stalls,
        "longest_progress_gap_s": round(longest, 2),
        "exit_code": code,
    }


def make_small_clip(ffmpeg: str, path: Path) -> None:
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-nostdin"]
        + ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=10"]
        + ["-f", "lavfi", "-i", "sine=sample_rate=48000:duration=10"]
        + ["-c:v", "libx264", "-preset", "superfast", "-profile:v", "main", "-g", "60"]
        + ["-b:v", "150k", "-maxrate", "150k", "-bufsize", "150k", "-c:a", "aac", "-ac", "2"]
        + [str(path)],
        check=True,
        timeout=120,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ffmpeg = find_ffmpeg()
    work = Path(tempfile.mkdtemp(prefix="streamerhub-bench-"))
    listener = Listener()
    try:
        source = make_source(ffmpeg.path, work / "source.mp4", args.clip_seconds)
        ready = await prepare(ffmpeg, source, work / "prepared.mp4", EncodeProfile(video_kbps=6000))
        await listener.start()
        copy = await measure_copy(ffmpeg, ready.path, listener, args.targets, args.seconds)
        transcode = await measure_transcode(
            ffmpeg, ready.path, listener, min(args.seconds, args.transcode_seconds)
        )
        recovery = [
            await measure_recovery(ffmpeg, ready.path, float(down))
            for down in args.down_seconds.split(",")
        ]
        reset = await measure_reset_outage(ffmpeg, ready.path, args.reset_seconds)
        frozen = await measure_frozen(ffmpeg, ready.path, ready.probe.video_kbps)
        loop = await measure_long_loop(ffmpeg, work, args.loop_hours)
    finally:
        await listener.kill()
        shutil.rmtree(work, ignore_errors=True)
    media = ready.probe
    return {
        "copy_cpu_pct_per_target": copy["cpu_pct"],
        "transcode_cpu_pct_per_target": transcode["cpu_pct"],
        "copy_vs_transcode": round(transcode["cpu_pct"] / max(copy["cpu_pct"], 0.01), 1),
        f"min_speed_{args.targets}_targets": min(copy["speeds"]),
        "min_speed_8_targets": min(copy["speeds"]) if args.targets == 8 else None,
        "recovery_s": max(r["recovery_s"] for r in recovery),
        "reset_outage_recovery_s": reset["recovery_s"],
        "reset_outage_failed": reset["failed"],
        "frozen_detect_s": frozen["detect_s"],
        "loop_24h_stalls": loop.get("stalls"),
        "detail": {
            "reset_outage": reset,
            "frozen": frozen,
            "loop": loop,
            "seconds": args.seconds,
            "targets": args.targets,
            "speeds": copy["speeds"],
            "ffmpeg_reported_speeds": copy["ffmpeg_speeds"],
            "copy_restarts": copy["restarts"],
            "transcode_speed": transcode["speed"],
            "transcode_raw_cpu_pct": transcode["raw_cpu_pct"],
            "recovery": recovery,
            "file": {
                "width": media.video.width,
                "height": media.video.height,
                "fps": media.video.fps,
                "video_kbps": media.video_kbps,
                "prepared_mode": ready.mode,
            },
            "ffmpeg": ffmpeg.version,
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="copy-mode window (60)")
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--transcode-seconds", type=float, default=20)
    parser.add_argument(
        "--clip-seconds",
        type=int,
        default=10,
        help="length of the generated file (pushed in a loop)",
    )
    parser.add_argument(
        "--down-seconds",
        default="4,20",
        help="how long the ingest stays dead, per recovery trial (4,20)",
    )
    parser.add_argument(
        "--reset-seconds", type=float, default=40, help="handshake-resetting outage (40)"
    )
    parser.add_argument("--loop-hours", type=float, default=24, help="simulated loop (24)")
    setup_logging("info", "pretty")  # logs on stderr: stdout carries the JSON only
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
