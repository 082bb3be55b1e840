"""EventSub normalisation: a notification → its raw twitch_events row, checked for its typed table.

Pure functions, no I/O. The typed rows are built by PostgreSQL from the stored raw row
(events/typed.py: one SQL definition for live events, spool replays and rebuilds); `normalise`
checks that an event carries every field its typed table reads, with the right JSON type, and says
why when it does not, so a bad event becomes a dead letter and never fails a batch.

This runs for every notification on the reader's loop, so it builds two small objects (a RawRow
and a Normalised) and encodes nothing: the frame's text is what goes to PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable, NamedTuple

from streamerhub.errors import StreamerHubError

# The frame layer (eventsub.py imports it from here).
from streamerhub.events.frames import (
    Frame,
    FrameKind,
)
from streamerhub.events.text import BITS_AGGREGATE
from streamerhub.events.typed import TABLE_OF

_INT4 = (-(2**31), 2**31 - 1)


class BadEvent(StreamerHubError):
    """A notification whose event lacks a field we need (or has it in the wrong type)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RawRow(NamedTuple):
    """A twitch_events row; `payload` is the notification's {subscription, event}, untouched
    (None on the store's queue: see `slim`)."""

    message_id: str
    subscription_type: str
    subscription_version: str
    channel_id: str
    occurred_at: str
    event_key: str | None
    payload: dict[str, Any] | None
    backfilled: bool = False

    @property
    def event(self) -> dict[str, Any]:
        assert self.payload is not None, "a slimmed row: its payload is in Normalised.text"
        event: dict[str, Any] = self.payload["event"]
        return event


class Normalised(NamedTuple):
    """A notification ready to store: its raw row, the typed table PostgreSQL projects it into
    (None: raw only), and the frame text it came in (a JSON object whose "payload" is
    raw.payload), sent as-is rather than re-encoded; None when built from a dict."""

    raw: RawRow
    table: str | None
    text: str | None = None

    def document(self) -> str:
        """JSON text with the payload under "payload", for PostgreSQL to read."""
        if self.text is not None:
            return self.text
        return json.dumps({"payload": self.raw.payload})

    def payload(self) -> dict[str, Any]:
        """The notification's payload, parsed again from the text when it was slimmed away."""
        if self.raw.payload is not None:
            return self.raw.payload
        assert self.text is not None  # slim() keeps one of the two
        payload: dict[str, Any] = json.loads(self.text)["payload"]
        return payload


def slim(item: Normalised) -> Normalised:
    """The item without its parsed payload when its text carries it: what the store queues.
    A flood's queue then holds one text and a few short strings per event instead of dozens of
    parsed objects, so the memory it fills is freed whole once the flood is stored."""
    if item.text is None or item.raw.payload is None:
        return item
    return item._replace(raw=item.raw._replace(payload=None))


def normalise_frame(frame: Frame) -> Normalised:
    """normalise() for a notification frame (its text is what gets stored)."""
    if frame.kind is not FrameKind.NOTIFICATION:
        raise BadEvent(f"{frame.message_type} frame is not a notification")
    assert frame.subscription_type and frame.subscription_version  # parse_frame checked
    return normalise(
        frame.message_id,
        frame.subscription_type,
        frame.subscription_version,
        frame.message_timestamp,
        frame.payload,
        text=frame.text,
    )


# ----------------------------------------------------------------------------- normalisation


def normalise(
    message_id: str,
    subscription_type: str,
    subscription_version: str,
    message_timestamp: str | None,
    payload: Any,
    *,
    backfilled: bool = False,
    text: str | None = None,
) -> Normalised:
    """The raw row of one notification, its event checked for its typed table; BadEvent when
    unusable. `text`, when given, is the JSON the payload was read from (its "payload")."""
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), dict):
        raise BadEvent("payload.event missing")
    event = payload["event"]
    sub = payload.get("subscription")
    condition = sub.get("condition") if isinstance(sub, dict) else None
    occurred_at = _timestamp(message_timestamp, "metadata.message_timestamp")
    channel_id = _channel_id(
        subscription_type, event, condition if isinstance(condition, dict) else {}
    )
    check = _CHECKS.get(subscription_type)
    if check is not None:
        check(event, subscription_type)
    key_of = _EVENT_KEYS.get(subscription_type)
    raw = RawRow(
        message_id,
        subscription_type,
        str(subscription_version),
        channel_id,
        occurred_at,
        key_of(event) if key_of else None,
        payload,
        backfilled,
    )
    return Normalised(raw, TABLE_OF.get(subscription_type), text)


def _channel_id(sub_type: str, event: dict[str, Any], condition: dict[str, Any]) -> str:
    # A raid subscription names one side: the channel is whichever side we subscribed for.
    if sub_type == "channel.raid":
        keys = ("to_broadcaster_user_id", "from_broadcaster_user_id")
        found = [condition.get(k) for k in keys] + [event.get(keys[0])]
    else:
        found = [
            event.get("broadcaster_user_id"),
            condition.get("broadcaster_user_id"),
            event.get("broadcaster_id"),
        ]
    for value in found:
        if isinstance(value, str) and value:
            return value
    raise BadEvent("no broadcaster id in event or subscription condition")


def _parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise BadEvent(f"{field} missing")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise BadEvent(f"{field} is not an RFC 3339 time: {value[:40]!r}") from None


def _timestamp(value: Any, field: str) -> str:
    parsed = _parse_time(value, field)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # Twitch always says Z; be lenient
    return parsed.isoformat()


# ----------------------------------------------------------------------------- field checks
# What each typed projection in events/typed.py reads, with its JSON type. `where` names the object.


def _text(obj: dict[str, Any], key: str, null: bool = False, where: str = "event") -> None:
    value = obj.get(key)
    if type(value) is not str and not (value is None and null):
        raise BadEvent(f"{where}.{key} missing" if value is None else f"{where}.{key} is not text")


def _int(obj: dict[str, Any], key: str, null: bool = False, where: str = "event") -> None:
    value = obj.get(key)
    if value is None and null:
        return
    if type(value) is not int:
        raise BadEvent(
            f"{where}.{key} missing" if value is None else f"{where}.{key} is not an integer"
        )
    if not _INT4[0] <= value <= _INT4[1]:
        raise BadEvent(f"{where}.{key} out of range: {value}")


def _bool(event: dict[str, Any], key: str) -> bool:
    value = event.get(key)
    if value is not None and type(value) is not bool:
        raise BadEvent(f"event.{key} is not a boolean")
    return bool(value)


def _time(event: dict[str, Any], key: str, null: bool = False) -> None:
    # PostgreSQL reads these times itself: one without an offset would be read in the server's
    # zone, so it is refused here (RFC 3339, which Twitch follows, always has one).
    value = event.get(key)
    if value is None and null:
        return
    if _parse_time(value, f"event.{key}").tzinfo is None:  # so value is a str
        raise BadEvent(f"event.{key} is not an RFC 3339 time (no UTC offset): {str(value)[:40]!r}")


def _list(event: dict[str, Any], key: str) -> None:
    value = event.get(key)
    if value is not None and type(value) is not list:
        raise BadEvent(f"event.{key} is not a list")


def _user(event: dict[str, Any], prefix: str = "user", null: bool = False) -> None:
    for part in ("id", "login", "name"):
        _text(event, f"{prefix}_{part}", null)


# ----------------------------------------------------------------------------- per table


def _follow(e: dict[str, Any], _: str) -> None:
    _user(e)
    _time(e, "followed_at")


def _subscription(e: dict[str, Any], sub_type: str) -> None:
    gift, anonymous = sub_type == "channel.subscription.gift", _bool(e, "is_anonymous")
    _user(e, null=gift and anonymous)
    _text(e, "tier")
    if gift:
        _int(e, "total")
    else:
        _bool(e, "is_gift")
    for key in ("cumulative_total", "cumulative_months", "streak_months", "duration_months"):
        _int(e, key, null=True)
    message = e.get("message") if sub_type == "channel.subscription.message" else None
    if message is not None:
        if type(message) is not dict:
            raise BadEvent("event.message is not an object")
        _text(message, "text", null=True, where="event.message")


def _cheer(e: dict[str, Any], _: str) -> None:
    _user(e, null=_bool(e, "is_anonymous"))
    _int(e, "bits")
    _text(e, "message", null=True)


def _stream(e: dict[str, Any], sub_type: str) -> None:
    if sub_type == "stream.online":
        _text(e, "id")
        _text(e, "type", null=True)
        _time(e, "started_at")


def _raid(e: dict[str, Any], _: str) -> None:
    _user(e, "from_broadcaster_user")
    _user(e, "to_broadcaster_user")
    _int(e, "viewers")


def _redemption(e: dict[str, Any], _: str) -> None:
    reward = e.get("reward")
    if type(reward) is not dict:
        raise BadEvent("event.reward missing")
    _text(e, "id")
    _user(e)
    _text(e, "user_input", null=True)
    _text(e, "status")
    for key, check in (("id", _text), ("title", _text), ("cost", _int)):
        check(reward, key, where="event.reward")
    _text(reward, "prompt", null=True, where="event.reward")
    _time(e, "redeemed_at")


def _channel_update(e: dict[str, Any], _: str) -> None:
    _text(e, "title")
    for key in ("language", "category_id", "category_name"):
        _text(e, key, null=True)
    _list(e, "content_classification_labels")


def _hype_train(e: dict[str, Any], _: str) -> None:
    _text(e, "id")
    _text(e, "type", null=True)
    _bool(e, "is_shared_train")
    for key in ("level", "total", "progress", "goal"):
        _int(e, key, null=True)
    _time(e, "started_at", null=True)
    _time(e, "ended_at", null=True)


def _poll(e: dict[str, Any], _: str) -> None:
    _text(e, "id")
    _text(e, "title")
    _text(e, "status", null=True)
    _list(e, "choices")
    _time(e, "started_at", null=True)
    _time(e, "ended_at", null=True)


def _prediction(e: dict[str, Any], _: str) -> None:
    _text(e, "id")
    _text(e, "title")
    _text(e, "status", null=True)
    _text(e, "winning_outcome_id", null=True)
    _list(e, "outcomes")
    _time(e, "started_at", null=True)


def _goal(e: dict[str, Any], _: str) -> None:
    _text(e, "id")
    _text(e, "type")
    _text(e, "description", null=True)
    _int(e, "current_amount", null=True)
    _int(e, "target_amount", null=True)
    _bool(e, "is_achieved")
    _time(e, "started_at", null=True)
    _time(e, "ended_at", null=True)


def _object(
    obj: dict[str, Any], key: str, null: bool = True, where: str = "event"
) -> dict[str, Any]:
    """A nested JSON object ({} when absent and allowed)."""
    value = obj.get(key)
    if value is None and null:
        return {}
    if type(value) is not dict:
        raise BadEvent(
            f"{where}.{key} missing" if value is None else f"{where}.{key} is not an object"
        )
    return value


def _bits_use(e: dict[str, Any], _: str) -> None:
    _user(e, null=True)
    _int(e, "bits")
    _text(e, "type")
    _text(_object(e, "power_up"), "type", null=True, where="event.power_up")


def _automatic_redemption(e: dict[str, Any], _: str) -> None:
    _text(e, "id")
    _user(e)
    reward = _object(e, "reward", null=False)
    _text(reward, "type", where="event.reward")
    _int(reward, "channel_points", where="event.reward")
    _text(
        _object(reward, "emote", where="event.reward"),
        "name",
        null=True,
        where="event.reward.emote",
    )
    _time(e, "redeemed_at")


def _chat_message(e: dict[str, Any], _: str) -> None:
    _text(e, "message_id")
    _user(e, "chatter_user")
    _text(e, "message_type", null=True)
    _text(_object(e, "message"), "text", null=True, where="event.message")
    _int(_object(e, "cheer"), "bits", null=True, where="event.cheer")
    _text(e, "source_broadcaster_user_id", null=True)


def _chat_notification(e: dict[str, Any], _: str) -> None:
    _text(e, "notice_type")
    _user(e, "chatter_user", null=True)
    _bool(e, "chatter_is_anonymous")
    _text(e, "system_message", null=True)
    _text(_object(e, "message"), "text", null=True, where="event.message")
    _text(e, "source_broadcaster_user_id", null=True)


def _ad_break(e: dict[str, Any], _: str) -> None:
    _int(e, "duration_seconds")
    _bool(e, "is_automatic")
    _user(e, "requester_user", null=True)
    _time(e, "started_at")


def _shoutout(e: dict[str, Any], sub_type: str) -> None:
    side = "to" if sub_type == "channel.shoutout.create" else "from"
    _user(e, f"{side}_broadcaster_user")
    _text(e, "moderator_user_id", null=True)
    _int(e, "viewer_count")
    _time(e, "started_at")


def _amount(e: dict[str, Any], key: str, null: bool) -> None:
    amount = _object(e, key, null)
    if amount:
        _int(amount, "value", where=f"event.{key}")
        _int(amount, "decimal_places", where=f"event.{key}")
        _text(amount, "currency", where=f"event.{key}")
        if not 0 <= amount["decimal_places"] <= 8:
            raise BadEvent(f"event.{key}.decimal_places out of range: {amount['decimal_places']}")


def _charity(e: dict[str, Any], sub_type: str) -> None:
    _text(e, "id")
    _text(e, "charity_name", null=True)
    donation = sub_type == "channel.charity_campaign.donate"
    if donation:
        _text(e, "campaign_id")
        _user(e, null=True)
    _amount(e, "amount", null=not donation)
    for key in ("current_amount", "target_amount"):
        _amount(e, key, null=True)


def _shared_chat(e: dict[str, Any], _: str) -> None:
    _text(e, "session_id")
    _user(e, "host_broadcaster_user")
    _list(e, "participants")


_BY_TABLE: dict[str, Callable[[dict[str, Any], str], None]] = {
    "twitch_follows": _follow,
    "twitch_subscriptions": _subscription,
    "twitch_cheers": _cheer,
    "twitch_streams": _stream,
    "twitch_raids": _raid,
    "twitch_redemptions": _redemption,
    "twitch_channel_updates": _channel_update,
    "twitch_hype_trains": _hype_train,
    "twitch_polls": _poll,
    "twitch_predictions": _prediction,
    "twitch_goals": _goal,
    "twitch_bits_uses": _bits_use,
    "twitch_automatic_redemptions": _automatic_redemption,
    "twitch_chat_messages": _chat_message,
    "twitch_chat_notifications": _chat_notification,
    "twitch_ad_breaks": _ad_break,
    "twitch_shoutouts": _shoutout,
    "twitch_charity": _charity,
    "twitch_shared_chats": _shared_chat,
}


def _bits_aggregate(e: dict[str, Any], _: str) -> None:
    _user(e)
    _int(e, "bits")
    _int(e, "leaderboard_score")
    _time(e, "period_started_at")


_CHECKS = {sub_type: _BY_TABLE[table] for sub_type, table in TABLE_OF.items()}
_CHECKS[BITS_AGGREGATE] = _bits_aggregate


# ----------------------------------------------------------------------------- event keys


def _own_id(event: dict[str, Any]) -> str | None:
    value = event.get("id")
    return value if isinstance(value, str) and value else None


def _follow_key(event: dict[str, Any]) -> str | None:
    # Helix lists followed_at to the second, EventSub to the nanosecond: key on the second so a
    # backfilled follow and the live one dedupe.
    user, at = event.get("user_id"), event.get("followed_at")
    if not isinstance(at, str):
        return None
    try:
        stamp = datetime.fromisoformat(at).astimezone(timezone.utc)
    except ValueError:
        return None
    return f"{user}@{stamp:%Y-%m-%dT%H:%M:%SZ}" if isinstance(user, str) else None


def _field(key: str) -> Callable[[dict[str, Any]], str | None]:
    def key_of(event: dict[str, Any]) -> str | None:
        value = event.get(key)
        return value if isinstance(value, str) and value else None

    return key_of


def _ad_break_key(event: dict[str, Any]) -> str | None:
    # No id: one ad break starts once per channel at a given instant.
    return _field("started_at")(event)


def _shoutout_key(event: dict[str, Any]) -> str | None:
    other = event.get("to_broadcaster_user_id") or event.get("from_broadcaster_user_id")
    at = event.get("started_at")
    return f"{other}@{at}" if isinstance(other, str) and isinstance(at, str) else None


def _bits_key(event: dict[str, Any]) -> str | None:
    # One user's day at one leaderboard total: a repeated backfill dedupes, a grown total is new.
    user, day, score = (event.get(k) for k in ("user_id", "period_started_at", "leaderboard_score"))
    return f"{user}@{day}#{score}"


# Progress updates (poll/prediction/hype train/goal) and redemption updates share their id with
# other messages of the same occurrence: no key, every one is kept.
_EVENT_KEYS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "channel.follow": _follow_key,
    "stream.online": _own_id,
    BITS_AGGREGATE: _bits_key,
    "channel.channel_points_custom_reward_redemption.add": _own_id,
    **{
        f"channel.{kind}.{phase}": _own_id
        for kind in ("hype_train", "poll", "goal")
        for phase in ("begin", "end")
    },
    **{f"channel.prediction.{phase}": _own_id for phase in ("begin", "lock", "end")},
    # The newer types (channel.bits.use has no id of its own: its message id dedupes it).
    "channel.channel_points_automatic_reward_redemption.add": _own_id,
    "channel.chat.message": _field("message_id"),
    "channel.chat.notification": _field("message_id"),
    "channel.ad_break.begin": _ad_break_key,
    "channel.shoutout.create": _shoutout_key,
    "channel.shoutout.receive": _shoutout_key,
    **{f"channel.charity_campaign.{p}": _own_id for p in ("donate", "start", "stop")},
    "channel.shared_chat.begin": _field("session_id"),
    "channel.shared_chat.end": _field("session_id"),
}
