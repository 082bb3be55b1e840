"""What a media file is, found with ffmpeg alone (there may be no ffprobe), and whether it is
already stream-ready for a profile.

Three cheap reads: the `-i` banner (container, duration, codecs, size, rate, bitrates), the
packet flags of the first ~20 s of video (`-c copy -f framecrc`: keyframe interval without
decoding), and the last seconds of every stream (`-c copy -f null`: a truncated or corrupt tail
shows up as read errors even when the header looks whole).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamerhub.errors import StreamerHubError
from streamerhub.ffmpeg.argv import EncodeProfile
from streamerhub.ffmpeg.binary import FFmpegBinary, ffmpeg_path, run_ffmpeg
from streamerhub.ffmpeg.progress import split_log_line

KEYFRAME_WINDOW = 20.0
# A peak above PEAK_FACTOR × the profile's bitrate over any PEAK_WINDOW seconds needs a
# re-encode. An encode with a VBV of one second at that bitrate (what preparation makes, and
# what Twitch asks for) carries at most bufsize + 2 s × maxrate = 1.5× in 2 s, so it passes.
PEAK_WINDOW = 2.0
PEAK_FACTOR = 1.5
TAIL_SECONDS = 5.0


class ProbeError(StreamerHubError):
    """A file that cannot be streamed; `reason` is one of missing, empty, not_media, truncated,
    no_video, timeout."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    profile: str | None
    pix_fmt: str | None
    width: int
    height: int
    fps: float | None  # the average rate (frames / duration)
    bitrate_kbps: int | None
    nominal_fps: float | None = None  # the stream's declared rate (tbr); differs when VFR

    @property
    def variable_rate(self) -> bool:
        """Phone and screen recordings: the average rate is not the declared one."""
        fps, nominal = self.fps, self.nominal_fps
        return bool(fps and nominal and abs(fps - nominal) > 0.01 * nominal)


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int | None
    channels: str | None  # FFmpeg's layout name: mono, stereo, 5.1, …
    bitrate_kbps: int | None


@dataclass(frozen=True)
class MediaProbe:
    path: Path
    size_bytes: int
    container: str  # FFmpeg's demuxer names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration: float | None
    bitrate_kbps: int | None
    video: VideoInfo
    audio: AudioInfo | None
    keyframe_interval: float | None  # longest gap between keyframes in the first ~20 s
    peak_kbps: int | None = None  # highest video bitrate over any 2 s of the first ~20 s
    audio_tracks: int = 1  # how many audio tracks the file has (only the first is pushed)

    @property
    def video_kbps(self) -> int | None:
        """The video bitrate, or the overall one minus audio when the container hides it."""
        if self.video.bitrate_kbps:
            return self.video.bitrate_kbps
        if self.bitrate_kbps:
            audio = self.audio.bitrate_kbps or 0 if self.audio else 0
            return self.bitrate_kbps - audio
        return None


@dataclass(frozen=True)
class InputInfo:
    """What the `-i` banner says, before any packet is read."""

    container: str
    duration: float | None
    bitrate_kbps: int | None
    video: VideoInfo | None
    audio: AudioInfo | None
    audio_tracks: int = 0


# --------------------------------------------------------------------------------- probing


async def probe(
    ffmpeg: FFmpegBinary | str,
    path: Path,
    *,
    keyframe_window: float = KEYFRAME_WINDOW,
    timeout: float = 60.0,
) -> MediaProbe:
    """Probe a file; ProbeError (with a reason a user understands) when it cannot be streamed."""
    path = Path(path).absolute()
    size = _size_or_raise(path)
    exe = ffmpeg_path(ffmpeg)
    try:
        _, _, banner = await run_ffmpeg(
            [exe, "-hide_banner", "-nostdin", "-i", str(path)], timeout=timeout
        )
        info = parse_input_info(banner)
        if info is None:
            raise _unreadable(path, banner)
        video = _video_or_raise(path, info)
        frames, tail = await asyncio.gather(
            run_ffmpeg(build_keyframe_scan_argv(exe, path, keyframe_window), timeout=timeout),
            run_ffmpeg(build_tail_check_argv(exe, path, info.duration), timeout=timeout),
        )
    except asyncio.TimeoutError:
        raise ProbeError(
            "timeout",
            f"{path.name}: FFmpeg took longer than {timeout:.0f} s "
            "to read it; the file or its disk may be damaged",
        ) from None
    _raise_if_corrupt(path, frames[2] + tail[2])
    return MediaProbe(
        path,
        size,
        info.container,
        info.duration,
        info.bitrate_kbps,
        video,
        info.audio,
        keyframe_gap(parse_keyframe_times(frames[1])),
        peak_kbps(frames[1]),
        info.audio_tracks,
    )


def build_keyframe_scan_argv(ffmpeg: str, path: Path, window: float) -> list[str]:
    """One line per video packet of the first `window` seconds, keyframes unflagged."""
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-c",
        "copy",
        "-t",
        str(window),
        "-f",
        "framecrc",
        "-",
    ]


def build_tail_check_argv(ffmpeg: str, path: Path, duration: float | None) -> list[str]:
    """Read (not decode) the last seconds of every stream; errors mean a damaged file."""
    start = max(0.0, (duration or 0.0) - TAIL_SECONDS)
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-ss",
        f"{start:.3f}",
        "-i",
        str(path),
        "-map",
        "0",
        "-c",
        "copy",
        "-f",
        "null",
        "-",
    ]


def _size_or_raise(path: Path) -> int:
    try:
        stat = path.stat()
    except OSError as exc:
        raise ProbeError("missing", f"{path.name}: cannot read it ({exc.strerror})") from exc
    if not path.is_file():
        raise ProbeError("missing", f"{path.name}: not a regular file")
    if stat.st_size == 0:
        raise ProbeError("empty", f"{path.name}: the file is empty (0 bytes); upload it again")
    if not os.access(path, os.R_OK):
        raise ProbeError("missing", f"{path.name}: no permission to read it")
    return stat.st_size


def _unreadable(path: Path, banner: str) -> ProbeError:
    if "misdetection possible" in banner:  # FFmpeg only guessed the format from the name
        return ProbeError("not_media", f"{path.name}: not a video file FFmpeg can read")
    if "moov atom not found" in banner:
        return ProbeError(
            "truncated",
            f"{path.name}: the MP4 is incomplete (no index, "
            "'moov atom not found'): the upload or recording was cut short",
        )
    return ProbeError(
        "not_media",
        f"{path.name}: FFmpeg cannot open it ({_last_message(banner) or 'unknown format'})",
    )


# Still-image decoders: a PNG renamed .mp4 used to be "prepared" and streamed at ~1 fps.
_IMAGE_CODECS = frozenset({"png", "mjpeg", "bmp", "gif", "webp", "tiff", "jpegls", "qoi"})


def _video_or_raise(path: Path, info: InputInfo) -> VideoInfo:
    if info.video is not None:
        still = info.container.endswith("_pipe") or info.container == "image2"
        if info.video.codec in _IMAGE_CODECS and (still or not info.duration):
            raise ProbeError(
                "no_video",
                f"{path.name}: a still image ({info.video.codec}), not a video; "
                "make a video of it first (e.g. with a video editor)",
            )
        return info.video
    if info.audio is not None:
        raise ProbeError(
            "no_video",
            f"{path.name}: audio only ({info.audio.codec}); a stream needs a video track",
        )
    raise ProbeError("no_video", f"{path.name}: no video track")


_CORRUPT = re.compile(
    r"partial file|Invalid NAL|corrupt|truncat|Invalid data|"
    r"error reading|Packet mismatch|missing picture",
    re.I,
)


def _raise_if_corrupt(path: Path, stderr: str) -> None:
    bad = [text for _, text in map(split_log_line, stderr.splitlines()) if _CORRUPT.search(text)]
    if bad:
        raise ProbeError(
            "truncated", f"{path.name}: the file is truncated or damaged ({bad[0].strip()[:160]})"
        )


def _last_message(stderr: str) -> str | None:
    lines = [split_log_line(line)[1].strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else None


# --------------------------------------------------------------------------------- parsing

_INPUT = re.compile(r"^Input #0, (.+?), from '")
_DURATION = re.compile(r"^\s*Duration: (?:(\d+):(\d\d):(\d\d(?:\.\d+)?)|N/A)")
_TOTAL_BITRATE = re.compile(r"bitrate: (\d+) kb/s")
_STREAM = re.compile(r"^\s*Stream #0:\d+(?:\[[^\]]*\])?(?:\([^)]*\))?: (Video|Audio): (.*)$")


def parse_input_info(stderr: str) -> InputInfo | None:
    """Parse the `ffmpeg -i FILE` banner; None when FFmpeg could not open the input."""
    container, duration, bitrate = None, None, None
    video: VideoInfo | None = None
    audio: AudioInfo | None = None
    audio_tracks = 0
    for raw in stderr.splitlines():
        line = split_log_line(raw)[1]
        if (match := _INPUT.match(line)) and container is None:
            container = match.group(1)
        elif (match := _DURATION.match(line)) and duration is None:
            duration = _hms(match.groups())
            bitrate = _first_int(_TOTAL_BITRATE, line)
        elif match := _STREAM.match(line):
            kind, rest = match.groups()
            if kind == "Video" and video is None and "(attached pic)" not in rest:
                video = parse_video_stream(rest)
            elif kind == "Audio":
                audio_tracks += 1
                audio = audio or parse_audio_stream(rest)
    if container is None:
        return None
    return InputInfo(container, duration, bitrate, video, audio, audio_tracks)


def parse_video_stream(rest: str) -> VideoInfo | None:
    """'h264 (High) (avc1 / …), yuv420p(progressive), 1280x720 [SAR …], 2500 kb/s, 30 fps, …'."""
    parts = split_top_level(rest)
    codec, profile = _codec(parts[0])
    size = next((m for p in parts if (m := re.match(r"(\d+)x(\d+)", p))), None)
    if size is None:
        return None
    pix_fmt = parts[1].split("(")[0].strip() if len(parts) > 1 else None
    tbr = _rate(parts, "tbr")
    fps = _rate(parts, "fps") or tbr
    return VideoInfo(
        codec, profile, pix_fmt, int(size.group(1)), int(size.group(2)), fps, _kbps(parts), tbr
    )


def parse_audio_stream(rest: str) -> AudioInfo:
    """'aac (LC) (mp4a / …), 48000 Hz, stereo, fltp, 160 kb/s'."""
    parts = split_top_level(rest)
    codec, _ = _codec(parts[0])
    rate = next((int(m.group(1)) for p in parts if (m := re.fullmatch(r"(\d+) Hz", p))), None)
    channels = parts[2] if len(parts) > 2 and not parts[2].endswith("kb/s") else None
    return AudioInfo(codec, rate, channels, _kbps(parts))


def split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and brackets."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def _codec(part: str) -> tuple[str, str | None]:
    name = part.split(" ")[0]
    groups = re.findall(r"\(([^()]*)\)", part)
    profile = next((g for g in groups if " / " not in g), None)
    return name, profile


def _rate(parts: Sequence[str], unit: str) -> float | None:
    for part in parts:
        if match := re.fullmatch(rf"(\d+(?:\.\d+)?)(k?) {unit}", part.split(" (")[0]):
            return float(match.group(1)) * (1000 if match.group(2) else 1)
    return None


def _kbps(parts: Sequence[str]) -> int | None:
    return next((int(m.group(1)) for p in parts if (m := re.match(r"(\d+) kb/s", p))), None)


def _hms(groups: tuple[str | None, ...]) -> float | None:
    h, m, s = groups
    return None if h is None else int(h) * 3600 + int(m or 0) * 60 + float(s or 0)


def _first_int(pattern: re.Pattern[str], text: str) -> int | None:
    match = pattern.search(text)
    return int(match.group(1)) if match else None


def parse_keyframe_times(framecrc: str) -> tuple[list[float], float]:
    """framecrc → (keyframe times in seconds, end of the last packet in seconds)."""
    timebase, keys, end = 1.0, [], 0.0
    for line in framecrc.splitlines():
        if match := re.match(r"#tb 0: (\d+)/(\d+)", line):
            timebase = int(match.group(1)) / int(match.group(2))
        elif line[:2] == "0,":
            fields = [f.strip() for f in line.split(",")]
            pts, duration = int(fields[2]) * timebase, int(fields[3]) * timebase
            end = max(end, pts + duration)
            flags = fields[6] if len(fields) > 6 else ""
            if not flags or int(flags.removeprefix("F="), 16) & 1:
                keys.append(pts)
    return sorted(keys), end


def peak_kbps(framecrc: str, window: float = PEAK_WINDOW) -> int | None:
    """Highest bitrate over any `window` seconds of the scanned packets (what an ingest and a
    viewer's connection have to absorb; the average hides it)."""
    timebase, packets = 1.0, []
    for line in framecrc.splitlines():
        if match := re.match(r"#tb 0: (\d+)/(\d+)", line):
            timebase = int(match.group(1)) / int(match.group(2))
        elif line[:2] == "0,":
            fields = [f.strip() for f in line.split(",")]
            packets.append((int(fields[1]) * timebase, int(fields[4])))
    if not packets:
        return None
    packets.sort()
    best, total, start = 0, 0, 0
    for time_s, size in packets:
        total += size
        while packets[start][0] <= time_s - window:
            total -= packets[start][1]
            start += 1
        best = max(best, total)
    return round(best * 8 / 1000 / window)


def keyframe_gap(scan: tuple[list[float], float]) -> float | None:
    """Longest distance between keyframes, counting the stretch after the last one."""
    keys, end = scan
    if not keys:
        return None
    marks = [*keys, max(end, keys[-1])]
    return round(max(b - a for a, b in itertools.pairwise(marks)) if len(marks) > 1 else 0.0, 3)


@dataclass(frozen=True)
class StreamSpan:
    """Where the first video and audio tracks really end, from their packets (seconds)."""

    video_end: float
    audio_start: float  # negative: the AAC encoder's priming samples before the content
    audio_end: float

    @property
    def audio_overhang(self) -> float:
        """How far the audio reaches past the point where, in a playlist, the next file's
        priming packet begins (this file's duration minus that priming): > 0 is a duplicate
        audio timestamp at the join."""
        return self.audio_end - (self.video_end + min(0.0, self.audio_start))


def build_span_scan_argv(ffmpeg: str, path: Path) -> list[str]:
    """One line per packet of the first video and audio tracks, whole file, nothing decoded."""
    return [
        *(ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", str(path)),
        *("-map", "0:v:0", "-map", "0:a:0", "-c", "copy", "-f", "framecrc", "-"),
    ]


def parse_stream_span(framecrc: str) -> StreamSpan | None:
    """framecrc of (video, audio) → their span; None when either track has no packet."""
    timebases: dict[str, float] = {}
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for line in framecrc.splitlines():
        if match := re.match(r"#tb (\d+): (\d+)/(\d+)", line):
            timebases[match.group(1)] = int(match.group(2)) / int(match.group(3))
        elif line[:2] in ("0,", "1,"):
            fields = [f.strip() for f in line.split(",")]
            tb = timebases.get(fields[0], 1.0)
            pts, duration = int(fields[2]) * tb, int(fields[3]) * tb
            starts[fields[0]] = min(starts.get(fields[0], pts), pts)
            ends[fields[0]] = max(ends.get(fields[0], pts + duration), pts + duration)
    if "0" not in ends or "1" not in ends:
        return None
    return StreamSpan(round(ends["0"], 6), round(starts["1"], 6), round(ends["1"], 6))


async def stream_span(
    ffmpeg: FFmpegBinary | str, path: Path, timeout: float = 120.0
) -> StreamSpan | None:
    """The span of a file's first video and audio tracks (a read of every packet, no decode)."""
    _, out, _ = await run_ffmpeg(build_span_scan_argv(ffmpeg_path(ffmpeg), path), timeout=timeout)
    return parse_stream_span(out)


# ------------------------------------------------------------------------------ compliance


def compliance_issues(media: MediaProbe, profile: EncodeProfile) -> list[str]:
    """Why a file is not stream-ready as it is (empty: it only needs a remux)."""
    return video_issues(media, profile) + _audio_issues(media.audio, profile)


def audio_only_issues(media: MediaProbe, profile: EncodeProfile) -> bool:
    """True when only the audio track needs work: the video can be copied as it is."""
    return not video_issues(media, profile) and media.audio is not None


def video_issues(media: MediaProbe, profile: EncodeProfile) -> list[str]:
    """Why the video track is not stream-ready as it is."""
    v = media.video
    issues = []
    if v.codec != "h264":
        issues.append(f"video is {v.codec}, not H.264")
    elif (v.profile or "").lower() not in ("main", "high"):
        issues.append(f"H.264 profile {v.profile or 'unknown'} is not Main or High")
    if v.pix_fmt not in ("yuv420p", "yuvj420p"):
        issues.append(f"pixel format {v.pix_fmt} is not yuv420p")
    if v.height > profile.max_height:
        issues.append(f"height {v.height} is above {profile.max_height}")
    if v.fps is None or v.fps > profile.max_fps + 0.01:
        issues.append(f"frame rate {v.fps or 'unknown'} is above {profile.max_fps:g}")
    if v.variable_rate:
        issues.append(f"variable frame rate (average {v.fps:g} fps, nominal {v.nominal_fps:g})")
    slack = 1 / v.fps + 0.05 if v.fps else 0.1
    gap = media.keyframe_interval
    if gap is None or gap > profile.keyframe_seconds + slack:
        issues.append(f"keyframes every {gap or '?'} s, not every {profile.keyframe_seconds:g} s")
    kbps = media.video_kbps
    if kbps is None or kbps > profile.video_kbps * 1.15:
        issues.append(f"video bitrate {kbps or '?'} kbit/s is above {profile.video_kbps}")
    if media.peak_kbps and media.peak_kbps > profile.video_kbps * PEAK_FACTOR:
        issues.append(
            f"video peaks at {media.peak_kbps} kbit/s over {PEAK_WINDOW:g} s "
            f"(at most {round(profile.video_kbps * PEAK_FACTOR)})"
        )
    return issues


def _audio_issues(a: AudioInfo | None, profile: EncodeProfile) -> list[str]:
    if a is None:
        return ["no audio track"]
    issues = []
    if a.codec != "aac":
        issues.append(f"audio is {a.codec}, not AAC")
    if a.channels != "stereo":
        issues.append(f"audio is {a.channels or 'of unknown layout'}, not stereo")
    if a.sample_rate != profile.audio_rate:
        issues.append(f"audio sample rate {a.sample_rate} Hz is not {profile.audio_rate}")
    if a.bitrate_kbps and a.bitrate_kbps > profile.audio_kbps * 1.25:
        issues.append(f"audio bitrate {a.bitrate_kbps} kbit/s is above {profile.audio_kbps}")
    return issues


def complies(media: MediaProbe, profile: EncodeProfile) -> bool:
    """True when the file is already stream-ready for profile (a remux is enough)."""
    return not compliance_issues(media, profile)


def playlist_issues(
    items: Sequence[MediaProbe], names: Mapping[str, str] | None = None
) -> list[str]:
    """Why these files cannot be played back to back in one copy-mode push (empty: they can).

    `names` maps a file's path to how the user knows it (internal file names mean nothing).
    """
    names = names or {}

    def name(m: MediaProbe) -> str:
        return names.get(str(m.path), m.path.name)

    def shape(m: MediaProbe) -> tuple[object, ...]:
        a = m.audio
        return (
            m.video.codec,
            m.video.width,
            m.video.height,
            m.video.fps,
            m.video.pix_fmt,
            a and a.codec,
            a and a.sample_rate,
            a and a.channels,
        )

    first = items[0] if items else None
    return [
        f"{name(m)} differs from {name(first)}: {_shape_text(shape(m))} "
        f"vs {_shape_text(shape(first))}"
        for m in items[1:]
        if first is not None and shape(m) != shape(first)
    ]


def _shape_text(shape: tuple[object, ...]) -> str:
    codec, width, height, fps, pix_fmt, acodec, rate, channels = shape
    audio = f"{acodec} {rate} Hz {channels} ch" if acodec else "no audio"
    return f"{codec} {width}x{height} {fps} fps {pix_fmt}, {audio}"
