"""Pure parts of the FFmpeg layer: argv builders, playlists, progress, failure classes, masks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from media import ffmpeg_exe

from streamerhub.errors import StreamerHubError
from streamerhub.ffmpeg.argv import (
    EncodeProfile,
    build_concat_list,
    build_prepare_argv,
    build_push_argv,
    build_remux_argv,
    masked_url,
    plan_video,
    resume_point,
    url_secrets,
)
from streamerhub.ffmpeg.binary import FFmpegNotFound, find_ffmpeg, tls_verification_problem
from streamerhub.ffmpeg.policy import RestartPolicy
from streamerhub.ffmpeg.probe import (
    keyframe_gap,
    parse_input_info,
    parse_keyframe_times,
    parse_stream_span,
)
from streamerhub.ffmpeg.progress import (
    FailureClass,
    ProgressParser,
    classify_failure,
    first_error,
)

URL = "rtmp://live.example.com/app/live_123456_SecretKeyAbc"


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ------------------------------------------------------------------------------------ argv


def test_push_argv_single_file_is_realtime_copy_to_flv_with_io_bounds() -> None:
    argv = build_push_argv("/bin/ffmpeg", [Path("/v/a.mp4")], URL, loop=1)
    assert argv[0] == "/bin/ffmpeg" and argv[-1] == URL
    assert argv.index("-re") < argv.index("-i") < argv.index("-progress") < argv.index("-c")
    assert _after(argv, "-i") == "/v/a.mp4"
    assert _after(argv, "-stream_loop") == "0"  # one play
    assert _after(argv, "-c") == "copy" and _after(argv, "-f") == "flv"
    assert _after(argv, "-progress") == "pipe:1"
    assert int(_after(argv, "-rw_timeout")) > 0
    assert "-nostdin" not in argv  # stdin carries the polite `q`


def test_push_argv_playlist_uses_concat_and_loops_forever_by_default() -> None:
    argv = build_push_argv(
        "ffmpeg", [Path("/v/a.mp4"), Path("/v/b.mp4")], URL, concat_list=Path("/run/list.ffconcat")
    )
    assert _after(argv, "-stream_loop") == "-1"
    assert argv[argv.index("-i") - 4 : argv.index("-i") + 2] == [
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        "/run/list.ffconcat",
    ]
    with pytest.raises(ValueError, match="concat_list"):
        build_push_argv("ffmpeg", [Path("/v/a.mp4"), Path("/v/b.mp4")], URL)
    with pytest.raises(ValueError):
        build_push_argv("ffmpeg", [Path("/v/a.mp4")], URL, loop=0)


def test_push_argv_resumes_with_an_input_seek() -> None:
    argv = build_push_argv("ffmpeg", [Path("/v/a.mp4")], URL, start_at=12.5)
    assert argv.index("-ss") < argv.index("-i") and _after(argv, "-ss") == "12.5"


def test_concat_list_quotes_every_path_safely(tmp_path: Path) -> None:
    odd = tmp_path / "it's a 'clip'.mp4"
    text = build_concat_list([odd, Path("relative.mp4")])
    lines = text.splitlines()
    assert lines[0] == "ffconcat version 1.0"
    assert lines[1] == "file '" + str(odd).replace("'", "'\\''") + "'"
    assert lines[2] == f"file '{Path('relative.mp4').absolute()}'"
    with pytest.raises(ValueError):
        build_concat_list([Path("/v/evil\nfile '/etc/passwd'")])


def test_prepare_argv_encodes_cbr_with_fixed_gop_and_aac_48k() -> None:
    profile = EncodeProfile(video_kbps=3000, audio_kbps=128)
    plan = plan_video(1920, 1080, 29.97, profile)
    argv = build_prepare_argv(
        "ffmpeg", Path("/in.mov"), Path("/out.mp4"), plan, profile, has_audio=True
    )
    assert _after(argv, "-c:v") == "libx264" and _after(argv, "-c:a") == "aac"
    assert _after(argv, "-b:v") == _after(argv, "-maxrate") == "3000k"
    assert _after(argv, "-g") == _after(argv, "-keyint_min") == "60"
    assert _after(argv, "-sc_threshold") == "0"
    assert _after(argv, "-ar") == "48000" and _after(argv, "-b:a") == "128k"
    assert _after(argv, "-movflags") == "+faststart"
    assert "fps=30000/1001" in _after(argv, "-vf")
    silent = build_prepare_argv(
        "ffmpeg", Path("/in.mov"), Path("/out.mp4"), plan, profile, has_audio=False
    )
    assert "anullsrc=r=48000:cl=stereo" in silent and "-shortest" in silent


def test_plan_caps_height_and_fps_and_keeps_dimensions_even() -> None:
    profile = EncodeProfile()
    assert plan_video(3840, 2160, 120, profile) == plan_video(1920, 1080, 60, profile)
    small = plan_video(641, 361, 25, profile)
    assert (small.width, small.height, small.fps) == (640, 360, Fraction(25))
    assert plan_video(1280, 720, None, profile).fps == 30


def test_remux_argv_only_copies() -> None:
    argv = build_remux_argv("ffmpeg", Path("/in.mp4"), Path("/out.mp4"))
    assert _after(argv, "-c") == "copy" and "libx264" not in argv and argv[-1] == "/out.mp4"


def test_profile_rejects_absurd_bitrates() -> None:
    with pytest.raises(ValueError):
        EncodeProfile(video_kbps=10)


# -------------------------------------------------------------------------------- progress

BLOCK = """frame=120
fps=30.01
stream_0_0_q=-1.0
bitrate= 722.6kbits/s
total_size=361472
out_time_us=4000000
out_time_ms=4000000
out_time=00:00:04.000000
dup_frames=1
drop_frames=2
speed=1.01x
progress=continue
"""


def test_progress_parser_yields_one_snapshot_per_block() -> None:
    parser = ProgressParser()
    results = [r for line in BLOCK.splitlines() if (r := parser.feed(line))]
    assert len(results) == 1
    p = results[0]
    assert (p.frame, p.fps, p.bitrate_kbps, p.total_size) == (120, 30.01, 722.6, 361472)
    assert (p.out_time, p.speed, p.dup_frames, p.drop_frames, p.ended) == (4.0, 1.01, 1, 2, False)


def test_progress_parser_handles_na_and_end() -> None:
    parser = ProgressParser()
    for line in ["bitrate=N/A", "total_size=N/A", "out_time_us=N/A", "speed=N/A"]:
        assert parser.feed(line) is None
    p = parser.feed("progress=end")
    assert p is not None and p.ended
    assert (p.bitrate_kbps, p.total_size, p.out_time_us, p.speed) == (None, None, None, None)
    parser.feed("out_time=00:01:02.500000")
    p = parser.feed("progress=continue")
    assert p is not None and p.out_time == 62.5


# -------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "line, expected",
    [
        (
            "[rtmp @ 0x1] [error] Server error: Publish rejected: invalid stream key",
            FailureClass.KEY_REJECTED,
        ),
        (
            "[tcp @ 0x1] [error] Connection to tcp://127.0.0.1:1 failed: Connection refused",
            FailureClass.CONNECTION_REFUSED,
        ),
        (
            "[tcp @ 0x1] [error] Failed to resolve hostname x.invalid: Name or service not known",
            FailureClass.DNS,
        ),
        ("[tls @ 0x1] [error] error:0A00010B:SSL routines::wrong version number", FailureClass.TLS),
        ("[tls @ 0x1] [error] IO error: Connection timed out", FailureClass.TIMEOUT),
        (
            "[in#0 @ 0x1] [error] Error opening input: No such file or directory",
            FailureClass.INPUT_ERROR,
        ),
        ("[out#0/flv @ 0x1] [error] Error muxing a packet", FailureClass.OTHER),
        # The key is right, only busy (a key test still on it): retried fast, not "wrong key".
        ("[rtmp @ 0x1] [error] Server error: Already publishing", FailureClass.OTHER),
    ],
)
def test_failures_are_classified_from_stderr(line: str, expected: FailureClass) -> None:
    assert classify_failure(["[info] Input #0, mov,mp4, from 'x.mp4':", line]) is expected


def test_a_connection_closed_at_publish_is_a_rejected_key_but_a_reset_handshake_is_not() -> None:
    opened = "[out#0/flv @ 0x1] [fatal] Error opening output rtmp://h/live/••••: {}"
    closed = [opened.format("Input/output error")]
    assert classify_failure(closed) is FailureClass.KEY_REJECTED
    reset = ["[rtmp @ 0x1] [error] Cannot read RTMP handshake response", *closed]
    assert classify_failure(reset) is FailureClass.OTHER
    assert classify_failure([opened.format("Connection reset by peer")]) is FailureClass.OTHER
    live_drop = ["[vost#0:0/copy @ 0x1] [error] Error submitting a packet: Broken pipe"]
    assert classify_failure(live_drop) is FailureClass.OTHER


def test_first_error_is_the_root_cause_without_prefixes() -> None:
    lines = [
        "[info] Press [q] to stop",
        "[tcp @ 0x55] [error] Connection to tcp://h:1 failed: Connection refused",
        "[fatal] Error opening output files: Connection refused",
    ]
    assert first_error(lines) == "Connection to tcp://h:1 failed: Connection refused"


# ------------------------------------------------------------------------------ supervisor


def test_stream_key_is_masked_in_urls() -> None:
    assert masked_url(URL) == "rtmp://live.example.com/app/••••"
    assert masked_url("rtmps://h:443/rtmp/KEY123?s=abc") == "rtmps://h:443/rtmp/••••?••••"
    assert "live_123456_SecretKeyAbc" in url_secrets(URL)
    assert "sk%2Fwith%2Fslash" in url_secrets("rtmp://h/app/x", key="sk/with/slash")
    assert url_secrets("rtmp://h/app/live") == []  # a short word is not masked everywhere


def test_resume_point_continues_a_playlist_where_it_stopped() -> None:
    assert resume_point(25.0, 10.0, None) == (5.0, None)
    assert resume_point(25.0, 10.0, 3) == (5.0, 1)
    assert resume_point(30.0, 10.0, 3) is None  # all plays done
    assert resume_point(25.0, None, 2) == (0.0, 2)  # unknown length: start over


def test_backoff_grows_caps_and_waits_long_after_a_rejected_key() -> None:
    policy = RestartPolicy(jitter=0.0)
    delays = [policy.delay(FailureClass.CONNECTION_REFUSED, n, 0.5) for n in range(1, 8)]
    assert delays == [1, 2, 4, 8, 8, 8, 8]
    assert policy.delay(FailureClass.KEY_REJECTED, 1, 0.5) == 60
    assert policy.delay(FailureClass.KEY_REJECTED, 9, 0.5) == 600
    jittery = RestartPolicy(jitter=0.2)
    assert jittery.delay(FailureClass.OTHER, 4, 0.0) == 6.4
    assert jittery.delay(FailureClass.OTHER, 4, 1.0) == 9.6


# ----------------------------------------------------------------------------------- probe


def test_input_banner_is_parsed() -> None:
    banner = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':
  Duration: 00:01:02.50, start: 0.000000, bitrate: 2700 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 1280x720 [SAR 1:1 DAR 16:9], 2500 kb/s, 29.97 fps, 29.97 tbr, 30k tbn (default)
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp, 160 kb/s (default)
  Stream #0:2: Video: mjpeg (Baseline), yuvj420p(pc), 600x600, 90k tbr, 90k tbn (attached pic)
"""
    info = parse_input_info(banner)
    assert info is not None and info.duration == 62.5 and info.bitrate_kbps == 2700
    v, a = info.video, info.audio
    assert v is not None and a is not None
    assert (v.codec, v.profile, v.pix_fmt, v.width, v.height, v.fps, v.bitrate_kbps) == (
        "h264",
        "High",
        "yuv420p",
        1280,
        720,
        29.97,
        2500,
    )
    assert (a.codec, a.sample_rate, a.channels, a.bitrate_kbps) == ("aac", 48000, "stereo", 160)
    assert parse_input_info("x.mp4: Invalid data found when processing input") is None


def test_every_audio_track_is_counted_and_the_first_described() -> None:
    banner = """Input #0, matroska,webm, from 'x.mkv':
  Duration: 00:00:10.00, start: 0.000000, bitrate: 900 kb/s
  Stream #0:0: Video: h264 (Main), yuv420p(progressive), 640x360, 30 fps, 30 tbr, 1k tbn
  Stream #0:1(eng): Audio: aac (LC), 48000 Hz, stereo, fltp (default)
  Stream #0:2(eng): Audio: opus, 48000 Hz, mono, fltp (commentary)
"""
    info = parse_input_info(banner)
    assert info is not None and info.audio_tracks == 2
    assert info.audio is not None and (info.audio.codec, info.audio.channels) == ("aac", "stereo")


def test_the_audio_overhang_at_a_join_is_read_from_the_packets() -> None:
    # A prepared MP4 as FFmpeg wrote it: AAC priming at -1024, audio as long as the video.
    framecrc = """#tb 0: 1/15360
#tb 1: 1/48000
0,          0,        512,      512,     2797, 0x1
1,      -1024,      -1024,     1024,      226, 0x2, F=0x5, S=1, Skip Samples, 10, 0x3
1,          0,          0,     1024,      290, 0x4
0,        512,      45568,      512,     1374, 0x5, F=0x0
1,     143360,     143360,      640,      231, 0x6
"""
    span = parse_stream_span(framecrc)
    assert span is not None and (span.video_end, span.audio_start, span.audio_end) == (
        3.0,
        -0.021333,
        3.0,
    )
    assert span.audio_overhang == pytest.approx(1024 / 48000, abs=1e-5)  # the next file's priming
    assert parse_stream_span("#tb 0: 1/15360\n0, 0, 0, 512, 10, 0x1\n") is None  # no audio


def test_keyframe_gap_from_packet_flags() -> None:
    framecrc = "#tb 0: 1/1000\n" + "".join(
        f"0, {t}, {t}, 500, 100, 0x0{'' if t % 4000 == 0 else ', F=0x0'}\n"
        for t in range(0, 10000, 500)
    )
    assert keyframe_gap(parse_keyframe_times(framecrc)) == 4.0  # 0, 4, 8 and 8 → end (10)


# ---------------------------------------------------------------------------------- binary


def test_find_ffmpeg_falls_back_to_the_bundled_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    found = find_ffmpeg()
    assert found.source == "bundled" and found.version and Path(found.path).is_file()
    assert find_ffmpeg(found.path).source == "config"


def test_find_ffmpeg_names_a_broken_configured_path(tmp_path: Path) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho nope\n")
    fake.chmod(0o755)
    with pytest.raises(FFmpegNotFound, match="not a working FFmpeg"):
        find_ffmpeg(fake)
    with pytest.raises(StreamerHubError, match="does not run"):
        find_ffmpeg(tmp_path / "missing")


def test_rtmps_pushes_always_verify_the_certificate() -> None:
    secure = build_push_argv("ffmpeg", [Path("/v/a.mp4")], "rtmps://h/app/k", ca_file="/ca.pem")
    assert _after(secure, "-tls_verify") == "1" and _after(secure, "-ca_file") == "/ca.pem"
    assert secure.index("-tls_verify") < secure.index("rtmps://h/app/k")  # an output option
    plain = build_push_argv("ffmpeg", [Path("/v/a.mp4")], "rtmp://h/app/k", ca_file="/ca.pem")
    assert "-tls_verify" not in plain


def test_check_names_an_ffmpeg_that_cannot_verify(tmp_path: Path) -> None:
    assert tls_verification_problem(ffmpeg_exe()) is None
    old = tmp_path / "ffmpeg"
    old.write_text("#!/bin/sh\necho 'tls AVOptions:'\necho '  -listen <int>'\n")
    old.chmod(0o755)
    assert "cannot verify certificates" in (tls_verification_problem(old) or "")
