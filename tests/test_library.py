"""The video library with the real FFmpeg: uploads streamed to disk, bad files rejected with the
reason, one preparation at a time with progress, cancel, and names that never become paths."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import AsyncIterator

import pytest
from media import (
    MediaSet,
    ffmpeg_children,
    ffmpeg_exe,
    make_clip,
    media_set,
    no_leftover_ffmpeg,
)

from streamerhub.db import Database
from streamerhub.errors import InvalidInput, NotFound, TooLarge
from streamerhub.ffmpeg.argv import recommended_kbps
from streamerhub.ffmpeg.library import Library, Video, safe_label

pytestmark = [pytest.mark.ffmpeg, pytest.mark.usefixtures("no_leftover_ffmpeg")]

DROPPED = "2 audio tracks: the first is pushed, the others dropped"


@pytest.fixture
async def library(db: Database, tmp_path: Path) -> AsyncIterator[Library]:
    lib = Library(
        db,
        tmp_path / "data",
        ffmpeg_exe(),
        max_upload_bytes=3_000_000,
        import_dirs=[tmp_path.parent],  # the session's temporary folder, media set included
    )
    await lib.start()
    try:
        yield lib
    finally:
        await lib.stop()


async def wait_status(lib: Library, video_id: int, *wanted: str, timeout: float = 30) -> Video:
    deadline = time.monotonic() + timeout
    while True:
        video = await lib.get(video_id)
        if video.status in wanted:
            return video
        assert time.monotonic() < deadline, f"video stuck in {video.status}: {video.reason}"
        await asyncio.sleep(0.05)


async def chunks_of(path: Path, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk
            await asyncio.sleep(0)


async def test_upload_is_stored_under_a_generated_name_then_prepared(
    library: Library, media_set: MediaSet, tmp_path: Path
) -> None:
    video = await library.store_upload("My Stream.mp4", chunks_of(media_set.ready))
    assert video.status == "uploaded" and video.label == "My Stream.mp4"
    stored = tmp_path / "data" / video.path
    assert stored.parent == tmp_path / "data" / "videos" and "My Stream" not in stored.name
    assert stored.read_bytes() == media_set.ready.read_bytes()
    ready = await wait_status(library, video.id, "ready", "rejected")
    assert ready.status == "ready", ready.reason
    assert ready.prepared_mode == "remux"  # already H.264/AAC with 2 s keyframes
    shown = ready.to_json()["probe"]
    assert shown["duration"] == pytest.approx(6.0, abs=0.1)
    assert (shown["video"]["width"], shown["video"]["height"]) == (320, 240)
    assert shown["audio_present"] and shown["keyframe_interval"] == pytest.approx(2.0, abs=0.1)
    assert "path" not in shown
    assert await library.ready_files([video.id]) == [tmp_path / "data" / ready.prepared_path]


@pytest.mark.parametrize(
    "name, words",
    [
        ("text", "not a video file"),
        ("truncated", "incomplete"),
        ("audio_only", "audio only"),
    ],
)
async def test_a_bad_upload_is_rejected_with_the_reason(
    library: Library, media_set: MediaSet, name: str, words: str
) -> None:
    source = getattr(media_set, name)
    video = await library.store_upload(f"upload-{name}.mp4", chunks_of(source))
    rejected = await wait_status(library, video.id, "rejected", "ready")
    assert rejected.status == "rejected" and words in (rejected.reason or "")
    assert rejected.reason and rejected.reason.startswith(f"upload-{name}.mp4")  # the label
    with pytest.raises(InvalidInput, match="is not ready to stream"):
        await library.ready_files([video.id])


async def test_an_empty_upload_is_refused_and_leaves_nothing(library: Library) -> None:
    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    with pytest.raises(InvalidInput, match="the uploaded file is empty"):
        await library.store_upload("empty.mp4", nothing())
    assert not [p for p in library.folder.rglob("*") if p.is_file()]


async def test_an_upload_over_the_limit_is_cut_off_and_removed(library: Library) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 256 * 1024
            yield b"\0" * (256 * 1024)

    with pytest.raises(TooLarge, match="larger than the upload limit of 2.9 MiB"):
        await library.store_upload("huge.mp4", endless())
    assert sent < 4_000_000  # stopped reading at the limit, not at the end
    assert not [p for p in library.folder.rglob("*") if p.is_file()]


async def test_a_path_traversal_file_name_is_only_a_label(
    library: Library, media_set: MediaSet, tmp_path: Path
) -> None:
    video = await library.store_upload("../../../escaped.mp4", chunks_of(media_set.clip_a))
    assert video.label == "escaped.mp4"
    assert not list(tmp_path.rglob("escaped*")) and not Path("/escaped.mp4").exists()
    assert (tmp_path / "data" / video.path).parent == library.folder
    assert safe_label("..\\..\\win.mp4") == "win.mp4" and safe_label("..") == "video"
    assert safe_label("a\x00b\nc.mp4") == "abc.mp4"


async def test_preparation_encodes_a_non_compliant_file_with_progress(
    library: Library, media_set: MediaSet
) -> None:
    seen: list[float] = []
    library._on_progress = lambda vid, fraction: seen.append(fraction)  # type: ignore[method-assign, assignment]  # a spy
    video = await library.import_path({"path": str(media_set.long_gop)})
    assert video.source == "import" and video.label == "long_gop.mp4"
    ready = await wait_status(library, video.id, "ready", "rejected")
    assert ready.status == "ready" and ready.prepared_mode == "encode"
    # Why it was encoded is shown (it was never said): the API and the page show these.
    reasons = ready.to_json()["prepared"]["reasons"]
    assert any("keyframes every" in r for r in reasons) and any("44100" in r for r in reasons)
    prepared = ready.prepared_probe or {}
    assert prepared["keyframe_interval"] == pytest.approx(2.0, abs=0.1)
    assert prepared["audio"]["sample_rate"] == 48000
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


async def test_preparation_can_be_cancelled_and_restarted(library: Library, tmp_path: Path) -> None:
    long = make_clip(tmp_path / "long.mp4", seconds=40, gop_seconds=8, size="640x360")
    video = await library.import_path({"path": str(long), "video_kbps": 800})
    await wait_status(library, video.id, "preparing")
    await asyncio.sleep(0.3)
    assert ffmpeg_children()
    cancelled = await library.cancel(video.id)
    assert (cancelled.status, cancelled.reason) == ("uploaded", "preparation cancelled")
    assert not ffmpeg_children()
    assert not [p for p in library.folder.rglob("*") if p.is_file()]  # no partial output
    again = await library.prepare_again(video.id, {"video_kbps": 600})
    assert again.video_kbps == 600
    await wait_status(library, video.id, "preparing")
    await library.cancel(video.id)


async def test_import_needs_an_absolute_readable_file(
    library: Library, media_set: MediaSet, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match="is not absolute"):
        await library.import_path({"path": "videos/x.mp4"})
    with pytest.raises(InvalidInput, match="cannot read .*No such file"):
        await library.import_path({"path": str(tmp_path / "nope.mp4")})
    with pytest.raises(InvalidInput, match="not a regular file"):
        await library.import_path({"path": str(tmp_path)})
    with pytest.raises(InvalidInput, match="video_kbps 5 is outside"):
        await library.import_path({"path": str(media_set.clip_a), "video_kbps": 5})


async def test_a_playlist_must_share_one_shape(
    library: Library, media_set: MediaSet, tmp_path: Path
) -> None:
    wide = make_clip(tmp_path / "wide.mp4", seconds=2, size="480x240")
    ids = [(await library.import_path({"path": str(p)})).id for p in (media_set.clip_a, wide)]
    for video_id in ids:
        await wait_status(library, video_id, "ready")
    with pytest.raises(InvalidInput, match="must share size, frame rate and audio format"):
        await library.ready_files(ids)
    # Checked when a job is created, naming the videos as the user knows them.
    with pytest.raises(InvalidInput) as mixed:
        await library.check_playlist(ids)
    assert f"video {ids[1]} (wide.mp4) differs from video {ids[0]}" in str(mixed.value)
    assert "import-" not in str(mixed.value) and "480x240" in str(mixed.value)
    prepared = tmp_path / "data" / (await library.get(ids[1])).prepared_path
    await library.delete(ids[1])
    assert not prepared.exists() and wide.exists()  # an imported original stays where it was
    with pytest.raises(NotFound):
        await library.get(ids[1])


async def test_import_is_off_until_a_folder_is_named(db: Database, tmp_path: Path) -> None:
    lib = Library(db, tmp_path / "data", ffmpeg_exe(), max_upload_bytes=1000)
    with pytest.raises(
        InvalidInput, match=r"import by server path is off.*\[library\] import_dirs"
    ):
        await lib.import_path({"path": "/etc/passwd"})


async def test_import_outside_the_folders_is_refused_and_reveals_nothing(
    db: Database, tmp_path: Path, media_set: MediaSet
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "escape.mp4").symlink_to("/etc/passwd")
    lib = Library(db, tmp_path / "data", ffmpeg_exe(), max_upload_bytes=1000, import_dirs=[allowed])
    answers = []
    for path in ("/etc/passwd", "/etc/no-such-file", f"{allowed}/../../etc/passwd"):
        with pytest.raises(InvalidInput) as refused:
            await lib.import_path({"path": path})
        answers.append(str(refused.value))
    # An existing and a missing file get the same answer: no probing of the server's disk.
    assert len(set(answers)) == 1 and "only files inside the import folders" in answers[0]
    with pytest.raises(InvalidInput, match="only files inside the import folders"):
        await lib.import_path({"path": str(allowed / "escape.mp4")})  # a symlink out
    with pytest.raises(InvalidInput, match="control character"):
        await lib.import_path({"path": f"{allowed}/a\x00.mp4"})


async def test_without_a_bitrate_the_recommendation_for_the_size_is_used(
    db: Database, tmp_path: Path, media_set: MediaSet
) -> None:
    # The fixed 2,500 kbit/s default was below Twitch's and YouTube's 1080p recommendations.
    lib = Library(
        db,
        tmp_path / "data",
        ffmpeg_exe(),
        max_upload_bytes=3_000_000,
        import_dirs=[tmp_path.parent],
        kbps_by_resolution=True,
    )
    await lib.start()
    try:
        hd = make_clip(tmp_path / "hd.mp4", seconds=2, size="1280x720", rate=60)
        auto = await lib.import_path({"path": str(hd)})
        asked = await lib.import_path({"path": str(media_set.ready), "video_kbps": 900})
        assert auto.video_kbps == 0  # decided once the video is probed
        assert (await wait_status(lib, auto.id, "ready")).video_kbps == 4500  # 720p60
        assert (await wait_status(lib, asked.id, "ready")).video_kbps == 900
    finally:
        await lib.stop()
    assert [recommended_kbps(h, f) for h, f in ((1080, 60), (1080, 30), (720, 30), (240, 30))] == [
        6000,
        4500,
        3000,
        800,
    ]


async def test_the_library_is_searched_by_name_format_duration_and_status(
    library: Library, db: Database
) -> None:
    rows = [
        ("Intro 2024.mp4", "ready", "mov,mp4,m4a,3gp,3g2,mj2", 30.0),
        ("Long rerun.mkv", "ready", "matroska,webm", 7200.0),
        ("intro_old.flv", "rejected", "flv", 12.0),
        ("100% raw.mp4", "preparing", "mov,mp4,m4a,3gp,3g2,mj2", 600.0),
    ]
    for label, status, container, duration in rows:
        await db.pool.execute(
            "INSERT INTO videos (label, source, path, size_bytes, status, probe, video_kbps, "
            "audio_kbps) VALUES ($1, 'upload', 'x', 1, $2, $3, 2500, 160)",
            label,
            status,
            {"container": container, "duration": duration},
        )

    async def names(**query: str) -> list[str]:
        return [v.label for v in await library.list(query)]

    assert await names(q="INTRO") == ["Intro 2024.mp4", "intro_old.flv"]
    assert await names(q="%") == ["100% raw.mp4"]  # taken literally, not as a wildcard
    assert await names(format="mp4") == ["Intro 2024.mp4", "100% raw.mp4"]
    assert await names(format=".mkv") == ["Long rerun.mkv"]
    assert await names(status="ready", min_duration="60") == ["Long rerun.mkv"]
    assert await names(max_duration="30") == ["Intro 2024.mp4", "intro_old.flv"]
    assert len(await names()) == 4
    for query, message in (
        ({"status": "done"}, "status: one of uploaded"),
        ({"min_duration": "an hour"}, "min_duration: a number of seconds"),
        ({"max_duration": "nan"}, "max_duration: between 0"),
        ({"sort": "name"}, "unknown filter 'sort'"),
        ({"format": "mp4;drop"}, "format: a file format"),
    ):
        with pytest.raises(InvalidInput, match=message):
            await library.list(query)


def two_audio_tracks(media_set: MediaSet, path: Path) -> Path:
    """clip_a's picture and tone, plus clip_b's tone as a second audio track (commentary)."""
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-i", str(media_set.clip_a), "-i"]
        + [str(media_set.clip_b), "-map", "0:v", "-map", "0:a", "-map", "1:a", "-c", "copy"]
        + [str(path)],
        check=True,
        timeout=60,
    )
    return path


async def test_a_second_audio_track_is_named_as_dropped(
    library: Library, media_set: MediaSet, tmp_path: Path
) -> None:
    # A commentary track used to vanish without a word: preparation keeps the first track only.
    two = two_audio_tracks(media_set, tmp_path / "two-tracks.mp4")
    video = await library.store_upload("Rerun with commentary.mp4", chunks_of(two))
    ready = await wait_status(library, video.id, "ready", "rejected")
    assert ready.status == "ready", ready.reason
    shown = ready.to_json()
    assert shown["notices"] == [DROPPED]
    single = await library.store_upload("plain.mp4", chunks_of(media_set.clip_a))
    assert (await wait_status(library, single.id, "ready")).to_json()["notices"] == []


@pytest.mark.browser
@pytest.mark.e2e
async def test_the_library_page_says_which_audio_track_is_pushed(
    daemon_factory, db_url: str, media_set: MediaSet, tmp_path: Path
) -> None:
    from test_browser import PROBLEMS, become_owner, chromium, daemon_config, new_page, shot

    from streamerhub.fake_twitch import FakeTwitch

    two = two_audio_tracks(media_set, tmp_path / "with-commentary.mp4")
    PROBLEMS.clear()
    async with FakeTwitch() as fake:
        daemon = daemon_factory(daemon_config(db_url, fake)).start()
        async with chromium() as browser:
            page = await new_page(browser)
            await become_owner(page, daemon)
            await page.goto(f"{daemon.url}/multistream")
            await page.set_input_files("#upload-file", str(two))
            await page.click("#upload-form button[type=submit]")
            await page.wait_for_selector("#videos-table .state-ready", timeout=30_000)
            notice = await page.inner_text("#videos-table .video-notice")
            await shot(page, "40-library-audio-track-notice")
    assert notice == DROPPED
    assert not PROBLEMS, PROBLEMS
