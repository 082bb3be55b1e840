"""Probing and preparing real files with the real FFmpeg."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from media import MediaSet, ffmpeg_children, ffmpeg_exe, media_set, no_leftover_ffmpeg

from streamerhub.ffmpeg.argv import EncodeProfile
from streamerhub.ffmpeg.prepare import PrepareError, prepare
from streamerhub.ffmpeg.probe import ProbeError, compliance_issues, complies, probe

pytestmark = [pytest.mark.ffmpeg, pytest.mark.usefixtures("no_leftover_ffmpeg")]


async def test_probe_reads_a_good_file(media_set: MediaSet) -> None:
    media = await probe(ffmpeg_exe(), media_set.ready)
    assert media.container.startswith("mov,mp4")
    assert media.duration == pytest.approx(6.0, abs=0.1)
    assert (media.video.codec, media.video.width, media.video.height) == ("h264", 320, 240)
    assert media.video.fps == 30 and media.video.pix_fmt == "yuv420p"
    assert media.audio is not None and media.audio.codec == "aac"
    assert media.audio.sample_rate == 48000
    assert media.keyframe_interval == pytest.approx(2.0, abs=0.05)
    assert complies(media, EncodeProfile())


@pytest.mark.parametrize(
    "name, reason, words",
    [
        ("empty", "empty", "0 bytes"),
        ("text", "not_media", "not a video"),
        ("truncated", "truncated", "incomplete"),
        ("audio_only", "no_video", "audio only"),
    ],
)
async def test_probe_rejects_bad_input_with_a_clear_reason(
    media_set: MediaSet, name: str, reason: str, words: str
) -> None:
    with pytest.raises(ProbeError) as caught:
        await probe(ffmpeg_exe(), getattr(media_set, name))
    assert caught.value.reason == reason
    assert words in str(caught.value)


async def test_probe_rejects_a_file_cut_short_after_its_index(
    media_set: MediaSet, tmp_path: Path
) -> None:
    # faststart puts the index first: the header looks whole, only the tail is missing.
    whole = tmp_path / "whole.mp4"
    done = await prepare(ffmpeg_exe(), media_set.ready, whole)
    assert done.mode == "remux"
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    with pytest.raises(ProbeError) as caught:
        await probe(ffmpeg_exe(), cut)
    assert caught.value.reason == "truncated"


async def test_probe_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProbeError) as caught:
        await probe(ffmpeg_exe(), tmp_path / "nope.mp4")
    assert caught.value.reason == "missing"


async def test_a_long_gop_file_is_encoded_to_the_profile(
    media_set: MediaSet, tmp_path: Path
) -> None:
    source = await probe(ffmpeg_exe(), media_set.long_gop)
    issues = compliance_issues(source, EncodeProfile())
    assert any("keyframes" in i for i in issues) and any("44100" in i for i in issues)
    seen: list[float] = []
    dst = tmp_path / "out.mp4"
    done = await prepare(
        ffmpeg_exe(),
        media_set.long_gop,
        dst,
        EncodeProfile(video_kbps=800),
        on_progress=seen.append,
    )
    assert done.mode == "encode" and done.path == dst and dst.is_file()
    out = done.probe
    assert out.video.codec == "h264" and out.video.pix_fmt == "yuv420p"
    assert out.keyframe_interval == pytest.approx(2.0, abs=0.05)
    assert out.audio is not None and (out.audio.codec, out.audio.sample_rate) == ("aac", 48000)
    assert out.duration == pytest.approx(4.0, abs=0.15)
    assert complies(out, EncodeProfile(video_kbps=800))
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temporary left


async def test_a_file_without_audio_gets_a_silent_track(
    media_set: MediaSet, tmp_path: Path
) -> None:
    done = await prepare(ffmpeg_exe(), media_set.silent, tmp_path / "out.mp4")
    assert done.mode == "encode" and "no audio track" in done.reasons
    assert done.probe.audio is not None and done.probe.audio.sample_rate == 48000
    assert done.probe.duration == pytest.approx(3.0, abs=0.15)


async def test_a_stream_ready_file_is_only_remuxed(media_set: MediaSet, tmp_path: Path) -> None:
    done = await prepare(ffmpeg_exe(), media_set.ready, tmp_path / "out.mp4")
    assert done.mode == "remux" and done.reasons == ()
    source = await probe(ffmpeg_exe(), media_set.ready)
    assert done.probe.video == source.video  # same stream, bit for bit settings
    assert done.seconds < 5


async def test_preparation_can_be_cancelled(media_set: MediaSet, tmp_path: Path) -> None:
    started = asyncio.Event()
    seen: list[float] = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if fraction < 1.0:
            started.set()

    dst = tmp_path / "out.mp4"
    slow = EncodeProfile(preset="veryslow")  # seconds, not a fraction of one, on 2 cores
    task = asyncio.create_task(
        prepare(ffmpeg_exe(), media_set.ready, dst, slow, force_encode=True, on_progress=progress)
    )
    await asyncio.wait_for(started.wait(), 30)
    assert ffmpeg_children(), "FFmpeg should be encoding now"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not dst.exists()
    assert list(tmp_path.iterdir()) == []  # the partial file is gone too
    assert ffmpeg_children() == []


async def test_a_failed_preparation_says_why_and_leaves_nothing(
    media_set: MediaSet, tmp_path: Path
) -> None:
    source = await probe(ffmpeg_exe(), media_set.ready)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(media_set.ready.read_bytes()[:4096])  # damaged after it was probed
    with pytest.raises(PrepareError, match="FFmpeg failed"):
        await prepare(ffmpeg_exe(), broken, tmp_path / "out.mp4", source=source, force_encode=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4"]


def _encode(
    path: Path, *args: str, seconds: int = 6, video: str = "testsrc2=size=320x240:rate=60"
) -> Path:
    """An H.264/AAC file made with extra FFmpeg options (sources a broadcast engineer meets)."""
    import subprocess

    base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-nostdin"]
    inputs = [
        *("-f", "lavfi", "-i", f"{video}:duration={seconds}"),
        *("-f", "lavfi", "-i", f"sine=sample_rate=48000:duration={seconds}"),
    ]
    codecs = ["-c:v", "libx264", "-preset", "superfast", "-g", "120", "-c:a", "aac"]
    subprocess.run([*base, *inputs, *codecs, *args, str(path)], check=True, timeout=60)
    return path


async def test_a_variable_rate_recording_comes_out_at_its_nominal_rate(tmp_path: Path) -> None:
    # A phone-style VFR file (60 fps nominal, frames dropped unevenly: ~36 fps on average) came
    # out at the average rate with keyframes off the 2 s grid.
    vfr = _encode(
        tmp_path / "phone.mp4",
        *("-vf", "select='not(eq(mod(n\\,3)\\,1))*not(between(t\\,2\\,3)*eq(mod(n\\,2)\\,0))'"),
        *("-fps_mode", "vfr", "-profile:v", "main", "-ac", "2"),
    )
    source = await probe(ffmpeg_exe(), vfr)
    assert source.video.variable_rate and source.video.nominal_fps == 60
    done = await prepare(ffmpeg_exe(), vfr, tmp_path / "out.mp4", EncodeProfile(video_kbps=600))
    assert done.mode == "encode" and any("variable frame rate" in r for r in done.reasons)
    assert done.probe.video.fps == 60 and not done.probe.video.variable_rate
    assert done.probe.keyframe_interval == pytest.approx(2.0, abs=0.02)


async def test_surround_baseline_and_peaky_files_are_encoded_with_the_reason(
    tmp_path: Path,
) -> None:
    # All three were remuxed as they were: only the average bitrate was checked.
    surround = _encode(tmp_path / "surround.mp4", "-profile:v", "main", "-ac", "6")
    baseline = _encode(tmp_path / "baseline.mp4", "-profile:v", "baseline", "-ac", "2")
    # Still, then two seconds of noise: ~1.2 Mbit/s on average, ~6 Mbit/s at the peak.
    peaky = _encode(
        tmp_path / "peaky.mp4",
        *("-profile:v", "main", "-ac", "2", "-crf", "30"),
        *("-vf", "noise=alls=100:allf=t+u:enable='between(t,2,4)'"),
        seconds=10,
        video="color=c=gray:size=320x240:rate=60",
    )
    profile = EncodeProfile(video_kbps=2500)
    expected = {surround: "not stereo", baseline: "not Main or High", peaky: "peaks at"}
    for path, words in expected.items():
        done = await prepare(ffmpeg_exe(), path, tmp_path / f"out-{path.name}", profile)
        assert done.mode == "encode" and any(words in r for r in done.reasons), done.reasons
        out = done.probe
        assert out.audio is not None and (out.audio.channels, out.audio.sample_rate) == (
            "stereo",
            48000,
        )
        assert out.video.profile in ("Main", "High") and complies(out, profile), compliance_issues(
            out, profile
        )


async def test_an_image_renamed_mp4_is_rejected(tmp_path: Path) -> None:
    import subprocess

    png = tmp_path / "still.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2", "-frames:v", "1"]
        + ["-f", "image2", "-c:v", "png", str(png)],
        check=True,
        timeout=30,
    )
    with pytest.raises(ProbeError) as caught:
        await probe(ffmpeg_exe(), png)
    assert caught.value.reason == "no_video" and "a still image (png)" in str(caught.value)


async def test_a_44k_track_on_a_ready_video_costs_an_audio_encode_only(
    media_set: MediaSet, tmp_path: Path
) -> None:
    # Twitch accepts 44.1 kHz, yet it forced a full video re-encode (time, quality loss).
    from media import make_clip

    source_path = make_clip(tmp_path / "cd_audio.mp4", seconds=4, audio_rate=44100)
    source = await probe(ffmpeg_exe(), source_path)
    done = await prepare(ffmpeg_exe(), source_path, tmp_path / "out.mp4")
    assert done.mode == "encode" and done.reasons == ("audio sample rate 44100 Hz is not 48000",)
    assert done.probe.video == source.video  # the video track was copied, not re-encoded
    assert done.probe.audio is not None and done.probe.audio.sample_rate == 48000
    assert complies(done.probe, EncodeProfile())
