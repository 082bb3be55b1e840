"""Platform presets: each platform's ingest (Twitch: auto or a region) and its requirements.

A target's platform is read from its ingest URL's host, so a target typed by hand gets the same
checks as one made from a preset. A job shows, per target, where one of its prepared files
breaks that platform's published ingest requirements (codec, profile, size and rate, keyframe
interval, average and peak bitrate, audio codec, rate and channels): the platform may refuse
the stream, or re-encode it at a lower quality.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from streamerhub.errors import InvalidInput
from streamerhub.ffmpeg.probe import MediaProbe

TWITCH_AUTO = "rtmp://live.twitch.tv/app"
TWITCH_REGION = re.compile(r"^[a-z]{3}\d{2,3}$")  # Twitch's ingest names: fra05, lhr08, jfk50


@dataclass(frozen=True)
class Requirements:
    """What a platform's ingest documentation asks of a stream."""

    max_video_kbps: int
    max_keyframe_s: float
    max_height: int = 1080
    max_fps: float = 60.0
    profiles: tuple[str, ...] = ("main", "high")
    sample_rates: tuple[int, ...] = (44100, 48000)
    max_audio_kbps: int = 320


@dataclass(frozen=True)
class Preset:
    key: str
    name: str
    url: str
    hosts: tuple[str, ...]  # the ingest hosts (and their subdomains) of this platform
    requirements: Requirements | None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        reqs = asdict(self.requirements) if self.requirements else None
        return {
            "key": self.key,
            "name": self.name,
            "url": self.url,
            "requirements": reqs,
            "note": self.note,
        }


PRESETS: dict[str, Preset] = {
    p.key: p
    for p in (
        Preset(
            "twitch",
            "Twitch",
            TWITCH_AUTO,
            ("twitch.tv", "contribute.live-video.net"),
            Requirements(max_video_kbps=6000, max_keyframe_s=2.0, max_audio_kbps=160),
            'auto picks the nearest ingest; "region": "fra05" (a name from Twitch\'s ingest '
            "list) pins rtmps://fra05.contribute.live-video.net/app",
        ),
        Preset(
            "youtube",
            "YouTube",
            "rtmps://a.rtmps.youtube.com:443/live2",
            ("youtube.com",),
            Requirements(max_video_kbps=12000, max_keyframe_s=4.0, max_fps=60.0),
        ),
        Preset(
            "kick",
            "Kick",
            "rtmps://fa723fc1b171.global-contribute.live-video.net/app",
            ("global-contribute.live-video.net",),
            Requirements(max_video_kbps=8000, max_keyframe_s=2.0),
        ),
        Preset(
            "facebook",
            "Facebook",
            "rtmps://live-api-s.facebook.com:443/rtmp",
            ("facebook.com",),
            Requirements(max_video_kbps=9000, max_keyframe_s=2.0, sample_rates=(48000,)),
        ),
        Preset("custom", "Custom", "", (), None),
    )
}


def preset_url(body: Mapping[str, Any]) -> str | None:
    """The ingest URL a target body's "preset" (and Twitch "region") stands for, if any."""
    key, region = body.get("preset"), body.get("region")
    if key is None:
        if region is not None:
            raise InvalidInput('region: only with "preset": "twitch"')
        return None
    if not isinstance(key, str) or key not in PRESETS or key == "custom":
        known = ", ".join(k for k in PRESETS if k != "custom")
        raise InvalidInput(f"preset: one of {known} (or give url for any other ingest)")
    if "url" in body:
        raise InvalidInput("give either preset or url, not both")
    if region is None or region == "auto":
        return PRESETS[key].url
    if key != "twitch":
        raise InvalidInput("region: only Twitch ingests are chosen by region")
    if not isinstance(region, str) or not TWITCH_REGION.match(region):
        raise InvalidInput('region: a Twitch ingest name such as "fra05", or "auto"')
    return f"rtmps://{region}.contribute.live-video.net/app"


def platform_of(url: str) -> Preset | None:
    """The platform whose ingest this URL is (None for any other ingest)."""
    host = (urlsplit(url).hostname or "").lower()
    for preset in PRESETS.values():
        if any(host == h or host.endswith("." + h) for h in preset.hosts):
            return preset
    return None


def requirement_problems(preset: Preset, probe: MediaProbe, label: str) -> list[str]:
    """Where a prepared file breaks the platform's requirements, in plain words."""
    reqs = preset.requirements
    if reqs is None:
        return []
    video, audio, name = probe.video, probe.audio, f"{label} for {preset.name}"
    problems = []
    if video.codec != "h264":
        problems.append(f"{name}: video is {video.codec}, not H.264")
    if video.profile and video.profile.split()[0].lower() not in reqs.profiles:
        problems.append(f"{name}: H.264 profile {video.profile} (wants Main or High)")
    if video.height > reqs.max_height or (video.fps or 0) > reqs.max_fps + 0.5:
        problems.append(
            f"{name}: {video.height}p at {video.fps or 0:g} fps is above "
            f"{reqs.max_height}p{reqs.max_fps:g}"
        )
    kbps, peak = probe.video_kbps or 0, probe.peak_kbps or 0
    if max(kbps, peak) > reqs.max_video_kbps:
        problems.append(
            f"{name}: video bitrate {kbps} kbit/s (peaks {peak}) is above "
            f"{reqs.max_video_kbps} kbit/s: prepare it again at a lower rate"
        )
    if probe.keyframe_interval and probe.keyframe_interval > reqs.max_keyframe_s + 0.05:
        problems.append(
            f"{name}: keyframes {probe.keyframe_interval:g} s apart (at most "
            f"{reqs.max_keyframe_s:g} s)"
        )
    if audio is None:
        return problems + [f"{name}: no audio track"]
    if audio.codec != "aac":
        problems.append(f"{name}: audio is {audio.codec}, not AAC")
    if audio.sample_rate and audio.sample_rate not in reqs.sample_rates:
        rates = " or ".join(f"{r / 1000:g} kHz" for r in reqs.sample_rates)
        problems.append(f"{name}: audio at {audio.sample_rate / 1000:g} kHz (wants {rates})")
    if audio.channels not in (None, "mono", "stereo"):
        problems.append(f"{name}: {audio.channels} audio (wants stereo)")
    if (audio.bitrate_kbps or 0) > reqs.max_audio_kbps:
        problems.append(
            f"{name}: audio {audio.bitrate_kbps} kbit/s (at most {reqs.max_audio_kbps})"
        )
    return problems
