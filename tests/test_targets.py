"""RTMP targets: validation a user can act on, the key sealed and write-only, rotation finds it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from streamerhub.crypto import Keyring
from streamerhub.db import Database, sealed_columns
from streamerhub.errors import Conflict, InvalidInput, NotFound
from streamerhub.ffmpeg.presets import platform_of, requirement_problems
from streamerhub.ffmpeg.probe import AudioInfo, MediaProbe, VideoInfo
from streamerhub.ffmpeg.targets import (
    TargetStore,
    key_hint,
    output_url,
    parse_target,
)
from streamerhub.keys import rotate_master_key
from streamerhub.log import redact

KEY = "live_987654321_Zq8xWv3Ra1b2"


@pytest.fixture
def store(db: Database) -> TargetStore:
    return TargetStore(db, Keyring(os.urandom(32)))


def _body(**changes: object) -> dict[str, object]:
    return {"name": "Twitch alt", "url": "rtmp://live.twitch.tv/app", "stream_key": KEY, **changes}


async def test_key_is_sealed_and_only_a_hint_is_shown(store: TargetStore, db: Database) -> None:
    target = await store.create(_body())
    shown = target.to_json()
    assert shown["stream_key"] == "••••a1b2"
    assert KEY not in repr(shown) and KEY not in repr(target)
    blob = await db.pool.fetchval("SELECT stream_key_sealed FROM stream_targets")
    assert KEY.encode() not in blob
    assert await store.open_key(target.id) == KEY
    assert redact(f"rtmp://live.twitch.tv/app/{KEY}") == "rtmp://live.twitch.tv/app/••••"


async def test_editing_other_fields_keeps_the_key(store: TargetStore) -> None:
    target = await store.create(_body())
    edited = await store.update(
        target.id,
        {"name": "Renamed", "enabled": False, "url": "rtmps://ingest.example.com:443/live"},
    )
    assert (edited.name, edited.enabled, edited.url) == (
        "Renamed",
        False,
        "rtmps://ingest.example.com:443/live",
    )
    assert edited.key_hint == "a1b2" and await store.open_key(target.id) == KEY
    rekeyed = await store.update(target.id, {"stream_key": "another-key-0000-9f9f"})
    assert rekeyed.to_json()["stream_key"] == "••••9f9f"
    assert await store.open_key(target.id) == "another-key-0000-9f9f"


def test_a_short_key_shows_no_characters() -> None:
    assert key_hint("abc123") == "" and key_hint(KEY) == "a1b2"


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"url": "http://live.twitch.tv/app"},
            "url: must start with rtmp:// or rtmps:// (got http://)",
        ),
        ({"url": "live.twitch.tv/app"}, "url: must start with rtmp:// or rtmps:// (got no scheme)"),
        ({"url": "rtmp:///app"}, "url: has no host"),
        ({"url": "rtmp://host:99999/app"}, "url: not a valid URL"),
        ({"url": "rtmp://host/my app"}, "url: the ingest URL must not contain spaces"),
        ({"stream_key": ""}, "stream_key: must not be empty"),
        ({"stream_key": "abc def"}, "stream_key: must not contain spaces or line breaks"),
        ({"stream_key": "abcdef\n"}, "stream_key: must not contain spaces or line breaks"),
        ({"name": "  "}, "name: give the target a name"),
        ({"enabled": "yes"}, "enabled: must be true or false"),
        ({"colour": "red"}, "unknown field 'colour'"),
    ],
)
def test_invalid_input_names_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_target(_body(**changes))
    assert str(caught.value).startswith(message)


def test_a_missing_field_is_named() -> None:
    with pytest.raises(InvalidInput, match="^stream_key: required"):
        parse_target({"name": "x", "url": "rtmp://h/app"})


async def test_names_are_unique_and_missing_ids_are_not_found(store: TargetStore) -> None:
    await store.create(_body())
    with pytest.raises(Conflict, match="a target named 'Twitch alt' already exists"):
        await store.create(_body(stream_key="other-key-1234"))
    with pytest.raises(NotFound, match="no target with id 999"):
        await store.update(999, {"name": "x"})
    with pytest.raises(NotFound):
        await store.delete(999)


async def test_linking_an_unknown_twitch_channel_is_refused(
    store: TargetStore, db: Database
) -> None:
    with pytest.raises(InvalidInput, match="channel_id: no connected Twitch channel"):
        await store.create(_body(channel_id="12345"))
    await db.pool.execute(
        "INSERT INTO twitch_channels (channel_id, login, display_name) "
        "VALUES ('12345', 'alt', 'Alt')"
    )
    target = await store.create(_body(channel_id="12345"))
    assert target.channel_id == "12345"
    assert (await store.update(target.id, {"channel_id": None})).channel_id is None


async def test_master_key_rotation_reseals_stream_keys(db: Database, tmp_path: Path) -> None:
    from streamerhub.crypto import load_keyring

    ring = load_keyring(tmp_path, {}, create=True)
    target = await TargetStore(db, ring).create(_body())
    async with db.pool.acquire() as conn:
        assert ("stream_targets", "id", "stream_key_sealed") in await sealed_columns(conn)
    new, count = await rotate_master_key(db, tmp_path, ring)
    assert count == 1 and new.current != ring.current
    assert await TargetStore(db, new).open_key(target.id) == KEY


def test_output_url_appends_the_key_once() -> None:
    assert (
        output_url("rtmp://a.rtmp.youtube.com/live2/", "k-1")
        == "rtmp://a.rtmp.youtube.com/live2/k-1"
    )


def test_a_key_with_a_control_character_is_refused() -> None:
    # A NUL cut the URL FFmpeg sent: every run failed and was retried forever.
    for bad in ("abc\x00def-1234", "abc\x1bdef-1234"):
        with pytest.raises(InvalidInput, match="stream_key: contains an invisible control"):
            parse_target(_body(stream_key=bad))


def test_an_upper_case_scheme_is_stored_the_way_ffmpeg_understands_it() -> None:
    # FFmpeg knows only "rtmp": RTMP:// was accepted, then every run failed (crash loop).
    assert parse_target(_body(url="RTMP://Live.Twitch.tv/app"))["url"] == (
        "rtmp://Live.Twitch.tv/app"
    )
    assert output_url("RTMPS://h:443/live2", "k-1") == "rtmps://h:443/live2/k-1"


async def test_a_token_in_the_url_query_is_never_shown_and_survives_an_edit(
    store: TargetStore,
) -> None:
    token = "tok_8f3a9c2e77d1"
    target = await store.create(_body(url=f"rtmp://ingest.example/app?token={token}"))
    shown = target.to_json()
    assert token not in repr(shown) and shown["url"] == "rtmp://ingest.example/app?••••"
    # The edit form sends back what it was shown: the stored token must stay intact.
    await store.update(target.id, {"url": shown["url"], "name": "renamed"})
    kept = await store.get(target.id)
    assert kept.url == f"rtmp://ingest.example/app?token={token}" and kept.name == "renamed"
    # The key goes into the path, the query stays at the end.
    assert output_url(kept.url, "k-1") == f"rtmp://ingest.example/app/k-1?token={token}"


# ----------------------------------------------------------------------------- presets


def test_a_preset_stands_for_the_platforms_ingest_and_twitch_takes_a_region() -> None:
    base = {"name": "t", "stream_key": KEY}
    assert parse_target({**base, "preset": "twitch"})["url"] == "rtmp://live.twitch.tv/app"
    regional = parse_target({**base, "preset": "twitch", "region": "fra05"})
    assert regional["url"] == "rtmps://fra05.contribute.live-video.net/app"
    youtube = parse_target({**base, "preset": "youtube"})["url"]
    assert youtube == "rtmps://a.rtmps.youtube.com:443/live2"
    for body, message in (
        ({"preset": "twitch", "url": "rtmp://h/app"}, "give either preset or url"),
        ({"preset": "youtube", "region": "fra05"}, "region: only Twitch ingests"),
        ({"preset": "twitch", "region": "fra05.evil.com"}, "region: a Twitch ingest name"),
        ({"preset": "myspace"}, "preset: one of twitch, youtube, kick, facebook"),
        ({"region": "fra05", "url": "rtmp://h/app"}, 'region: only with "preset"'),
    ):
        with pytest.raises(InvalidInput, match=message):
            parse_target({**base, **body})


def _probe(**changes: Any) -> MediaProbe:
    video = VideoInfo("h264", "High", "yuv420p", 1920, 1080, 30.0, 4000, 30.0)
    audio = AudioInfo("aac", 48000, "stereo", 160)
    fields: dict[str, Any] = {
        "path": Path("/x.mp4"),
        "size_bytes": 1,
        "container": "mov,mp4",
        "duration": 60.0,
        "bitrate_kbps": 4160,
        "video": video,
        "audio": audio,
        "keyframe_interval": 2.0,
        "peak_kbps": 4400,
    }
    return MediaProbe(**{**fields, **changes})


def test_each_platforms_requirements_are_checked_against_a_prepared_file() -> None:
    twitch, facebook = (
        platform_of("rtmp://live.twitch.tv/app"),
        platform_of("rtmps://live-api-s.facebook.com:443/rtmp"),
    )
    assert twitch is not None and facebook is not None
    assert platform_of("rtmps://fa723fc1b171.global-contribute.live-video.net/app").key == "kick"
    assert platform_of("rtmp://127.0.0.1:1935/live") is None
    assert requirement_problems(twitch, _probe(), "intro.mp4") == []
    bad = _probe(
        video=VideoInfo("h264", "Constrained Baseline", "yuv420p", 1920, 1080, 30.0, 4000, 30.0),
        audio=AudioInfo("aac", 44100, "5.1", 384),
        peak_kbps=7800,
        keyframe_interval=4.0,
    )
    said = " | ".join(requirement_problems(twitch, bad, "intro.mp4"))
    for part in (
        "intro.mp4 for Twitch: H.264 profile Constrained Baseline",
        "peaks 7800) is above 6000 kbit/s",
        "keyframes 4 s apart (at most 2 s)",
        "5.1 audio (wants stereo)",
        "audio 384 kbit/s (at most 160)",
    ):
        assert part in said
    # Facebook wants 48 kHz audio; Twitch takes 44.1 kHz.
    at_44k = _probe(audio=AudioInfo("aac", 44100, "stereo", 128))
    assert requirement_problems(twitch, at_44k, "a") == []
    assert requirement_problems(facebook, at_44k, "a") == [
        "a for Facebook: audio at 44.1 kHz (wants 48 kHz)"
    ]


async def test_a_job_shows_where_its_files_break_a_target_platforms_requirements(
    db: Database, tmp_path: Path
) -> None:
    from dataclasses import asdict

    from test_jobs import new_multistream

    probe = asdict(_probe(peak_kbps=7800))
    probe["path"] = "/x.mp4"
    ms = new_multistream(tmp_path, [])
    async with ms.running(db, Keyring(os.urandom(32))):
        video_id = await db.pool.fetchval(
            "INSERT INTO videos (label, source, path, size_bytes, status, video_kbps, "
            "audio_kbps, prepared_path, prepared_mode, prepared_probe) VALUES "
            "('rerun.mp4', 'upload', 'x', 1, 'ready', 6000, 160, 'x', 'encode', $1) RETURNING id",
            probe,
        )
        body = {"name": "T", "preset": "twitch", "stream_key": KEY}
        twitch = await ms.create_target(body)
        youtube = await ms.create_target({"name": "Y", "preset": "youtube", "stream_key": KEY})
        job = await ms.jobs.create(
            {"name": "j", "videos": [video_id], "targets": [twitch.id, youtube.id]}
        )
        shown = await ms.job_json(job)
    by_name = {t["name"]: t["requirements"] for t in shown["targets"]}
    assert by_name["Y"] == []  # YouTube takes 7800 kbit/s peaks
    assert by_name["T"] == [
        "rerun.mp4 for Twitch: video bitrate 4000 kbit/s (peaks 7800) is above 6000 kbit/s: "
        "prepare it again at a lower rate"
    ]
    assert by_name["T"][0] in shown["warnings"]
