"""EventSub normalisation: a WebSocket frame → a raw twitch_events row + the typed row for its type.

Pure functions, no I/O. `normalise` is the single function used both for live notifications and
for rebuilding the typed tables from twitch_events, so the two can never disagree.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from streamerhub.errors import StreamerHubError

MAX_FRAME_BYTES = 1024 * 1024
_INT4 = (-2**31, 2**31 - 1)
_REDEMPTION = "channel.channel_points_custom_reward_redemption"


class BadFrame(StreamerHubError):
    """A WebSocket frame that is not an EventSub message; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadEvent(StreamerHubError):
    """A notification whose event lacks a field we need (or has it in the wrong type)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameKind(enum.Enum):
    WELCOME = "session_welcome"
    KEEPALIVE = "session_keepalive"
    NOTIFICATION = "notification"
    RECONNECT = "session_reconnect"
    REVOCATION = "revocation"
    UNKNOWN = "unknown"


_KINDS = {kind.value: kind for kind in FrameKind if kind is not FrameKind.UNKNOWN}


@dataclass(frozen=True)
class Frame:
    """One classified EventSub frame; `text` is kept for dead letters."""

    kind: FrameKind
    message_id: str
    message_type: str
    message_timestamp: str | None
    payload: dict[str, Any]
    text: str
    subscription_type: str | None = None
    subscription_version: str | None = None

    @property
    def session(self) -> dict[str, Any]:
        """payload.session of a welcome/reconnect frame ({} otherwise)."""
        session = self.payload.get("session")
        return session if isinstance(session, dict) else {}

    @property
    def subscription(self) -> dict[str, Any]:
        """payload.subscription of a notification/revocation frame ({} otherwise)."""
        sub = self.payload.get("subscription")
        return sub if isinstance(sub, dict) else {}


@dataclass(frozen=True)
class RawRow:
    """A twitch_events row; `payload` is the notification's {subscription, event}, untouched."""

    message_id: str
    subscription_type: str
    subscription_version: str
    channel_id: str
    occurred_at: str
    event_key: str | None
    payload: dict[str, Any]
    backfilled: bool = False

    @property
    def event(self) -> dict[str, Any]:
        return self.payload["event"]


@dataclass(frozen=True)
class TypedRow:
    """A row of one typed twitch_* table: JSON-ready column values (timestamps as ISO text)."""

    table: str
    columns: dict[str, Any]


@dataclass(frozen=True)
class Normalised:
    raw: RawRow
    typed: TypedRow | None


# ----------------------------------------------------------------------------- frames

def parse_frame(text: str) -> Frame:
    """Classify one WebSocket text frame, or raise BadFrame saying what is wrong with it."""
    _check_size(text)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadFrame(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadFrame("not a JSON object")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise BadFrame("no metadata object")
    message_id, message_type = meta.get("message_id"), meta.get("message_type")
    if not isinstance(message_id, str) or not message_id:
        raise BadFrame("metadata.message_id missing")
    if not isinstance(message_type, str) or not message_type:
        raise BadFrame("metadata.message_type missing")
    payload = doc.get("payload", {})
    if not isinstance(payload, dict):
        raise BadFrame("payload is not an object")
    stamp = meta.get("message_timestamp")
    frame = Frame(_KINDS.get(message_type, FrameKind.UNKNOWN), message_id, message_type,
                  stamp if isinstance(stamp, str) else None, payload, text)
    if frame.kind in (FrameKind.NOTIFICATION, FrameKind.REVOCATION):
        return _with_subscription(frame, meta)
    return frame


def _check_size(text: str) -> None:
    # Characters are at most 4 UTF-8 bytes: encode only when the length alone cannot decide.
    size = len(text) if len(text) > MAX_FRAME_BYTES or len(text) * 4 <= MAX_FRAME_BYTES \
        else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise BadFrame(f"frame too large: {size} bytes > {MAX_FRAME_BYTES}")


def _with_subscription(frame: Frame, meta: dict[str, Any]) -> Frame:
    sub = frame.subscription
    sub_type = meta.get("subscription_type") or sub.get("type")
    version = meta.get("subscription_version") or sub.get("version")
    if not isinstance(sub_type, str) or not sub_type:
        raise BadFrame(f"{frame.message_type} without subscription_type")
    if not isinstance(version, str) or not version:
        raise BadFrame(f"{frame.message_type} without subscription_version")
    return Frame(frame.kind, frame.message_id, frame.message_type, frame.message_timestamp,
                 frame.payload, frame.text, sub_type, version)


def normalise_frame(frame: Frame) -> Normalised:
    """normalise() for a notification frame."""
    if frame.kind is not FrameKind.NOTIFICATION:
        raise BadEvent(f"{frame.message_type} frame is not a notification")
    assert frame.subscription_type and frame.subscription_version  # parse_frame checked
    return normalise(frame.message_id, frame.subscription_type, frame.subscription_version,
                     frame.message_timestamp, frame.payload)


# ----------------------------------------------------------------------------- normalisation

def normalise(message_id: str, subscription_type: str, subscription_version: str,
              message_timestamp: str | None, payload: Any, *,
              backfilled: bool = False) -> Normalised:
    """The raw row and typed row (or None) for one notification; BadEvent when unusable."""
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), dict):
        raise BadEvent("payload.event missing")
    event = payload["event"]
    sub = payload.get("subscription") or {}
    condition = sub.get("condition") if isinstance(sub, dict) else None
    occurred_at = _timestamp(message_timestamp, "metadata.message_timestamp")
    channel_id = _channel_id(subscription_type, event,
                             condition if isinstance(condition, dict) else {})
    key_of = _EVENT_KEYS.get(subscription_type)
    raw = RawRow(message_id, subscription_type, str(subscription_version), channel_id,
                 occurred_at, key_of(event) if key_of else None, payload, backfilled)
    build = _TYPED.get(subscription_type)
    return Normalised(raw, TypedRow(build[0], build[1](raw)) if build else None)


def _channel_id(sub_type: str, event: dict[str, Any], condition: dict[str, Any]) -> str:
    # A raid subscription names one side: the channel is whichever side we subscribed for.
    if sub_type == "channel.raid":
        keys = ("to_broadcaster_user_id", "from_broadcaster_user_id")
        found = [condition.get(k) for k in keys] + [event.get(keys[0])]
    else:
        found = [event.get("broadcaster_user_id"), condition.get("broadcaster_user_id"),
                 event.get("broadcaster_id")]
    for value in found:
        if isinstance(value, str) and value:
            return value
    raise BadEvent("no broadcaster id in event or subscription condition")


def _timestamp(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise BadEvent(f"{field} missing")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadEvent(f"{field} is not an RFC 3339 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # Twitch always says Z; be lenient
    return parsed.isoformat()


# ----------------------------------------------------------------------------- field readers

def _text(event: dict[str, Any], key: str, null: bool = False) -> str | None:
    value = event.get(key)
    if value is None and null:
        return None
    if not isinstance(value, str):
        raise BadEvent(f"event.{key} missing" if value is None else f"event.{key} is not text")
    return value


def _int(event: dict[str, Any], key: str, null: bool = False) -> int | None:
    value = event.get(key)
    if value is None and null:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadEvent(f"event.{key} missing" if value is None else f"event.{key} is not an integer")
    if not _INT4[0] <= value <= _INT4[1]:
        raise BadEvent(f"event.{key} out of range: {value}")
    return value


def _bool(event: dict[str, Any], key: str, default: bool | None = False) -> bool | None:
    value = event.get(key, default)
    if value is not None and not isinstance(value, bool):
        raise BadEvent(f"event.{key} is not a boolean")
    return value if value is not None else default


def _time(event: dict[str, Any], key: str, null: bool = False) -> str | None:
    if event.get(key) is None and null:
        return None
    return _timestamp(event.get(key), f"event.{key}")


def _json_list(event: dict[str, Any], key: str) -> list[Any]:
    value = event.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadEvent(f"event.{key} is not a list")
    return value


def _user(event: dict[str, Any], prefix: str = "user", null: bool = False) -> dict[str, Any]:
    return {f"{prefix}_{part}": _text(event, f"{prefix}_{part}", null)
            for part in ("id", "login", "name")}


def _phase(raw: RawRow) -> str:
    return raw.subscription_type.rsplit(".", 1)[1]


def _base(raw: RawRow) -> dict[str, Any]:
    return {"message_id": raw.message_id, "channel_id": raw.channel_id}


# ----------------------------------------------------------------------------- typed rows

def _follow(raw: RawRow) -> dict[str, Any]:
    e = raw.event
    return {**_base(raw), **_user(e), "followed_at": _time(e, "followed_at"),
            "backfilled": raw.backfilled}


def _subscription(raw: RawRow) -> dict[str, Any]:
    e, kind = raw.event, _SUB_KINDS[raw.subscription_type]
    anonymous = _bool(e, "is_anonymous")
    message = e.get("message") if kind == "resub" else None
    if message is not None and not isinstance(message, dict):
        raise BadEvent("event.message is not an object")
    return {**_base(raw), "kind": kind, **_user(e, null=kind == "gift" and bool(anonymous)),
            "tier": _text(e, "tier"), "is_gift": kind == "gift" or _bool(e, "is_gift"),
            "is_anonymous": anonymous,
            "gift_total": _int(e, "total") if kind == "gift" else None,
            "cumulative_total": _int(e, "cumulative_total", null=True),
            "cumulative_months": _int(e, "cumulative_months", null=True),
            "streak_months": _int(e, "streak_months", null=True),
            "duration_months": _int(e, "duration_months", null=True),
            "message": _text(message, "text", null=True) if message else None,
            "occurred_at": raw.occurred_at}


_SUB_KINDS = {"channel.subscribe": "sub", "channel.subscription.message": "resub",
              "channel.subscription.gift": "gift", "channel.subscription.end": "end"}


def _cheer(raw: RawRow) -> dict[str, Any]:
    e = raw.event
    anonymous = _bool(e, "is_anonymous")
    return {**_base(raw), **_user(e, null=bool(anonymous)), "is_anonymous": anonymous,
            "bits": _int(e, "bits"), "message": _text(e, "message", null=True),
            "occurred_at": raw.occurred_at}


def _stream(raw: RawRow) -> dict[str, Any]:
    e, online = raw.event, raw.subscription_type == "stream.online"
    return {**_base(raw), "kind": "online" if online else "offline",
            "stream_id": _text(e, "id") if online else None,
            "stream_type": _text(e, "type", null=True) if online else None,
            "started_at": _time(e, "started_at") if online else None,
            "occurred_at": raw.occurred_at, "reconciled": raw.backfilled}


def _raid(raw: RawRow) -> dict[str, Any]:
    e = raw.event
    sides = {f"{side}_user_{part}": _text(e, f"{side}_broadcaster_user_{part}")
             for side in ("from", "to") for part in ("id", "login", "name")}
    return {**_base(raw), **sides, "viewers": _int(e, "viewers"), "occurred_at": raw.occurred_at}


def _redemption(raw: RawRow) -> dict[str, Any]:
    e = raw.event
    reward = e.get("reward")
    if not isinstance(reward, dict):
        raise BadEvent("event.reward missing")
    return {**_base(raw), "kind": _phase(raw), "redemption_id": _text(e, "id"), **_user(e),
            "user_input": _text(e, "user_input", null=True), "status": _text(e, "status"),
            "reward_id": _text(reward, "id"), "reward_title": _text(reward, "title"),
            "reward_cost": _int(reward, "cost"), "reward_prompt": _text(reward, "prompt", null=True),
            "redeemed_at": _time(e, "redeemed_at")}


def _channel_update(raw: RawRow) -> dict[str, Any]:
    e = raw.event
    return {**_base(raw), "title": _text(e, "title"), "language": _text(e, "language", null=True),
            "category_id": _text(e, "category_id", null=True),
            "category_name": _text(e, "category_name", null=True),
            "content_classification_labels": _json_list(e, "content_classification_labels"),
            "occurred_at": raw.occurred_at}


def _hype_train(raw: RawRow) -> dict[str, Any]:
    e = raw.event
    return {**_base(raw), "phase": _phase(raw), "train_id": _text(e, "id"),
            "train_type": _text(e, "type", null=True),
            "is_shared_train": _bool(e, "is_shared_train", None),
            **{k: _int(e, k, null=True) for k in ("level", "total", "progress", "goal")},
            "started_at": _time(e, "started_at", null=True),
            "ended_at": _time(e, "ended_at", null=True), "occurred_at": raw.occurred_at}


def _poll(raw: RawRow) -> dict[str, Any]:
    e = raw.event
    return {**_base(raw), "phase": _phase(raw), "poll_id": _text(e, "id"),
            "title": _text(e, "title"), "status": _text(e, "status", null=True),
            "choices": _json_list(e, "choices"), "started_at": _time(e, "started_at", null=True),
            "ended_at": _time(e, "ended_at", null=True), "occurred_at": raw.occurred_at}


def _prediction(raw: RawRow) -> dict[str, Any]:
    e = raw.event
    return {**_base(raw), "phase": _phase(raw), "prediction_id": _text(e, "id"),
            "title": _text(e, "title"), "status": _text(e, "status", null=True),
            "winning_outcome_id": _text(e, "winning_outcome_id", null=True),
            "outcomes": _json_list(e, "outcomes"),
            "started_at": _time(e, "started_at", null=True), "occurred_at": raw.occurred_at}


def _goal(raw: RawRow) -> dict[str, Any]:
    e = raw.event
    return {**_base(raw), "phase": _phase(raw), "goal_id": _text(e, "id"),
            "goal_type": _text(e, "type"), "description": _text(e, "description", null=True),
            "current_amount": _int(e, "current_amount", null=True),
            "target_amount": _int(e, "target_amount", null=True),
            "is_achieved": _bool(e, "is_achieved", None),
            "started_at": _time(e, "started_at", null=True),
            "ended_at": _time(e, "ended_at", null=True), "occurred_at": raw.occurred_at}


def _phases(prefix: str, phases: tuple[str, ...], table: str,
            build: Callable[[RawRow], dict[str, Any]]) -> dict[str, tuple[str, Callable]]:
    return {f"{prefix}.{phase}": (table, build) for phase in phases}


_BPE = ("begin", "progress", "end")
_TYPED: dict[str, tuple[str, Callable[[RawRow], dict[str, Any]]]] = {
    "channel.follow": ("twitch_follows", _follow),
    **{t: ("twitch_subscriptions", _subscription) for t in _SUB_KINDS},
    "channel.cheer": ("twitch_cheers", _cheer),
    "stream.online": ("twitch_streams", _stream),
    "stream.offline": ("twitch_streams", _stream),
    "channel.raid": ("twitch_raids", _raid),
    **_phases(_REDEMPTION, ("add", "update"), "twitch_redemptions", _redemption),
    "channel.update": ("twitch_channel_updates", _channel_update),
    **_phases("channel.hype_train", _BPE, "twitch_hype_trains", _hype_train),
    **_phases("channel.poll", _BPE, "twitch_polls", _poll),
    **_phases("channel.prediction", ("begin", "progress", "lock", "end"), "twitch_predictions",
              _prediction),
    **_phases("channel.goal", _BPE, "twitch_goals", _goal),
}
TYPED_TABLES: tuple[str, ...] = tuple(sorted({table for table, _ in _TYPED.values()}))


# ----------------------------------------------------------------------------- event keys

def _own_id(event: dict[str, Any]) -> str | None:
    value = event.get("id")
    return value if isinstance(value, str) and value else None


def _follow_key(event: dict[str, Any]) -> str | None:
    # Helix lists followed_at to the second, EventSub to the nanosecond: key on the second so a
    # backfilled follow and the live one dedupe.
    user, at = event.get("user_id"), event.get("followed_at")
    try:
        stamp = datetime.fromisoformat(at).astimezone(timezone.utc)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f"{user}@{stamp:%Y-%m-%dT%H:%M:%SZ}" if isinstance(user, str) else None


# Progress updates (poll/prediction/hype train/goal) and redemption updates share their id with
# other messages of the same occurrence: no key, every one is kept.
_EVENT_KEYS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "channel.follow": _follow_key,
    "stream.online": _own_id,
    f"{_REDEMPTION}.add": _own_id,
    **{f"channel.{kind}.{phase}": _own_id for kind in ("hype_train", "poll", "goal")
       for phase in ("begin", "end")},
    **{f"channel.prediction.{phase}": _own_id for phase in ("begin", "lock", "end")},
}


# ----------------------------------------------------------------------------- live feed

def summarise(item: Normalised) -> str:
    """One short human line for the dashboard's live feed."""
    sub_type = item.raw.subscription_type
    if item.typed is None:
        return sub_type
    c = item.typed.columns
    who = c.get("user_name") or "Anonymous"
    tier = f"Tier {str(c.get('tier') or '1000')[0]}"
    lines: dict[str, Callable[[], str]] = {
        "twitch_follows": lambda: f"{who} followed",
        "twitch_cheers": lambda: f"{who} cheered {c['bits']} bits",
        "twitch_streams": lambda: f"stream went {c['kind']}",
        "twitch_raids": lambda: f"{c['from_user_name']} raided {c['to_user_name']} "
                                f"with {c['viewers']} viewers",
        "twitch_redemptions": lambda: f"{who} redeemed {c['reward_title']}" + (
            "" if c["kind"] == "add" else f": {c['status']}"),
        "twitch_channel_updates": lambda: f"title: {c['title']} · {c['category_name'] or '-'}",
        "twitch_hype_trains": lambda: f"hype train {c['phase']}: level {c['level']}",
        "twitch_polls": lambda: f"poll {c['phase']}: {c['title']}",
        "twitch_predictions": lambda: f"prediction {c['phase']}: {c['title']}",
        "twitch_goals": lambda: f"{c['goal_type']} goal {c['phase']}: "
                                f"{c['current_amount']}/{c['target_amount']}",
        "twitch_subscriptions": lambda: _sub_line(c, who, tier),
    }
    return lines[item.typed.table]()


def _sub_line(c: dict[str, Any], who: str, tier: str) -> str:
    if c["kind"] == "gift":
        return f"{who} gifted {c['gift_total']} {tier} subs"
    if c["kind"] == "resub":
        text = f": {c['message']}" if c["message"] else ""
        return f"{who} resubscribed for {c['cumulative_months']} months ({tier}){text}"
    return f"{who}'s subscription ended" if c["kind"] == "end" else f"{who} subscribed ({tier})"


def live_item(item: Normalised) -> dict[str, Any]:
    """The compact dict published on Hub.events once the event is committed."""
    raw = item.raw
    return {"id": raw.message_id, "message_id": raw.message_id, "type": raw.subscription_type,
            "channel_id": raw.channel_id, "occurred_at": raw.occurred_at,
            "summary": summarise(item), "backfilled": raw.backfilled, "event": raw.event}
