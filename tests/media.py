"""Small test videos made with FFmpeg's lavfi sources (testsrc2 + sine), and process checks.

Clips are 320x240 and a few seconds long so the whole set is generated in about a second on a
2-core machine; `media_set` makes them once per test session.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import pytest


def ffmpeg_exe() -> str:
    """The FFmpeg the tests use (the bundled one; there is no ffmpeg on PATH here)."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def make_clip(
    path: Path,
    *,
    seconds: float = 4,
    size: str = "320x240",
    rate: int = 30,
    gop_seconds: float = 2,
    audio_rate: int | None = 48000,
    video: bool = True,
    video_kbps: int = 400,
    tone: int = 440,
) -> Path:
    """Write an H.264/AAC MP4: testsrc2 video with a fixed GOP, a sine tone (or none)."""
    args = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-nostdin"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio_rate:
        args += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone}:sample_rate={audio_rate}:duration={seconds}",
        ]
    if video:
        gop = str(round(rate * gop_seconds))
        args += [
            "-c:v",
            "libx264",
            "-preset",
            "superfast",  # ultrafast makes Constrained Baseline, which preparation re-encodes
            "-profile:v",
            "main",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            f"{video_kbps}k",
            "-maxrate",
            f"{video_kbps}k",
            "-bufsize",
            f"{video_kbps}k",
            "-g",
            gop,
            "-keyint_min",
            gop,
            "-sc_threshold",
            "0",
        ]
    if audio_rate:
        args += ["-c:a", "aac", "-b:a", "96k", "-ac", "2"]
    subprocess.run([*args, "-t", str(seconds), str(path)], check=True, timeout=60)
    return path


@dataclass(frozen=True)
class MediaSet:
    folder: Path
    ready: Path  # 6 s, keyframe every 2 s, AAC 48 kHz: stream-ready as it is
    clip_a: Path  # 3 s each, same shape as each other: a gapless playlist
    clip_b: Path
    long_gop: Path  # 4 s, one keyframe every 8 s, 44.1 kHz audio: must be encoded
    silent: Path  # video only: preparation adds a silent track
    audio_only: Path
    empty: Path
    text: Path
    truncated: Path  # moov atom at the end, cut in half


def build_media_set(folder: Path) -> MediaSet:
    """Generate every test file into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    ready = make_clip(folder / "ready.mp4", seconds=6)
    long_gop = make_clip(folder / "long_gop.mp4", seconds=4, gop_seconds=8, audio_rate=44100)
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(long_gop.read_bytes()[: long_gop.stat().st_size // 2])
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    text = folder / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    return MediaSet(
        folder=folder,
        ready=ready,
        clip_a=make_clip(folder / "clip_a.mp4", seconds=3, tone=440),
        clip_b=make_clip(folder / "clip_b.mp4", seconds=3, tone=880),
        long_gop=long_gop,
        silent=make_clip(folder / "silent.mp4", seconds=3, audio_rate=None),
        audio_only=make_clip(folder / "audio_only.m4a", seconds=2, video=False),
        empty=empty,
        text=text,
        truncated=truncated,
    )


_made: list[MediaSet] = []


@pytest.fixture(scope="session")
def media_set(tmp_path_factory: pytest.TempPathFactory) -> MediaSet:
    """The test videos, generated once per session (even when several modules import this)."""
    if not _made:
        _made.append(build_media_set(tmp_path_factory.mktemp("media")))
    return _made[0]


# --------------------------------------------------------------------------- processes


def child_pids(pid: int | None = None) -> set[int]:
    """Every descendant of pid (default: this process), read from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid or os.getpid()}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def is_running(pid: int) -> bool:
    """True when pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def ffmpeg_children() -> list[int]:
    """Live FFmpeg processes descending from this test process."""
    found = []
    for pid in child_pids():
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if "ffmpeg" in Path(exe).name and is_running(pid):
            found.append(pid)
    return found


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of pids runs; return those still running after timeout."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if is_running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


@pytest.fixture
def no_leftover_ffmpeg():
    """Fail a test that leaves an FFmpeg child running (after a short grace period)."""
    yield
    alive = wait_gone(ffmpeg_children(), timeout=3.0)
    for pid in alive:
        os.kill(pid, 9)
    assert not alive, f"FFmpeg children left running: {alive}"
