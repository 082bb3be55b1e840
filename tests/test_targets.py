"""RTMP targets: validation a user can act on, the key sealed and write-only, rotation finds it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamerhub.crypto import Keyring
from streamerhub.db import Database, sealed_columns
from streamerhub.errors import Conflict, InvalidInput, NotFound
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
