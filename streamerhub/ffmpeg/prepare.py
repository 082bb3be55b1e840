"""Prepare a video once so every target can copy it: encode when needed, else only remux.

The output is written under a hidden temporary name next to `dst` and renamed into place only
when FFmpeg succeeded, so `dst` is either absent or complete. Cancelling the awaiting task
kills FFmpeg and removes the partial file.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from streamerhub.errors import StreamerHubError
from streamerhub.ffmpeg.argv import (
    DEFAULT_PROFILE,
    EncodeProfile,
    build_audio_fix_argv,
    build_audio_trim_argv,
    build_prepare_argv,
    build_remux_argv,
    plan_video,
)
from streamerhub.ffmpeg.binary import (
    FFmpegBinary,
    ffmpeg_path,
    iter_lines,
    spawn,
    stop_process,
)
from streamerhub.ffmpeg.probe import (
    MediaProbe,
    audio_only_issues,
    compliance_issues,
    probe,
    stream_span,
)
from streamerhub.ffmpeg.progress import ProgressParser, first_error
from streamerhub.log import redact

ProgressCallback = Callable[[float], None]


class PrepareError(StreamerHubError):
    """FFmpeg could not normalise or remux the file."""


@dataclass(frozen=True)
class PreparedMedia:
    """The stream-ready file and how it was made."""

    path: Path
    mode: Literal["encode", "remux"]
    reasons: tuple[str, ...]  # why the source was not stream-ready (empty for a remux)
    probe: MediaProbe  # of the output
    seconds: float  # wall-clock time it took


async def prepare(
    ffmpeg: FFmpegBinary | str,
    src: Path,
    dst: Path,
    profile: EncodeProfile = DEFAULT_PROFILE,
    *,
    source: MediaProbe | None = None,
    on_progress: ProgressCallback | None = None,
    force_encode: bool = False,
) -> PreparedMedia:
    """Make dst a stream-ready MP4 of src; on_progress gets 0..1 as it goes."""
    started = time.monotonic()
    exe = ffmpeg_path(ffmpeg)
    source = source or await probe(exe, src)
    reasons = tuple(compliance_issues(source, profile))
    encode = force_encode or bool(reasons)
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.part")
    if not encode:
        argv = build_remux_argv(exe, src, tmp)
    elif not force_encode and audio_only_issues(source, profile):
        argv = build_audio_fix_argv(exe, src, tmp, profile)
    else:
        plan = plan_video(source.video.width, source.video.height, nominal_rate(source), profile)
        argv = build_prepare_argv(exe, src, tmp, plan, profile, has_audio=source.audio is not None)
    try:
        await run_with_progress(argv, source.duration, on_progress)
        await align_audio_end(exe, tmp, profile)
        result = await probe(exe, tmp)
        _fsync(tmp)
        os.replace(tmp, dst)
        _fsync(dst.parent)
    finally:
        tmp.unlink(missing_ok=True)
    if on_progress:
        on_progress(1.0)
    return PreparedMedia(
        dst,
        "encode" if encode else "remux",
        reasons,
        replace(result, path=dst),
        round(time.monotonic() - started, 3),
    )


async def align_audio_end(exe: str, path: Path, profile: EncodeProfile) -> bool:
    """End the audio one AAC priming span before the video, so playlists join cleanly.

    In a playlist (FFmpeg's concat demuxer) the next file starts at this file's duration, and
    its first audio packet (the encoder's priming, before its content) one priming span
    earlier. Audio that runs as long as the video therefore overlapped it: a duplicate audio
    timestamp at every join. The last ~21 ms of audio are cut (re-encoding the audio only;
    the video is copied); the next file's priming packet fills exactly that span.
    True when the file was rewritten.
    """
    span = await stream_span(exe, path)
    if span is None or span.audio_overhang <= 0.5 / profile.audio_rate:
        return False
    end = span.video_end + min(0.0, span.audio_start)
    aligned = path.with_name(path.name + ".aligned.mp4")
    try:
        argv = build_audio_trim_argv(exe, path, aligned, round(end * profile.audio_rate), profile)
        await run_with_progress(argv, None, None)
        os.replace(aligned, path)
    finally:
        aligned.unlink(missing_ok=True)
    return True


def nominal_rate(media: MediaProbe) -> float | None:
    """The rate to encode at: the declared one for a variable-rate source, else the average."""
    video = media.video
    return video.nominal_fps if video.variable_rate else video.fps


async def run_with_progress(
    argv: list[str], duration: float | None, on_progress: ProgressCallback | None
) -> None:
    """Run one FFmpeg job to completion, reporting out_time/duration; PrepareError on failure."""
    proc = await spawn(argv, stdin=subprocess.DEVNULL)
    tail: deque[str] = deque(maxlen=100)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        await asyncio.gather(
            _report(proc.stdout, duration, on_progress), _collect(proc.stderr, tail)
        )
        code = await proc.wait()
    finally:  # cancelled, or a callback raised: the child must not outlive us
        await stop_process(proc, quit_wait=0, term_wait=2.0)
    if code != 0:
        reason = first_error(tail) or (tail[-1] if tail else "no output")
        raise PrepareError(f"FFmpeg failed (exit code {code}): {redact(reason)}")


async def _report(
    stdout: asyncio.StreamReader, duration: float | None, on_progress: ProgressCallback | None
) -> None:
    parser, reported = ProgressParser(), -1.0
    async for line in iter_lines(stdout):
        block = parser.feed(line)
        if block is None or on_progress is None or not duration or block.out_time is None:
            continue
        fraction = round(min(1.0, max(0.0, block.out_time / duration)), 3)
        if fraction != reported:
            reported = fraction
            on_progress(fraction)


async def _collect(stderr: asyncio.StreamReader, tail: deque[str]) -> None:
    async for line in iter_lines(stderr):
        if line.strip():
            tail.append(redact(line))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
