"""Pure builders of FFmpeg argv lists, in layers: global → input → progress → output.

Nothing here runs a process or touches the disk; every function returns a new list or string,
so the exact command of every push and every preparation is testable as data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from streamerhub.log import MASK

DEFAULT_IO_TIMEOUT = 10.0
DEFAULT_SEND_BUFFER = 512 * 1024


@dataclass(frozen=True)
class EncodeProfile:
    """What "stream-ready" means for a job: the target of normalisation and of `complies()`."""

    video_kbps: int = 2500
    audio_kbps: int = 160
    audio_rate: int = 48000
    keyframe_seconds: float = 2.0
    max_height: int = 1080
    max_fps: float = 60.0
    preset: str = "veryfast"

    def __post_init__(self) -> None:
        if not 100 <= self.video_kbps <= 50_000:
            raise ValueError(f"video_kbps {self.video_kbps} is outside 100..50000")
        if not 32 <= self.audio_kbps <= 512:
            raise ValueError(f"audio_kbps {self.audio_kbps} is outside 32..512")
        if self.audio_rate not in (44100, 48000):
            raise ValueError(f"audio_rate {self.audio_rate} must be 44100 or 48000")
        if not 0.5 <= self.keyframe_seconds <= 10:
            raise ValueError(f"keyframe_seconds {self.keyframe_seconds} is outside 0.5..10")


DEFAULT_PROFILE = EncodeProfile()  # frozen: safe to share as a default argument

# Video kbit/s recommended for a height and frame rate (Twitch's and YouTube's guidance for
# live H.264): (height at least, fps above 31) → kbit/s, first match wins.
RECOMMENDED_KBPS = (
    (1080, True, 6000),
    (1080, False, 4500),
    (720, True, 4500),
    (720, False, 3000),
    (480, False, 1500),
    (0, False, 800),
)


def recommended_kbps(height: int, fps: float | None) -> int:
    """The bitrate a platform recommends for this output size and rate."""
    fast = bool(fps and fps > 31)
    for at_least, needs_fast, kbps in RECOMMENDED_KBPS:
        if height >= at_least and (fast or not needs_fast):
            return kbps
    return RECOMMENDED_KBPS[-1][2]


@dataclass(frozen=True)
class VideoPlan:
    """Output geometry of a normalisation: even dimensions, capped height and frame rate."""

    width: int
    height: int
    fps: Fraction


# ------------------------------------------------------------------------------------ layers


def build_global_args(ffmpeg: str, *, overwrite: bool = False) -> list[str]:
    """First layer: the binary, no banner, no interactive stats, levelled log lines."""
    args = [ffmpeg, "-hide_banner", "-nostats", "-loglevel", "level+info"]
    return [*args, "-y"] if overwrite else args


def build_progress_args(target: str = "pipe:1", period: float = 1.0) -> list[str]:
    """Progress layer: machine-readable key=value blocks every `period` seconds."""
    return ["-progress", target, "-stats_period", _num(period)]


def build_concat_list(inputs: Sequence[Path]) -> str:
    """Text of an ffconcat playlist: absolute paths, single-quoted, quotes escaped."""
    if not inputs:
        raise ValueError("a playlist needs at least one file")
    lines = ["ffconcat version 1.0"]
    for path in inputs:
        text = os.fspath(Path(path).absolute())
        if any(c in text for c in "\n\r\0"):
            raise ValueError(f"file name {text!r} contains a line break or NUL")
        lines.append("file '" + text.replace("'", "'\\''") + "'")
    return "\n".join(lines) + "\n"


def loop_count(loop: int | None) -> int:
    """-stream_loop value for `loop` plays of the playlist (None = forever)."""
    if loop is None:
        return -1
    if loop < 1:
        raise ValueError(f"loop must be None (forever) or at least 1 play, not {loop}")
    return loop - 1


def build_push_input_args(
    source: Path, *, concat: bool, loop: int | None, start_at: float = 0.0
) -> list[str]:
    """Input layer of a push: real-time read, loops inside FFmpeg, optional resume offset."""
    args = ["-re", "-stream_loop", str(loop_count(loop))]
    if start_at > 0:
        args += ["-ss", _num(round(start_at, 3))]
    if concat:
        args += ["-f", "concat", "-safe", "0"]
    return [*args, "-i", _file(source)]


def build_push_output_args(
    url: str,
    *,
    io_timeout: float = DEFAULT_IO_TIMEOUT,
    send_buffer: int | None = DEFAULT_SEND_BUFFER,
    ca_file: str | None = None,
) -> list[str]:
    """Output layer of a push: copy both streams into FLV over RTMP(S), with I/O bounds.

    `-rw_timeout` makes a blocked socket an error instead of a hang; a bounded send buffer
    makes a stalled ingest show up as stalled progress within seconds instead of after the
    kernel has queued megabytes.
    """
    args = [
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
        "-c",
        "copy",
        "-f",
        "flv",
        "-flvflags",
        "no_duration_filesize",
        "-rw_timeout",
        str(int(io_timeout * 1_000_000)),
    ]
    if send_buffer:
        args += ["-send_buffer_size", str(send_buffer)]
    return [*args, *build_tls_args(url, ca_file), url]


def build_tls_args(url: str, ca_file: str | None = None) -> list[str]:
    """For rtmps://: verify the ingest's certificate (against `ca_file` when given).

    Without these, whether the certificate is checked depends on which FFmpeg runs: a distro
    FFmpeg 5.1 pushed the key to a self-signed endpoint (a man in the middle) without a check.
    """
    if urlsplit(url).scheme.lower() != "rtmps":
        return []
    return ["-tls_verify", "1", *(["-ca_file", ca_file] if ca_file else [])]


def build_push_argv(
    ffmpeg: str,
    inputs: Sequence[Path],
    url: str,
    loop: int | None = None,
    progress: str = "pipe:1",
    *,
    concat_list: Path | None = None,
    start_at: float = 0.0,
    io_timeout: float = DEFAULT_IO_TIMEOUT,
    send_buffer: int | None = DEFAULT_SEND_BUFFER,
    progress_period: float = 1.0,
    ca_file: str | None = None,
) -> list[str]:
    """argv of one copy-mode push of `inputs` (played `loop` times, None = forever) to `url`.

    Several inputs play gaplessly in one connection through the concat demuxer: write
    `build_concat_list(inputs)` to `concat_list` first. `stdin` stays open: it carries `q`.
    """
    if not inputs:
        raise ValueError("nothing to push: no input files")
    if concat_list is None and len(inputs) > 1:
        raise ValueError("several inputs need concat_list (write build_concat_list() to it)")
    source = concat_list if concat_list is not None else Path(inputs[0])
    return [
        *build_global_args(ffmpeg),
        *build_push_input_args(
            source, concat=concat_list is not None, loop=loop, start_at=start_at
        ),
        *build_progress_args(progress, progress_period),
        *build_push_output_args(
            url, io_timeout=io_timeout, send_buffer=send_buffer, ca_file=ca_file
        ),
    ]


# ------------------------------------------------------------------------- push helpers


def masked_url(url: str) -> str:
    """rtmp://host/app/KEY?x=y → rtmp://host/app/••••: the last path segment and query hidden."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    if len([s for s in segments if s]) >= 2:
        segments[-1] = MASK
    query = MASK if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc, "/".join(segments), query, ""))


def url_secrets(url: str, key: str | None = None) -> list[str]:
    """Strings that reveal the stream key: the key, its URL-encoded form, the URL's tail."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    found = [key] if key and len(key) >= 4 else []
    # Only key-like tails: masking a short word such as "live" everywhere would shred logs.
    found += [t for t in (segments[-1] if len(segments) >= 2 else "", parts.query) if len(t) >= 8]
    found += [quote(s, safe="") for s in list(found)]
    return sorted(set(found), key=len, reverse=True)


def resume_point(
    position: float, duration: float | None, loop: int | None
) -> tuple[float, int | None] | None:
    """(seek offset, plays left) to continue a playlist after `position` seconds were pushed;
    None when a finite playlist is already done."""
    if not duration or duration <= 0:
        return 0.0, loop
    plays_done, offset = divmod(position, duration)
    left = None if loop is None else loop - int(plays_done)
    if left is not None and left <= 0:
        return None
    return round(offset, 3), left


# ------------------------------------------------------------------------------ preparation


def plan_video(width: int, height: int, fps: float | None, profile: EncodeProfile) -> VideoPlan:
    """Keep the source size and rate, capped at the profile's height and fps, dims even.

    `fps` is the source's nominal rate: a variable-rate recording's average (40.13) made odd
    output rates and keyframes that drift off the 2 s grid.
    """
    scaled_width: float = width
    if height > profile.max_height:
        scaled_width, height = width * profile.max_height / height, profile.max_height
    rate = fps_fraction(fps if fps and fps > 0 else 30.0)
    if rate > Fraction(profile.max_fps).limit_denominator(1001):
        rate = Fraction(profile.max_fps).limit_denominator(1001)
    return VideoPlan(_even(scaled_width), _even(height), rate)


def fps_fraction(fps: float) -> Fraction:
    """29.97 → 30000/1001 (the NTSC rates), 25.0 → 25, anything else to 1/1000 precision."""
    for ntsc in (24, 30, 48, 60, 120):
        if abs(fps - ntsc * 1000 / 1001) < 0.01:
            return Fraction(ntsc * 1000, 1001)
    return Fraction(round(fps * 1000), 1000)


def gop_frames(plan: VideoPlan, profile: EncodeProfile) -> int:
    """Frames between keyframes: keyframe_seconds × fps, at least 1."""
    return max(1, round(float(plan.fps) * profile.keyframe_seconds))


def build_prepare_argv(
    ffmpeg: str,
    src: Path,
    dst: Path,
    plan: VideoPlan,
    profile: EncodeProfile,
    *,
    has_audio: bool,
    progress: str = "pipe:1",
) -> list[str]:
    """argv that normalises src into dst (MP4): H.264 CBR-ish, fixed GOP, AAC, faststart."""
    silence = ["-f", "lavfi", "-i", f"anullsrc=r={profile.audio_rate}:cl=stereo"]
    audio_map = ["-map", "0:a:0"] if has_audio else ["-map", "1:a:0", "-shortest"]
    return [
        *build_global_args(ffmpeg, overwrite=True),
        "-nostdin",
        "-i",
        _file(src),
        *([] if has_audio else silence),
        *build_progress_args(progress, 0.5),
        "-map",
        "0:v:0",
        *audio_map,
        *build_video_encode_args(plan, profile),
        *build_audio_encode_args(profile),
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        _file(dst),
    ]


def build_video_encode_args(plan: VideoPlan, profile: EncodeProfile) -> list[str]:
    """libx264 at a constant-ish bitrate with a keyframe exactly every keyframe_seconds."""
    gop, rate = gop_frames(plan, profile), f"{profile.video_kbps}k"
    return [
        "-vf",
        f"scale={plan.width}:{plan.height},fps={plan.fps},format=yuv420p",
        "-c:v",
        "libx264",
        "-preset",
        profile.preset,
        "-profile:v",
        "high",
        "-b:v",
        rate,
        "-maxrate",
        rate,
        "-bufsize",
        rate,
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-force_key_frames",
        f"expr:gte(t,n_forced*{_num(profile.keyframe_seconds)})",
    ]


def build_audio_encode_args(profile: EncodeProfile) -> list[str]:
    """AAC-LC stereo at the profile's rate and bitrate."""
    return [
        "-c:a",
        "aac",
        "-b:a",
        f"{profile.audio_kbps}k",
        "-ar",
        str(profile.audio_rate),
        "-ac",
        "2",
    ]


def build_audio_fix_argv(
    ffmpeg: str, src: Path, dst: Path, profile: EncodeProfile, *, progress: str = "pipe:1"
) -> list[str]:
    """argv that copies a stream-ready video track and re-encodes only the audio (a 44.1 kHz
    or 5.1 track must not cost a full video encode and its quality loss)."""
    return [
        *build_global_args(ffmpeg, overwrite=True),
        "-nostdin",
        "-i",
        _file(src),
        *build_progress_args(progress, 0.5),
        *("-map", "0:v:0", "-map", "0:a:0", "-c:v", "copy"),
        *build_audio_encode_args(profile),
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        _file(dst),
    ]


def build_audio_trim_argv(
    ffmpeg: str,
    src: Path,
    dst: Path,
    end_sample: int,
    profile: EncodeProfile,
    *,
    progress: str = "pipe:1",
) -> list[str]:
    """argv that copies the video and re-encodes the audio cut at `end_sample` (see
    `prepare.align_audio_end`: the next file's AAC priming must not overlap this file's end)."""
    return [
        *build_global_args(ffmpeg, overwrite=True),
        "-nostdin",
        "-i",
        _file(src),
        *build_progress_args(progress, 0.5),
        *("-map", "0:v:0", "-map", "0:a:0", "-c:v", "copy"),
        *("-af", f"atrim=end_sample={end_sample}"),
        *build_audio_encode_args(profile),
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        _file(dst),
    ]


def build_remux_argv(ffmpeg: str, src: Path, dst: Path, *, progress: str = "pipe:1") -> list[str]:
    """argv that only rewraps an already stream-ready file as a faststart MP4."""
    return [
        *build_global_args(ffmpeg, overwrite=True),
        "-nostdin",
        "-i",
        _file(src),
        *build_progress_args(progress, 0.5),
        "-map",
        "0:v:0",
        "-map",
        "0:a:0",
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        _file(dst),
    ]


def _file(path: Path) -> str:
    # Absolute, so that neither "-x.mp4" nor "name:with:colons.mp4" is read as an option or
    # a protocol.
    return os.fspath(Path(path).absolute())


def _even(value: float) -> int:
    return max(2, int(math.floor(value / 2)) * 2)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
