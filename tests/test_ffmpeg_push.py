"""Real FFmpeg pushing to real RTMP listeners on 127.0.0.1, supervised by TargetRunner."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from media import (
    MediaSet,
    ffmpeg_exe,
    is_running,
    media_set,
    no_leftover_ffmpeg,
    wait_gone,
)
from nginx_rtmp import NginxRtmp, needs_nginx, nginx_available
from rtmp_server import ResettingListener, RtmpServer

from streamerhub.ffmpeg.binary import StopMethod
from streamerhub.ffmpeg.policy import RestartPolicy, RunnerTiming, send_buffer_for
from streamerhub.ffmpeg.prepare import prepare
from streamerhub.ffmpeg.probe import probe
from streamerhub.ffmpeg.progress import FailureClass
from streamerhub.ffmpeg.status import TargetState, TargetStatus
from streamerhub.ffmpeg.supervisor import TargetRunner
from streamerhub.ffmpeg.targets import check_url, output_url

pytestmark = [pytest.mark.ffmpeg, pytest.mark.usefixtures("no_leftover_ffmpeg")]

KEY_A = "sekrit-key-alpha-1234"
KEY_B = "sekrit-key-bravo-5678"
# A small send buffer makes a frozen listener stall FFmpeg's progress within a few seconds.
FAST_STALL = RunnerTiming(send_buffer=64 * 1024)


@pytest.fixture
async def ingests(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Real ingests: nginx-rtmp accepting `keys` and recording what it receives."""
    if not nginx_available():
        pytest.skip("nginx with libnginx-mod-rtmp is not installed (.ci/run does)")
    made: list[NginxRtmp] = []

    async def make(keys: set[str], **kwargs: object) -> NginxRtmp:
        ingest = NginxRtmp(tmp_path / f"nginx{len(made)}", keys, **kwargs)  # type: ignore[arg-type]
        made.append(ingest)
        await ingest.start()
        return ingest

    yield make
    for ingest in made:
        await ingest.stop()


@pytest.fixture
async def frozen() -> AsyncIterator[RtmpServer]:
    """The double, for what no real server does: stop reading with the connection kept open."""
    server = RtmpServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def runners() -> AsyncIterator[Callable[..., TargetRunner]]:
    made: list[TargetRunner] = []

    def make(*args: object, **kwargs: object) -> TargetRunner:
        runner = TargetRunner(*args, **kwargs)  # type: ignore[arg-type]
        made.append(runner)
        runner.start()
        return runner

    yield make
    await asyncio.gather(*(r.stop() for r in made))


async def until(predicate: Callable[[], bool], timeout: float) -> float:
    """Wait until predicate holds; return how long it took; fail after timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def assert_key_hidden(runner: TargetRunner, key: str) -> None:
    """The key is in none of what the runner keeps, and FFmpeg's URL lines were masked."""
    kept = [repr(runner.status), *(repr(r) for r in runner.history)]
    assert not [k for k in kept if key in k]
    lines = [line for r in runner.history for line in r.stderr_tail]
    assert any("/live/••••" in line for line in lines), "FFmpeg printed no URL to mask?"


async def decoded_stream(path: Path) -> tuple[str, str | None, float | None]:
    """(video codec, audio codec, duration) of a recording, after a full error-free decode."""
    media = await probe(ffmpeg_exe(), path)
    done = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # At a playlist boundary the next file's AAC priming packet overlaps the previous file's
    # last one by a few ms; FFmpeg's FLV muxer evens the timestamps out, so equal audio DTS is
    # expected there for these unprepared clips (prepared files join cleanly: see
    # test_a_prepared_playlist_joins_without_a_duplicate_audio_frame). Anything else is damage.
    errors = [
        line for line in done.stderr.splitlines() if "non monotonically increasing dts" not in line
    ]
    assert done.returncode == 0 and errors == [], done.stderr
    return media.video.codec, media.audio.codec if media.audio else None, media.duration


# ------------------------------------------------------------------------------------ tests


async def test_two_targets_each_receive_a_decodable_h264_aac_stream(
    media_set: MediaSet, ingests, runners
) -> None:
    a, b = await ingests({KEY_A}), await ingests({KEY_B})
    statuses: list[TargetStatus] = []
    one = runners(
        ffmpeg_exe(), a.url_for(KEY_A), [media_set.clip_a], loop=1, on_status=statuses.append
    )
    two = runners(ffmpeg_exe(), b.url_for(KEY_B), [media_set.clip_a], loop=1)
    done = await asyncio.wait_for(asyncio.gather(one.wait(), two.wait()), 20)

    assert [s.state for s in done] == [TargetState.STOPPED] * 2
    assert one.last_run and one.last_run.finished and one.last_run.failure is None
    states = [s.state for s in statuses]
    assert states[0] is TargetState.STARTING and TargetState.LIVE in states
    assert states[-1] is TargetState.STOPPED
    keys = [s.key() for s in statuses]
    assert all(x != y for x, y in zip(keys, keys[1:])), "on_status fired without a change"
    await asyncio.sleep(0.3)  # nginx closes a recording once its publisher left
    for server, key in ((a, KEY_A), (b, KEY_B)):
        assert server.published == [key]
        [recording] = server.recordings(key)
        video, audio, duration = await decoded_stream(recording)
        assert (video, audio) == ("h264", "aac") and duration == pytest.approx(3.0, abs=0.3)
    assert_key_hidden(one, KEY_A)


async def test_a_failing_target_recovers_without_disturbing_the_other(
    media_set: MediaSet, ingests, runners
) -> None:
    steady = await ingests({KEY_A}, record=False)
    flaky = await ingests({KEY_B}, record=False)
    good = runners(ffmpeg_exe(), steady.url_for(KEY_A), [media_set.ready])
    bad = runners(ffmpeg_exe(), flaky.url_for(KEY_B), [media_set.ready])
    await until(lambda: good.status.state is bad.status.state is TargetState.LIVE, 15)
    await asyncio.sleep(2)
    good_pid, before = good.status.pid, good.status.out_time or 0.0

    await flaky.stop()  # the ingest vanishes
    t0 = time.monotonic()
    await until(lambda: bad.status.state is TargetState.BACKOFF, 10)
    await asyncio.sleep(6)
    assert good.status.state is TargetState.LIVE and good.status.pid == good_pid
    pushed = (good.status.out_time or 0.0) - before
    assert pushed / (time.monotonic() - t0 + 0) == pytest.approx(1.0, abs=0.15)
    assert good.status.speed == pytest.approx(1.0, abs=0.15)
    assert bad.status.state in (TargetState.BACKOFF, TargetState.STARTING)
    assert bad.status.restarts >= 1

    await flaky.start()  # the ingest is back, same port
    took = await until(lambda: bad.status.state is TargetState.LIVE, 15)
    print(f"recovered {took:.1f} s after the ingest came back")
    assert steady.published == [KEY_A] and steady.connections == 1
    failures = {r.failure for r in bad.history}
    assert FailureClass.CONNECTION_REFUSED in failures
    assert_key_hidden(bad, KEY_B)


async def test_a_frozen_ingest_is_detected_and_the_child_killed(
    media_set: MediaSet, frozen: RtmpServer, runners
) -> None:
    ingest = frozen
    timing = RunnerTiming(stall_after=3.0, io_timeout=60.0, send_buffer=64 * 1024)
    runner = runners(ffmpeg_exe(), ingest.url_for(KEY_A), [media_set.ready], timing=timing)
    await until(lambda: runner.status.state is TargetState.LIVE, 10)
    pid = runner.status.pid
    assert pid is not None
    ingest.freeze()  # TCP stays open, nothing is read any more
    await until(lambda: runner.status.state is TargetState.BACKOFF, 20)  # off air at once…
    await until(lambda: runner.last_run is not None, 10)  # …and the wedged child ended
    record = runner.last_run
    assert record is not None and record.failure is FailureClass.TIMEOUT
    assert record.error and "no progress" in record.error
    assert record.stopped_by in (StopMethod.QUIT, StopMethod.SIGTERM, StopMethod.SIGKILL)
    assert not is_running(pid)
    print(f"frozen child ended by {record.stopped_by}")

    ingest.unfreeze()
    await until(lambda: runner.status.state is TargetState.LIVE, 15)
    assert_key_hidden(runner, KEY_A)


async def test_a_playlist_loops_past_its_end_on_one_connection(
    media_set: MediaSet, ingests, runners
) -> None:
    ingest = await ingests({KEY_A})
    runner = runners(
        ffmpeg_exe(),
        ingest.url_for(KEY_A),
        [media_set.clip_a, media_set.clip_b],
        loop=None,
        playlist_duration=6.0,
    )
    await until(lambda: (runner.status.out_time or 0) > 7.5, 20)  # clip a, b, then a again
    assert runner.status.state is TargetState.LIVE and runner.status.run == 1
    await runner.stop()
    assert ingest.connections == 1 and ingest.published == [KEY_A]
    assert runner.last_run and runner.last_run.stopped_by is StopMethod.QUIT
    await asyncio.sleep(0.3)  # nginx closes the recording once the publisher left
    [recording] = ingest.recordings(KEY_A)
    video, audio, duration = await decoded_stream(recording)
    assert (video, audio) == ("h264", "aac") and duration and duration > 7.0


async def test_a_crash_loop_opens_the_breaker_until_retry(tmp_path: Path, runners) -> None:
    policy = RestartPolicy(
        backoff_initial=0.05, backoff_max=0.1, breaker_restarts=2, breaker_window=60
    )
    statuses: list[TargetStatus] = []
    runner = runners(
        ffmpeg_exe(),
        "rtmp://127.0.0.1:9/live/" + KEY_A,
        [tmp_path / "gone.mp4"],
        policy=policy,
        on_status=statuses.append,
    )
    await until(lambda: runner.status.state is TargetState.FAILED, 15)
    assert runner.status.failure is FailureClass.INPUT_ERROR
    assert "the video file cannot be read" in (runner.status.last_error or "")
    runs = runner.status.run
    await asyncio.sleep(0.5)
    assert runner.status.run == runs  # no retries while failed

    runner.retry()
    await until(lambda: runner.status.run > runs, 5)
    await until(lambda: runner.status.state is TargetState.FAILED, 15)
    await runner.stop()
    await runner.stop()  # idempotent
    assert runner.status.state is TargetState.STOPPED


PARENT = """
import asyncio, sys
sys.path[:0] = [{tests!r}, {root!r}]
from streamerhub.ffmpeg.status import TargetState
from streamerhub.ffmpeg.supervisor import TargetRunner
async def main():
    runner = TargetRunner({ffmpeg!r}, {url!r}, [{clip!r}])
    runner.start()
    while runner.status.state is not TargetState.LIVE:
        await asyncio.sleep(0.05)
    print("PID", runner.status.pid, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_the_child_dies_when_the_daemon_is_killed(media_set: MediaSet, ingests) -> None:
    ingest = await ingests({KEY_A}, record=False)
    script = PARENT.format(
        tests=str(Path(__file__).parent),
        root=str(Path.cwd()),
        ffmpeg=ffmpeg_exe(),
        url=ingest.url_for(KEY_A),
        clip=str(media_set.ready),
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        line = b""
        while not line.startswith(b"PID "):  # structlog's default output shares stdout
            line = await asyncio.wait_for(parent.stdout.readline(), 20)
            assert line, "the parent exited before its child went live"
        child = int(line.split()[1])
        assert is_running(child)
        os.kill(parent.pid, signal.SIGKILL)
        t0 = time.monotonic()
        assert wait_gone([child], 5.0) == [], "FFmpeg outlived its killed parent"
        print(f"child gone {time.monotonic() - t0:.2f} s after kill -9 of its parent")
    finally:
        if parent.returncode is None:
            parent.kill()
        await parent.wait()


async def test_stop_is_bounded_even_when_the_ingest_is_frozen(
    media_set: MediaSet, frozen: RtmpServer, runners
) -> None:
    ingest = frozen
    timing = RunnerTiming(
        stall_after=60.0, io_timeout=60.0, send_buffer=64 * 1024, quit_wait=1.0, term_wait=1.0
    )
    runner = runners(ffmpeg_exe(), ingest.url_for(KEY_A), [media_set.ready], timing=timing)
    await until(lambda: runner.status.state is TargetState.LIVE, 10)
    pid = runner.status.pid
    assert pid is not None
    ingest.freeze()
    await until_quiet(runner, 2.0, 15)  # FFmpeg is now blocked writing
    t0 = time.monotonic()
    await runner.stop()
    took = time.monotonic() - t0
    await runner.stop()  # idempotent, and immediate the second time
    assert took < 1.0 + 1.0 + 5.0
    assert not is_running(pid)
    assert runner.status.state is TargetState.STOPPED and runner.status.pid is None
    assert runner.last_run and runner.last_run.failure is None  # a stop is not a failure
    print(f"stop of a wedged child took {took:.1f} s ({runner.last_run.stopped_by})")


async def until_quiet(runner: TargetRunner, quiet: float, timeout: float) -> None:
    """Wait until the runner's out_time has not moved for `quiet` seconds."""
    start = time.monotonic()
    last, since = runner.status.out_time, start
    while time.monotonic() - since < quiet:
        assert time.monotonic() - start < timeout, "progress never stopped"
        await asyncio.sleep(0.1)
        if runner.status.out_time != last:
            last, since = runner.status.out_time, time.monotonic()


async def test_children_get_no_daemon_secrets_and_an_upper_case_scheme_streams(
    media_set: MediaSet, ingests, runners, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "twitch-client-secret-4f9a7c"
    monkeypatch.setenv("STREAMERHUB_TWITCH_CLIENT_SECRET", secret)
    monkeypatch.setenv("STREAMERHUB_DATABASE_URL", f"postgresql://u:{secret}@h/db")
    ingest = await ingests({KEY_A}, record=False)
    # What a user typed: RTMP:// crash-looped before (FFmpeg: "Protocol not found").
    url = output_url(check_url(ingest.url.replace("rtmp://", "RTMP://")), KEY_A)
    runner = runners(ffmpeg_exe(), url, [media_set.ready])
    await until(lambda: runner.status.state is TargetState.LIVE, 10)
    assert runner.status.pid is not None
    environ = Path(f"/proc/{runner.status.pid}/environ").read_bytes()
    assert secret.encode() not in environ and b"STREAMERHUB_" not in environ
    assert b"PATH=" in environ  # the rest of the environment is kept


@needs_nginx
async def test_a_handshake_resetting_ingest_never_fails_the_target(
    media_set: MediaSet, runners, tmp_path: Path
) -> None:
    # Six resets in five minutes used to mark the target `failed` for good: a 24/7 channel went
    # dark after ~22 s of a misbehaving ingest. Transient causes are now retried forever.
    policy = RestartPolicy(backoff_initial=0.1, backoff_max=0.5, breaker_restarts=2)
    resetter = ResettingListener()
    port = await resetter.start()
    statuses: list[TargetStatus] = []
    url = f"rtmp://127.0.0.1:{port}/live/{KEY_A}"
    runner = runners(ffmpeg_exe(), url, [media_set.ready], policy=policy, on_status=statuses.append)
    try:
        await until(lambda: runner.status.run >= 6, 20)
    finally:
        await resetter.stop()
    assert TargetState.FAILED not in {s.state for s in statuses}
    assert runner.last_run and runner.last_run.failure is FailureClass.OTHER
    ingest = NginxRtmp(tmp_path / "nginx", {KEY_A}, record=False, rtmp_port=port)
    await ingest.start()
    try:
        took = await until(lambda: runner.status.state is TargetState.LIVE, 15)
        print(f"live {took:.1f} s after the ingest became healthy")
    finally:
        await runner.stop()
        await ingest.stop()


async def test_a_failed_target_is_tried_again_by_itself(tmp_path: Path, runners) -> None:
    policy = RestartPolicy(
        backoff_initial=0.05, backoff_max=0.1, breaker_restarts=1, half_open_after=1.0
    )
    runner = runners(
        ffmpeg_exe(), "rtmp://127.0.0.1:9/live/" + KEY_A, [tmp_path / "gone.mp4"], policy=policy
    )
    await until(lambda: runner.status.state is TargetState.FAILED, 15)
    runs = runner.status.run
    assert runner.status.next_retry_at is not None  # the user sees when it is tried again
    await until(lambda: runner.status.run > runs, 5)  # half-open: no retry() needed
    await until(lambda: runner.status.state is TargetState.FAILED, 15)


@pytest.fixture
async def nginx(tmp_path: Path) -> AsyncIterator[NginxRtmp]:
    ingest = NginxRtmp(tmp_path / "nginx", keys={KEY_A})
    try:
        await ingest.start()
        yield ingest
    finally:
        await ingest.stop()


@needs_nginx
async def test_nginx_closing_on_a_wrong_key_is_key_rejected(
    media_set: MediaSet, runners, nginx: NginxRtmp
) -> None:
    # nginx-rtmp refuses a key (on_publish 403) by closing the connection: FFmpeg only says
    # "Input/output error". That was `other` (fast retries, then `failed`, never "wrong key").
    wrong = "wrong-key-55443322"
    bad = runners(ffmpeg_exe(), f"{nginx.url}/{wrong}", [media_set.ready])
    good = runners(ffmpeg_exe(), f"{nginx.url}/{KEY_A}", [media_set.ready])
    await until(lambda: bad.status.state is TargetState.BACKOFF, 10)
    status = bad.status
    assert status.failure is FailureClass.KEY_REJECTED
    assert status.next_retry_at is not None and status.next_retry_at - time.time() > 40
    await until(lambda: good.status.state is TargetState.LIVE, 10)
    assert await nginx.publishing() == [KEY_A]
    await asyncio.sleep(1)
    assert nginx.rejected == [wrong]  # a slow retry: the ingest is not hammered
    assert_key_hidden(bad, wrong)


@needs_nginx
async def test_rtmps_certificates_are_verified_with_a_ca_option(
    media_set: MediaSet, runners, nginx: NginxRtmp
) -> None:
    # -tls_verify was never passed: a distro FFmpeg 5.1 pushed the key to a self-signed
    # endpoint (a man in the middle) without a check.
    policy = RestartPolicy(backoff_initial=0.2, backoff_max=0.5)
    unchecked = runners(ffmpeg_exe(), f"{nginx.tls_url}/{KEY_A}", [media_set.ready], policy=policy)
    await until(lambda: unchecked.status.state is TargetState.BACKOFF, 10)
    assert unchecked.status.failure is FailureClass.TLS
    assert nginx.published == []  # the key never reached the endpoint
    await unchecked.stop()
    private_ca = runners(
        ffmpeg_exe(), f"{nginx.tls_url}/{KEY_A}", [media_set.ready], ca_file=str(nginx.cert)
    )
    await until(lambda: private_ca.status.state is TargetState.LIVE, 10)
    assert await nginx.publishing() == [KEY_A]


async def test_a_frozen_ingest_is_detected_within_10_s_and_the_rates_drop(
    media_set: MediaSet, frozen: RtmpServer, runners
) -> None:
    # Detection took 16–20 s (README: 10 s), and the bitrate/fps shown were FFmpeg's averages
    # since the start, which never drop: a frozen target looked healthy for the whole time.
    ingest = frozen
    timing = RunnerTiming(send_buffer=send_buffer_for(500))  # what the daemon uses (~500 kbit/s)
    runner = runners(ffmpeg_exe(), ingest.url_for(KEY_A), [media_set.ready], timing=timing)
    await until(lambda: runner.status.state is TargetState.LIVE, 10)
    await asyncio.sleep(4)
    live = runner.status
    assert live.bitrate_kbps and live.bitrate_kbps > 200 and live.fps == pytest.approx(30, abs=4)
    ingest.freeze()
    frozen_at, lowest = time.monotonic(), live.bitrate_kbps
    while (status := runner.status).state is TargetState.LIVE:  # counting down to the stall
        lowest = min(lowest, status.bitrate_kbps or 0.0)
        assert time.monotonic() - frozen_at < 15, "never detected"
        await asyncio.sleep(0.2)
    took = time.monotonic() - frozen_at
    print(f"frozen ingest detected after {took:.1f} s; bitrate shown fell to {lowest} kbit/s")
    assert runner.status.state is TargetState.BACKOFF and took <= 10
    assert lowest < live.bitrate_kbps / 2  # the shown rate dropped before the restart


@needs_nginx
async def test_the_running_childs_output_is_readable_while_it_pushes(
    media_set: MediaSet, runners, nginx: NginxRtmp
) -> None:
    # FFmpeg's output used to be kept only when a run ended: a running push showed nothing.
    runner = runners(ffmpeg_exe(), f"{nginx.url}/{KEY_A}", [media_set.ready])
    assert runner.live_log().lines == ()
    await until(lambda: runner.status.state is TargetState.LIVE, 10)
    await until(lambda: any("Output #0" in line for line in runner.live_log().lines), 5)
    log = runner.live_log()
    assert log.running and log.run == 1
    assert any("/live/••••" in line for line in log.lines)  # the URL is there, its key masked
    assert not [line for line in log.lines if KEY_A in line]
    await runner.stop()
    after = runner.live_log()
    assert not after.running and after.lines == runner.history[-1].stderr_tail


def audio_times_ms(recording: Path) -> list[int]:
    """The audio packet timestamps (ms) of an FLV recording, in the order they were received."""
    out = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(recording), "-map", "0:a"]
        + ["-c", "copy", "-f", "framecrc", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [int(line.split(",")[2]) for line in out.splitlines() if line.startswith("0,")]


async def test_a_prepared_playlist_joins_without_a_duplicate_audio_frame(
    media_set: MediaSet, ingests, runners, tmp_path: Path
) -> None:
    # Each file's first AAC packet (the encoder's priming) used to land on the previous file's
    # last one: one duplicate audio timestamp at every join of a playlist.
    ready = [
        (await prepare(ffmpeg_exe(), clip, tmp_path / f"{clip.stem}-ready.mp4")).path
        for clip in (media_set.clip_a, media_set.clip_b)
    ]
    ingest = await ingests({KEY_A})
    runner = runners(ffmpeg_exe(), ingest.url_for(KEY_A), ready, loop=1, playlist_duration=6.0)
    await until(lambda: bool(runner.last_run and runner.last_run.finished), 25)
    await asyncio.sleep(0.3)  # nginx closes the recording once the publisher left
    [recording] = ingest.recordings(KEY_A)
    times = audio_times_ms(recording)
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) > 250 and min(steps) > 0, "an audio timestamp repeats or goes back"
    join = next(i for i, t in enumerate(times) if t >= 2900)
    assert max(steps[join : join + 10]) <= 22  # and no hole where clip b begins
