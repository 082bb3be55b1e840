"""EventSub normalisation: frames are classified, every type becomes the typed row a user sees."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from streamerhub.events.frames import MAX_FRAME_BYTES, BadFrame, FrameKind, parse_frame
from streamerhub.events.normalise import BadEvent, normalise, normalise_frame

STAMP = "2026-03-01T20:15:42.123456789Z"
B = {
    "broadcaster_user_id": "1337",
    "broadcaster_user_login": "streamer",
    "broadcaster_user_name": "Streamer",
}
VIEWER = {"user_id": "4242", "user_login": "cool_viewer", "user_name": "Cool_Viewer"}
ANONYMOUS = {"user_id": None, "user_login": None, "user_name": None}
REWARD = {"id": "r-1", "title": "Hydrate!", "cost": 500, "prompt": "Drink water"}
CHOICES = [{"id": "c1", "title": "Yes", "bits_votes": 0, "channel_points_votes": 5, "votes": 5}]
OUTCOMES = [{"id": "o1", "title": "Win", "color": "blue", "users": 3, "channel_points": 900}]
TRAIN = {
    "id": "train-1",
    **B,
    "total": 1750,
    "progress": 350,
    "goal": 1800,
    "level": 2,
    "top_contributions": [{**VIEWER, "type": "bits", "total": 1000}],
    "shared_train_participants": None,
    "started_at": "2026-03-01T20:10:00Z",
    "expires_at": "2026-03-01T20:20:00Z",
    "is_shared_train": False,
    "type": "golden_kappa",
}
POLL = {
    "id": "poll-1",
    **B,
    "title": "Which map?",
    "choices": CHOICES,
    "bits_voting": {"is_enabled": False, "amount_per_vote": 0},
    "started_at": "2026-03-01T20:00:00Z",
    "ends_at": "2026-03-01T20:05:00Z",
}
PREDICTION = {
    "id": "pred-1",
    **B,
    "title": "Win this round?",
    "outcomes": OUTCOMES,
    "started_at": "2026-03-01T20:00:00Z",
    "locks_at": "2026-03-01T20:05:00Z",
}
GOAL = {
    "id": "goal-1",
    **B,
    "type": "follower",
    "description": "Road to 1000",
    "current_amount": 640,
    "target_amount": 1000,
    "started_at": "2026-02-01T00:00:00Z",
}
REDEMPTION = {
    "id": "red-1",
    **B,
    **VIEWER,
    "user_input": "hello",
    "status": "unfulfilled",
    "reward": REWARD,
    "redeemed_at": "2026-03-01T20:15:40.5Z",
}

# type → (version, event): shaped like Twitch's documented examples, values our own.
EVENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "channel.follow": ("2", {**VIEWER, **B, "followed_at": "2026-03-01T20:15:41.987654321Z"}),
    "channel.subscribe": ("1", {**VIEWER, **B, "tier": "2000", "is_gift": True}),
    "channel.subscription.gift": (
        "1",
        {
            **ANONYMOUS,
            **B,
            "total": 5,
            "tier": "1000",
            "cumulative_total": None,
            "is_anonymous": True,
        },
    ),
    "channel.subscription.message": (
        "1",
        {
            **VIEWER,
            **B,
            "tier": "1000",
            "message": {"text": "15 months, still here!", "emotes": []},
            "cumulative_months": 15,
            "streak_months": None,
            "duration_months": 1,
        },
    ),
    "channel.subscription.end": ("1", {**VIEWER, **B, "tier": "3000", "is_gift": False}),
    "channel.cheer": (
        "1",
        {"is_anonymous": False, **VIEWER, **B, "message": "Cheer100 gg", "bits": 100},
    ),
    "stream.online": (
        "1",
        {"id": "stream-77", **B, "type": "live", "started_at": "2026-03-01T20:00:01.5Z"},
    ),
    "stream.offline": ("1", {**B}),
    "channel.raid": (
        "1",
        {
            "from_broadcaster_user_id": "9001",
            "from_broadcaster_user_login": "raider",
            "from_broadcaster_user_name": "Raider",
            "to_broadcaster_user_id": "1337",
            "to_broadcaster_user_login": "streamer",
            "to_broadcaster_user_name": "Streamer",
            "viewers": 420,
        },
    ),
    "channel.channel_points_custom_reward_redemption.add": ("1", REDEMPTION),
    "channel.channel_points_custom_reward_redemption.update": (
        "1",
        {**REDEMPTION, "status": "fulfilled"},
    ),
    "channel.update": (
        "2",
        {
            **B,
            "title": "Ranked grind",
            "language": "en",
            "category_id": "516575",
            "category_name": "VALORANT",
            "content_classification_labels": ["ProfanityVulgarity"],
        },
    ),
    "channel.hype_train.begin": ("2", {**TRAIN, "level": 1, "all_time_high_level": 4}),
    "channel.hype_train.progress": ("2", TRAIN),
    "channel.hype_train.end": (
        "2",
        {
            **{k: v for k, v in TRAIN.items() if k not in ("progress", "goal", "expires_at")},
            "ended_at": "2026-03-01T20:19:00Z",
            "cooldown_ends_at": "2026-03-01T21:19:00Z",
        },
    ),
    "channel.poll.begin": ("1", POLL),
    "channel.poll.progress": ("1", POLL),
    "channel.poll.end": ("1", {**POLL, "status": "completed", "ended_at": "2026-03-01T20:05:00Z"}),
    "channel.prediction.begin": ("1", PREDICTION),
    "channel.prediction.progress": ("1", PREDICTION),
    "channel.prediction.lock": ("1", {**PREDICTION, "locked_at": "2026-03-01T20:05:00Z"}),
    "channel.prediction.end": (
        "1",
        {
            **PREDICTION,
            "winning_outcome_id": "o1",
            "status": "resolved",
            "ended_at": "2026-03-01T20:09:00Z",
        },
    ),
    "channel.goal.begin": ("1", GOAL),
    "channel.goal.progress": ("1", GOAL),
    "channel.goal.end": ("1", {**GOAL, "is_achieved": True, "ended_at": "2026-03-02T00:00:00Z"}),
}


def payload(
    sub_type: str,
    event: dict[str, Any] | None = None,
    version: str | None = None,
    condition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A notification payload {subscription, event} as Twitch sends it."""
    default_version, default_event = EVENTS.get(sub_type, ("1", {**B}))
    event = copy.deepcopy(default_event if event is None else event)
    if condition is None:
        condition = (
            {"to_broadcaster_user_id": event["to_broadcaster_user_id"]}
            if sub_type == "channel.raid"
            else {"broadcaster_user_id": B["broadcaster_user_id"]}
        )
    subscription = {
        "id": "sub-1",
        "status": "enabled",
        "type": sub_type,
        "version": version or default_version,
        "cost": 0,
        "condition": condition,
        "transport": {"method": "websocket", "session_id": "AQoQ"},
        "created_at": "2026-03-01T19:00:00Z",
    }
    return {"subscription": subscription, "event": event}


def frame_text(
    sub_type: str,
    message_id: str = "m-1",
    event: dict[str, Any] | None = None,
    stamp: str = STAMP,
    **kwargs: Any,
) -> str:
    """A full notification frame as it arrives on the WebSocket."""
    body = payload(sub_type, event, **kwargs)
    meta = {
        "message_id": message_id,
        "message_type": "notification",
        "message_timestamp": stamp,
        "subscription_type": sub_type,
        "subscription_version": body["subscription"]["version"],
    }
    return json.dumps({"metadata": meta, "payload": body})


def norm(sub_type: str, message_id: str = "m-1", event: dict[str, Any] | None = None, **kw: Any):
    return normalise_frame(parse_frame(frame_text(sub_type, message_id, event, **kw)))


# ----------------------------------------------------------------------------- frames


def session_frame(message_type: str, payload_: dict[str, Any]) -> str:
    return json.dumps(
        {
            "metadata": {
                "message_id": "s-1",
                "message_type": message_type,
                "message_timestamp": STAMP,
            },
            "payload": payload_,
        }
    )


@pytest.mark.parametrize(
    "text, kind",
    [
        (
            session_frame(
                "session_welcome",
                {
                    "session": {
                        "id": "AQoQ",
                        "status": "connected",
                        "keepalive_timeout_seconds": 10,
                        "reconnect_url": None,
                    }
                },
            ),
            FrameKind.WELCOME,
        ),
        (session_frame("session_keepalive", {}), FrameKind.KEEPALIVE),
        (
            session_frame(
                "session_reconnect",
                {"session": {"status": "reconnecting", "reconnect_url": "wss://x"}},
            ),
            FrameKind.RECONNECT,
        ),
        (frame_text("channel.follow"), FrameKind.NOTIFICATION),
        (session_frame("something_new", {"x": 1}), FrameKind.UNKNOWN),
    ],
)
def test_frames_are_classified(text: str, kind: FrameKind) -> None:
    frame = parse_frame(text)
    assert frame.kind is kind
    assert frame.text == text


def test_welcome_exposes_session_and_revocation_its_subscription() -> None:
    welcome = parse_frame(session_frame("session_welcome", {"session": {"id": "AQoQ"}}))
    assert welcome.session["id"] == "AQoQ"
    revoked = {
        "subscription": {
            **payload("channel.cheer")["subscription"],
            "status": "authorization_revoked",
        }
    }
    frame = parse_frame(session_frame("revocation", revoked))
    assert frame.kind is FrameKind.REVOCATION
    assert (frame.subscription_type, frame.subscription["status"]) == (
        "channel.cheer",
        "authorization_revoked",
    )


@pytest.mark.parametrize(
    "text, reason",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"payload": {}}', "no metadata"),
        ('{"metadata": {"message_type": "notification"}}', "message_id missing"),
        ('{"metadata": {"message_id": "x"}}', "message_type missing"),
        (
            '{"metadata": {"message_id": "x", "message_type": "session_keepalive"}, "payload": 3}',
            "payload is not an object",
        ),
        (
            '{"metadata": {"message_id": "x", "message_type": "notification"}, "payload": {}}',
            "without subscription_type",
        ),
        (
            '{"metadata": {"message_id": "x", "message_type": "session_keepalive"}, "pad": "'
            + "é" * (MAX_FRAME_BYTES // 2)
            + '"}',
            "frame too large",
        ),
    ],
)
def test_bad_frames_say_why(text: str, reason: str) -> None:
    with pytest.raises(BadFrame) as caught:
        parse_frame(text)
    assert reason in caught.value.reason


# ----------------------------------------------------------------------------- typed tables
# The typed rows themselves are built by PostgreSQL: tests/test_typed.py checks their values.


def test_every_type_in_the_reference_feeds_its_typed_table() -> None:
    tables = {sub_type: norm(sub_type).table for sub_type in EVENTS}
    assert tables["channel.follow"] == "twitch_follows"
    assert {tables[t] for t in EVENTS if t.startswith("channel.subscription")} == {
        "twitch_subscriptions"
    }
    assert tables["stream.offline"] == "twitch_streams"
    assert tables["channel.prediction.lock"] == "twitch_predictions"
    assert None not in tables.values()
    for sub_type in EVENTS:
        raw = norm(sub_type).raw
        assert (raw.message_id, raw.channel_id) == ("m-1", "1337")
        assert raw.occurred_at == "2026-03-01T20:15:42.123456+00:00"


def test_a_frame_is_stored_as_the_text_it_came_in() -> None:
    text = frame_text("channel.cheer")
    item = normalise_frame(parse_frame(text))
    assert item.document() == text
    built = normalise("m-1", "channel.cheer", "1", STAMP, payload("channel.cheer"))
    assert json.loads(built.document())["payload"] == payload("channel.cheer")


def test_v2_fields_survive_raw_and_the_raid_side_names_the_channel() -> None:
    assert norm("channel.hype_train.begin").raw.event["all_time_high_level"] == 4
    received = norm("channel.raid")
    sent = norm("channel.raid", condition={"from_broadcaster_user_id": "9001"})
    assert received.raw.channel_id == "1337" and sent.raw.channel_id == "9001"


def test_unknown_type_is_raw_only_and_unknown_fields_survive() -> None:
    event = {"broadcaster_user_id": "1337", "duration_seconds": 60, "brand_new": {"x": [1]}}
    item = normalise("m-9", "channel.vip.add", "1", STAMP, payload("x", event))
    assert item.table is None and item.raw.channel_id == "1337"
    assert item.raw.event["brand_new"] == {"x": [1]}
    follow = norm("channel.follow", event={**EVENTS["channel.follow"][1], "future_field": 7})
    assert follow.raw.payload["event"]["future_field"] == 7
    assert follow.raw.payload["subscription"]["transport"]["session_id"] == "AQoQ"


def test_charity_donation_uses_broadcaster_id() -> None:
    amount = {"value": 500, "decimal_places": 2, "currency": "USD"}
    event = {"id": "d-1", "campaign_id": "c-1", "broadcaster_id": "555", "amount": amount}
    item = normalise(
        "m-2",
        "channel.charity_campaign.donate",
        "1",
        STAMP,
        {"subscription": {"condition": {}}, "event": event},
    )
    assert item.raw.channel_id == "555"


# ----------------------------------------------------------------------------- event keys


def test_event_keys_dedupe_the_same_occurrence() -> None:
    assert norm("channel.channel_points_custom_reward_redemption.add").raw.event_key == "red-1"
    assert norm("stream.online").raw.event_key == "stream-77"
    assert norm("channel.poll.begin").raw.event_key == "poll-1"
    live = norm("channel.follow").raw.event_key
    helix = norm(
        "channel.follow",
        event={**EVENTS["channel.follow"][1], "followed_at": "2026-03-01T20:15:41Z"},
    ).raw.event_key
    assert live == helix == "4242@2026-03-01T20:15:41Z"


@pytest.mark.parametrize(
    "sub_type",
    [
        "channel.poll.progress",
        "channel.prediction.progress",
        "channel.hype_train.progress",
        "channel.goal.progress",
        "channel.channel_points_custom_reward_redemption.update",
        "stream.offline",
        "channel.cheer",
        "channel.subscribe",
    ],
)
def test_updates_and_id_less_events_have_no_key(sub_type: str) -> None:
    assert norm(sub_type).raw.event_key is None


# ----------------------------------------------------------------------------- bad events


@pytest.mark.parametrize(
    "sub_type, event, reason",
    [
        (
            "channel.follow",
            {**B, "user_login": "x", "user_name": "X", "followed_at": STAMP},
            "event.user_id missing",
        ),
        ("channel.cheer", {**VIEWER, **B, "bits": "100"}, "event.bits is not an integer"),
        ("channel.cheer", {**VIEWER, **B, "bits": 2**40}, "event.bits out of range"),
        ("channel.follow", {**VIEWER, **B, "followed_at": "yesterday"}, "not an RFC 3339 time"),
        (
            "channel.channel_points_custom_reward_redemption.add",
            {**REDEMPTION, "reward": None},
            "event.reward missing",
        ),
        ("channel.update", {"title": "no broadcaster"}, "no broadcaster id"),
        (
            "channel.channel_points_custom_reward_redemption.add",
            {**REDEMPTION, "reward": {**REWARD, "cost": "500"}},
            "event.reward.cost is not an integer",
        ),
        ("channel.follow", {**VIEWER, **B, "followed_at": "2026-03-01T20:15:41"}, "no UTC offset"),
        (
            "channel.subscribe",
            {**VIEWER, **B, "tier": "1000", "is_anonymous": "no"},
            "event.is_anonymous is not a boolean",
        ),
        ("channel.poll.progress", {**POLL, "choices": {"c1": 5}}, "event.choices is not a list"),
        (
            "channel.subscription.message",
            {**VIEWER, **B, "tier": "1000", "message": "hi"},
            "event.message is not an object",
        ),
    ],
)
def test_bad_events_say_why(sub_type: str, event: dict[str, Any], reason: str) -> None:
    body = payload(sub_type, event, condition={})
    with pytest.raises(BadEvent) as caught:
        normalise("m-1", sub_type, "1", STAMP, body)
    assert reason in caught.value.reason


def test_missing_event_or_timestamp_is_a_bad_event() -> None:
    with pytest.raises(BadEvent, match="payload.event missing"):
        normalise("m-1", "channel.follow", "2", STAMP, {"subscription": {}})
    with pytest.raises(BadEvent, match="message_timestamp missing"):
        normalise("m-1", "channel.follow", "2", None, payload("channel.follow"))
    with pytest.raises(BadEvent, match="not a notification"):
        normalise_frame(parse_frame(session_frame("session_keepalive", {})))


def test_fake_twitch_samples_all_normalise() -> None:
    from streamerhub.fake_twitch import SUBSCRIPTION_TYPES, sample_event

    for row in SUBSCRIPTION_TYPES:
        version, event = sample_event(row.type)
        item = normalise("m-1", row.type, version, STAMP, {"subscription": {}, "event": event})
        assert item.table is not None, row.type


def test_every_type_captured_has_a_dashboard_name_of_its_own() -> None:
    # The fallback (the type's last word) read "Begin" for an ad break and "Use" for Bits.
    from streamerhub.bot.subscriptions import SUBSCRIPTIONS
    from streamerhub.events.normalise import BITS_AGGREGATE
    from streamerhub.events.text import LABELS, label_of

    captured = [t for t, _, _ in SUBSCRIPTIONS] + [BITS_AGGREGATE]
    assert [t for t in captured if t not in LABELS] == []
    names = [label_of(t) for t in captured]
    assert len(set(names)) == len(names), sorted(names)
    assert label_of("channel.ad_break.begin") == "Ad break"
    assert label_of("channel.bits.use") == "Bits"
