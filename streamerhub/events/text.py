"""How a stored Twitch event reads on the dashboard: a kind, a who and one line of text."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Mapping

# Not a Twitch type: one user's Bits of one Pacific-time day that a gap hid, rebuilt from the
# Bits leaderboard after it (bot/backfill.py). A total, never a cheer: it is listed with the
# cheers, worded as a total, and not counted as a cheer.
BITS_AGGREGATE = "streamerhub.bits.aggregate"

# The filter groups offered on the feed and the events page: label → subscription types.
GROUPS: dict[str, tuple[str, ...]] = {
    "follows": ("channel.follow",),
    "subs": (
        "channel.subscribe",
        "channel.subscription.message",
        "channel.subscription.gift",
        "channel.subscription.end",
    ),
    "cheers": ("channel.cheer", BITS_AGGREGATE),
    "raids": ("channel.raid",),
    "redemptions": (
        "channel.channel_points_custom_reward_redemption.add",
        "channel.channel_points_custom_reward_redemption.update",
    ),
    "stream": ("stream.online", "stream.offline", "channel.update"),
    "hype": ("channel.hype_train.begin", "channel.hype_train.progress", "channel.hype_train.end"),
    "polls": (
        "channel.poll.begin",
        "channel.poll.progress",
        "channel.poll.end",
        "channel.prediction.begin",
        "channel.prediction.progress",
        "channel.prediction.lock",
        "channel.prediction.end",
    ),
    "goals": ("channel.goal.begin", "channel.goal.progress", "channel.goal.end"),
}
TYPES: tuple[str, ...] = tuple(t for types in GROUPS.values() for t in types)
_GROUP_OF = {t: group for group, types in GROUPS.items() for t in types}
TIERS = {"1000": "Tier 1", "2000": "Tier 2", "3000": "Tier 3"}


def group_of(subscription_type: str) -> str:
    return _GROUP_OF.get(subscription_type, "other")


def types_for(groups: list[str]) -> list[str]:
    """Subscription types named by groups (or by exact type); unknown names are ignored."""
    found: list[str] = []
    for name in groups:
        found += GROUPS.get(name, (name,) if name in _GROUP_OF else ())
    return found


def who(event: Mapping[str, Any]) -> str:
    """The person an event is about (the raider, the gifter…), or '' for channel events."""
    if event.get("is_anonymous"):
        return "Anonymous"
    for key in (
        "user_name",
        "user_login",
        "from_broadcaster_user_name",
        "from_broadcaster_user_login",
    ):
        if event.get(key):
            return str(event[key])
    return ""


def _tier(event: Mapping[str, Any]) -> str:
    return TIERS.get(str(event.get("tier")), "")


def _sub(e: Mapping[str, Any]) -> str:
    return (
        f"{who(e)} got a gifted sub ({_tier(e)})"
        if e.get("is_gift")
        else f"{who(e)} subscribed ({_tier(e)})"
    )


def _resub(e: Mapping[str, Any]) -> str:
    months = e.get("cumulative_months")
    return (
        f"{who(e)} resubscribed for {months} months ({_tier(e)})"
        if months
        else f"{who(e)} resubscribed ({_tier(e)})"
    )


def _gift(e: Mapping[str, Any]) -> str:
    return f"{who(e)} gifted {e.get('total', 1)} subs ({_tier(e)})"


def _phase(kind: str, field: str = "title") -> Callable[[Mapping[str, Any], str], str]:
    def text(e: Mapping[str, Any], stage: str) -> str:
        title = e.get(field) or e.get("description") or ""
        return f"{kind} {stage}" + (f": {title}" if title else "")

    return text


_TEXT: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "channel.follow": lambda e: f"{who(e)} followed",
    "channel.subscribe": _sub,
    "channel.subscription.message": _resub,
    "channel.subscription.gift": _gift,
    "channel.subscription.end": lambda e: f"{who(e)}'s sub ended ({_tier(e)})",
    "channel.cheer": lambda e: f"{who(e)} cheered {e.get('bits', 0)} bits",
    BITS_AGGREGATE: lambda e: (
        f"{who(e)}: {e.get('bits', 0)} bits missed in a gap (from Twitch's day total of "
        f"{e.get('leaderboard_score', '?')}; single cheers not recoverable)"
    ),
    "channel.raid": lambda e: f"{who(e)} raided with {e.get('viewers', 0)} viewers",
    "stream.online": lambda e: "Stream went online",
    "stream.offline": lambda e: "Stream went offline",
    "channel.update": lambda e: f"Title: {e.get('title', '')} · {e.get('category_name', '')}",
    "channel.channel_points_custom_reward_redemption.add": lambda e: (
        f"{who(e)} redeemed {(e.get('reward') or {}).get('title', 'a reward')}"
    ),
    "channel.channel_points_custom_reward_redemption.update": lambda e: (
        f"Redemption by {who(e)} is {e.get('status', 'updated')}"
    ),
}


def describe(subscription_type: str, event: Mapping[str, Any]) -> str:
    """One line of text for a stored event."""
    if subscription_type in _TEXT:
        return _TEXT[subscription_type](event)
    family, _, stage = subscription_type.rpartition(".")
    kinds = {
        "channel.hype_train": ("Hype train", "level"),
        "channel.poll": ("Poll", "title"),
        "channel.prediction": ("Prediction", "title"),
        "channel.goal": ("Goal", "description"),
    }
    if family in kinds:
        label, field = kinds[family]
        if field == "level":
            return f"{label} {stage}" + (f" (level {event['level']})" if event.get("level") else "")
        return _phase(label, field)(event, stage)
    return subscription_type


def event_json(row: Mapping[str, Any], tz: dt.tzinfo) -> dict[str, Any]:
    """The dashboard's view of a twitch_events row: no tokens live there, only public fields."""
    payload = row["payload"] or {}
    event = payload.get("event") or {}
    occurred: dt.datetime = row["occurred_at"]
    return {
        "id": row["message_id"],
        "type": row["subscription_type"],
        "group": group_of(row["subscription_type"]),
        "channel_id": row["channel_id"],
        "occurred_at": occurred.isoformat(),
        "local_time": occurred.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
        "who": who(event),
        "text": describe(row["subscription_type"], event),
        "backfilled": bool(row.get("backfilled", False)),
    }
