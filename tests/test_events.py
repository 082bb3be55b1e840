"""EventSub normalisation: frames are classified, every type becomes the typed row a user sees."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from streamerhub.bot.events import (MAX_FRAME_BYTES, BadEvent, BadFrame, FrameKind, live_item,
                                    normalise, normalise_frame, parse_frame)

STAMP = "2026-03-01T20:15:42.123456789Z"
B = {"broadcaster_user_id": "1337", "broadcaster_user_login": "streamer",
     "broadcaster_user_name": "Streamer"}
VIEWER = {"user_id": "4242", "user_login": "cool_viewer", "user_name": "Cool_Viewer"}
ANONYMOUS = {"user_id": None, "user_login": None, "user_name": None}
REWARD = {"id": "r-1", "title": "Hydrate!", "cost": 500, "prompt": "Drink water"}
CHOICES = [{"id": "c1", "title": "Yes", "bits_votes": 0, "channel_points_votes": 5, "votes": 5}]
OUTCOMES = [{"id": "o1", "title": "Win", "color": "blue", "users": 3, "channel_points": 900}]
TRAIN = {"id": "train-1", **B, "total": 1750, "progress": 350, "goal": 1800, "level": 2,
         "top_contributions": [{**VIEWER, "type": "bits", "total": 1000}],
         "shared_train_participants": None, "started_at": "2026-03-01T20:10:00Z",
         "expires_at": "2026-03-01T20:20:00Z", "is_shared_train": False, "type": "golden_kappa"}
POLL = {"id": "poll-1", **B, "title": "Which map?", "choices": CHOICES,
        "bits_voting": {"is_enabled": False, "amount_per_vote": 0},
        "started_at": "2026-03-01T20:00:00Z", "ends_at": "2026-03-01T20:05:00Z"}
PREDICTION = {"id": "pred-1", **B, "title": "Win this round?", "outcomes": OUTCOMES,
              "started_at": "2026-03-01T20:00:00Z", "locks_at": "2026-03-01T20:05:00Z"}
GOAL = {"id": "goal-1", **B, "type": "follower", "description": "Road to 1000",
        "current_amount": 640, "target_amount": 1000, "started_at": "2026-02-01T00:00:00Z"}
REDEMPTION = {"id": "red-1", **B, **VIEWER, "user_input": "hello", "status": "unfulfilled",
              "reward": REWARD, "redeemed_at": "2026-03-01T20:15:40.5Z"}

# type → (version, event): shaped like Twitch's documented examples, values our own.
EVENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "channel.follow": ("2", {**VIEWER, **B, "followed_at": "2026-03-01T20:15:41.987654321Z"}),
    "channel.subscribe": ("1", {**VIEWER, **B, "tier": "2000", "is_gift": True}),
    "channel.subscription.gift": ("1", {**ANONYMOUS, **B, "total": 5, "tier": "1000",
                                        "cumulative_total": None, "is_anonymous": True}),
    "channel.subscription.message": ("1", {**VIEWER, **B, "tier": "1000",
                                           "message": {"text": "15 months, still here!",
                                                       "emotes": []},
                                           "cumulative_months": 15, "streak_months": None,
                                           "duration_months": 1}),
    "channel.subscription.end": ("1", {**VIEWER, **B, "tier": "3000", "is_gift": False}),
    "channel.cheer": ("1", {"is_anonymous": False, **VIEWER, **B, "message": "Cheer100 gg",
                            "bits": 100}),
    "stream.online": ("1", {"id": "stream-77", **B, "type": "live",
                            "started_at": "2026-03-01T20:00:01.5Z"}),
    "stream.offline": ("1", {**B}),
    "channel.raid": ("1", {"from_broadcaster_user_id": "9001", "from_broadcaster_user_login": "raider",
                           "from_broadcaster_user_name": "Raider",
                           "to_broadcaster_user_id": "1337", "to_broadcaster_user_login": "streamer",
                           "to_broadcaster_user_name": "Streamer", "viewers": 420}),
    "channel.channel_points_custom_reward_redemption.add": ("1", REDEMPTION),
    "channel.channel_points_custom_reward_redemption.update": ("1", {**REDEMPTION,
                                                                     "status": "fulfilled"}),
    "channel.update": ("2", {**B, "title": "Ranked grind", "language": "en", "category_id": "516575",
                             "category_name": "VALORANT",
                             "content_classification_labels": ["ProfanityVulgarity"]}),
    "channel.hype_train.begin": ("2", {**TRAIN, "level": 1, "all_time_high_level": 4}),
    "channel.hype_train.progress": ("2", TRAIN),
    "channel.hype_train.end": ("2", {**{k: v for k, v in TRAIN.items()
                                        if k not in ("progress", "goal", "expires_at")},
                                     "ended_at": "2026-03-01T20:19:00Z",
                                     "cooldown_ends_at": "2026-03-01T21:19:00Z"}),
    "channel.poll.begin": ("1", POLL),
    "channel.poll.progress": ("1", POLL),
    "channel.poll.end": ("1", {**POLL, "status": "completed", "ended_at": "2026-03-01T20:05:00Z"}),
    "channel.prediction.begin": ("1", PREDICTION),
    "channel.prediction.progress": ("1", PREDICTION),
    "channel.prediction.lock": ("1", {**PREDICTION, "locked_at": "2026-03-01T20:05:00Z"}),
    "channel.prediction.end": ("1", {**PREDICTION, "winning_outcome_id": "o1",
                                     "status": "resolved", "ended_at": "2026-03-01T20:09:00Z"}),
    "channel.goal.begin": ("1", GOAL),
    "channel.goal.progress": ("1", GOAL),
    "channel.goal.end": ("1", {**GOAL, "is_achieved": True, "ended_at": "2026-03-02T00:00:00Z"}),
}


def payload(sub_type: str, event: dict[str, Any] | None = None, version: str | None = None,
            condition: dict[str, Any] | None = None) -> dict[str, Any]:
    """A notification payload {subscription, event} as Twitch sends it."""
    default_version, default_event = EVENTS.get(sub_type, ("1", {**B}))
    event = copy.deepcopy(default_event if event is None else event)
    if condition is None:
        condition = ({"to_broadcaster_user_id": event["to_broadcaster_user_id"]}
                     if sub_type == "channel.raid" else {"broadcaster_user_id": B["broadcaster_user_id"]})
    subscription = {"id": "sub-1", "status": "enabled", "type": sub_type,
                    "version": version or default_version, "cost": 0, "condition": condition,
                    "transport": {"method": "websocket", "session_id": "AQoQ"},
                    "created_at": "2026-03-01T19:00:00Z"}
    return {"subscription": subscription, "event": event}


def frame_text(sub_type: str, message_id: str = "m-1", event: dict[str, Any] | None = None,
               stamp: str = STAMP, **kwargs: Any) -> str:
    """A full notification frame as it arrives on the WebSocket."""
    body = payload(sub_type, event, **kwargs)
    meta = {"message_id": message_id, "message_type": "notification", "message_timestamp": stamp,
            "subscription_type": sub_type, "subscription_version": body["subscription"]["version"]}
    return json.dumps({"metadata": meta, "payload": body})


def norm(sub_type: str, message_id: str = "m-1", event: dict[str, Any] | None = None, **kw: Any):
    return normalise_frame(parse_frame(frame_text(sub_type, message_id, event, **kw)))


# ----------------------------------------------------------------------------- frames

def session_frame(message_type: str, payload_: dict[str, Any]) -> str:
    return json.dumps({"metadata": {"message_id": "s-1", "message_type": message_type,
                                    "message_timestamp": STAMP}, "payload": payload_})


@pytest.mark.parametrize("text, kind", [
    (session_frame("session_welcome", {"session": {"id": "AQoQ", "status": "connected",
                                                   "keepalive_timeout_seconds": 10,
                                                   "reconnect_url": None}}), FrameKind.WELCOME),
    (session_frame("session_keepalive", {}), FrameKind.KEEPALIVE),
    (session_frame("session_reconnect", {"session": {"status": "reconnecting",
                                                     "reconnect_url": "wss://x"}}),
     FrameKind.RECONNECT),
    (frame_text("channel.follow"), FrameKind.NOTIFICATION),
    (session_frame("something_new", {"x": 1}), FrameKind.UNKNOWN),
])
def test_frames_are_classified(text: str, kind: FrameKind) -> None:
    frame = parse_frame(text)
    assert frame.kind is kind
    assert frame.text == text


def test_welcome_exposes_session_and_revocation_its_subscription() -> None:
    welcome = parse_frame(session_frame("session_welcome", {"session": {"id": "AQoQ"}}))
    assert welcome.session["id"] == "AQoQ"
    revoked = {"subscription": {**payload("channel.cheer")["subscription"],
                                "status": "authorization_revoked"}}
    frame = parse_frame(session_frame("revocation", revoked))
    assert frame.kind is FrameKind.REVOCATION
    assert (frame.subscription_type, frame.subscription["status"]) == ("channel.cheer",
                                                                       "authorization_revoked")


@pytest.mark.parametrize("text, reason", [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"payload": {}}', "no metadata"),
    ('{"metadata": {"message_type": "notification"}}', "message_id missing"),
    ('{"metadata": {"message_id": "x"}}', "message_type missing"),
    ('{"metadata": {"message_id": "x", "message_type": "session_keepalive"}, "payload": 3}',
     "payload is not an object"),
    ('{"metadata": {"message_id": "x", "message_type": "notification"}, "payload": {}}',
     "without subscription_type"),
    ('{"metadata": {"message_id": "x", "message_type": "session_keepalive"}, "pad": "'
     + "é" * (MAX_FRAME_BYTES // 2) + '"}', "frame too large"),
])
def test_bad_frames_say_why(text: str, reason: str) -> None:
    with pytest.raises(BadFrame) as caught:
        parse_frame(text)
    assert reason in caught.value.reason


# ----------------------------------------------------------------------------- typed rows

def test_every_type_in_the_reference_has_a_typed_row() -> None:
    for sub_type in EVENTS:
        item = norm(sub_type)
        assert item.typed is not None, sub_type
        assert item.typed.columns["message_id"] == "m-1"
        assert item.typed.columns["channel_id"] == "1337"
        assert item.raw.occurred_at == "2026-03-01T20:15:42.123456+00:00"


def test_anonymous_gift_has_no_user() -> None:
    row = norm("channel.subscription.gift").typed
    assert row is not None and row.table == "twitch_subscriptions"
    assert row.columns.items() >= {"kind": "gift", "user_id": None, "user_name": None,
                                   "is_anonymous": True, "gift_total": 5, "tier": "1000",
                                   "cumulative_total": None}.items()


def test_resub_keeps_its_message_and_months() -> None:
    c = norm("channel.subscription.message").typed.columns  # type: ignore[union-attr]
    assert (c["kind"], c["message"], c["cumulative_months"], c["streak_months"]) == \
        ("resub", "15 months, still here!", 15, None)


def test_gifted_sub_and_end() -> None:
    sub = norm("channel.subscribe").typed.columns  # type: ignore[union-attr]
    end = norm("channel.subscription.end").typed.columns  # type: ignore[union-attr]
    assert (sub["kind"], sub["tier"], sub["is_gift"], sub["user_login"]) == ("sub", "2000", True,
                                                                            "cool_viewer")
    assert (end["kind"], end["tier"]) == ("end", "3000")


def test_hype_train_v2_fields() -> None:
    begin, end = norm("channel.hype_train.begin"), norm("channel.hype_train.end")
    assert begin.typed.columns.items() >= {  # type: ignore[union-attr]
        "phase": "begin", "train_id": "train-1", "level": 1, "goal": 1800,
        "train_type": "golden_kappa", "is_shared_train": False,
        "started_at": "2026-03-01T20:10:00+00:00"}.items()
    assert end.typed.columns["ended_at"] == "2026-03-01T20:19:00+00:00"  # type: ignore[union-attr]
    assert end.typed.columns["progress"] is None  # type: ignore[union-attr]
    assert begin.raw.event["all_time_high_level"] == 4  # v2-only fields survive raw


def test_raid_channel_is_the_side_we_subscribed_for() -> None:
    received = norm("channel.raid")
    sent = norm("channel.raid", condition={"from_broadcaster_user_id": "9001"})
    assert received.raw.channel_id == "1337" and sent.raw.channel_id == "9001"
    c = received.typed.columns  # type: ignore[union-attr]
    assert (c["from_user_name"], c["to_user_login"], c["viewers"]) == ("Raider", "streamer", 420)


def test_cheer_stream_redemption_update_poll_prediction_goal_values() -> None:
    cols = {t: norm(t).typed.columns for t in EVENTS}  # type: ignore[union-attr]
    assert cols["channel.cheer"]["bits"] == 100
    online = cols["stream.online"]
    assert (online["kind"], online["stream_id"], online["started_at"]) == (
        "online", "stream-77", "2026-03-01T20:00:01.500000+00:00")
    assert cols["stream.offline"]["kind"] == "offline"
    update = cols["channel.channel_points_custom_reward_redemption.update"]
    assert (update["kind"], update["status"], update["reward_cost"]) == ("update", "fulfilled", 500)
    assert cols["channel.update"]["content_classification_labels"] == ["ProfanityVulgarity"]
    assert cols["channel.poll.end"]["status"] == "completed"
    assert cols["channel.poll.progress"]["choices"][0]["votes"] == 5
    assert cols["channel.prediction.end"]["winning_outcome_id"] == "o1"
    assert cols["channel.prediction.lock"]["phase"] == "lock"
    assert (cols["channel.goal.end"]["is_achieved"], cols["channel.goal.end"]["goal_type"]) == (
        True, "follower")


def test_unknown_type_is_raw_only_and_unknown_fields_survive() -> None:
    event = {"broadcaster_user_id": "1337", "duration_seconds": 60, "brand_new": {"x": [1]}}
    item = normalise("m-9", "channel.ad_break.begin", "1", STAMP, payload("x", event))
    assert item.typed is None and item.raw.channel_id == "1337"
    assert item.raw.event["brand_new"] == {"x": [1]}
    follow = norm("channel.follow", event={**EVENTS["channel.follow"][1], "future_field": 7})
    assert follow.raw.payload["event"]["future_field"] == 7
    assert follow.raw.payload["subscription"]["transport"]["session_id"] == "AQoQ"


def test_charity_donation_uses_broadcaster_id() -> None:
    event = {"id": "d-1", "broadcaster_id": "555", "amount": {"value": 500}}
    item = normalise("m-2", "channel.charity_campaign.donate", "1", STAMP,
                     {"subscription": {"condition": {}}, "event": event})
    assert item.raw.channel_id == "555"


# ----------------------------------------------------------------------------- event keys

def test_event_keys_dedupe_the_same_occurrence() -> None:
    assert norm("channel.channel_points_custom_reward_redemption.add").raw.event_key == "red-1"
    assert norm("stream.online").raw.event_key == "stream-77"
    assert norm("channel.poll.begin").raw.event_key == "poll-1"
    live = norm("channel.follow").raw.event_key
    helix = norm("channel.follow", event={**EVENTS["channel.follow"][1],
                                          "followed_at": "2026-03-01T20:15:41Z"}).raw.event_key
    assert live == helix == "4242@2026-03-01T20:15:41Z"


@pytest.mark.parametrize("sub_type", [
    "channel.poll.progress", "channel.prediction.progress", "channel.hype_train.progress",
    "channel.goal.progress", "channel.channel_points_custom_reward_redemption.update",
    "stream.offline", "channel.cheer", "channel.subscribe"])
def test_updates_and_id_less_events_have_no_key(sub_type: str) -> None:
    assert norm(sub_type).raw.event_key is None


# ----------------------------------------------------------------------------- bad events

@pytest.mark.parametrize("sub_type, event, reason", [
    ("channel.follow", {**B, "user_login": "x", "user_name": "X", "followed_at": STAMP},
     "event.user_id missing"),
    ("channel.cheer", {**VIEWER, **B, "bits": "100"}, "event.bits is not an integer"),
    ("channel.cheer", {**VIEWER, **B, "bits": 2**40}, "event.bits out of range"),
    ("channel.follow", {**VIEWER, **B, "followed_at": "yesterday"}, "not an RFC 3339 time"),
    ("channel.channel_points_custom_reward_redemption.add", {**REDEMPTION, "reward": None},
     "event.reward missing"),
    ("channel.update", {"title": "no broadcaster"}, "no broadcaster id"),
])
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


# ----------------------------------------------------------------------------- live feed

def test_live_item_is_compact_and_readable() -> None:
    item = live_item(norm("channel.subscription.gift", message_id="m-7"))
    assert item["id"] == item["message_id"] == "m-7"
    assert (item["type"], item["channel_id"]) == ("channel.subscription.gift", "1337")
    assert item["summary"] == "Anonymous gifted 5 Tier 1 subs"
    assert item["event"]["total"] == 5 and item["occurred_at"].startswith("2026-03-01T20:15:42")
    assert live_item(norm("channel.raid"))["summary"] == "Raider raided Streamer with 420 viewers"
    resub = live_item(norm("channel.subscription.message"))["summary"]
    assert resub == "Cool_Viewer resubscribed for 15 months (Tier 1): 15 months, still here!"


def test_fake_twitch_samples_all_normalise() -> None:
    from streamerhub.fake_twitch import SUBSCRIPTION_TYPES, sample_event

    for row in SUBSCRIPTION_TYPES:
        version, event = sample_event(row.type)
        item = normalise("m-1", row.type, version, STAMP, {"subscription": {}, "event": event})
        assert item.typed is not None, row.type
