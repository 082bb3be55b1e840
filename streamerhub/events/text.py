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
    "cheers": ("channel.cheer", "channel.bits.use", BITS_AGGREGATE),
    "raids": ("channel.raid",),
    "redemptions": (
        "channel.channel_points_custom_reward_redemption.add",
        "channel.channel_points_custom_reward_redemption.update",
        "channel.channel_points_automatic_reward_redemption.add",
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
    "chat": ("channel.chat.message", "channel.chat.notification"),
    "ads": ("channel.ad_break.begin",),
    "shoutouts": ("channel.shoutout.create", "channel.shoutout.receive"),
    "charity": tuple(
        f"channel.charity_campaign.{p}" for p in ("donate", "start", "progress", "stop")
    ),
    "shared_chat": tuple(f"channel.shared_chat.{p}" for p in ("begin", "update", "end")),
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
    if event.get("is_anonymous") or event.get("chatter_is_anonymous"):
        return "Anonymous"
    for key in (
        "user_name",
        "user_login",
        "chatter_user_name",
        "chatter_user_login",
        "from_broadcaster_user_name",
        "from_broadcaster_user_login",
        "to_broadcaster_user_name",  # a shoutout sent
        "host_broadcaster_user_name",  # a shared chat session
        "requester_user_name",  # an ad break
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


_AUTOMATIC_REWARDS = {
    "single_message_bypass_sub_mode": "a message in sub-only mode",
    "send_highlighted_message": "a highlighted message",
    "random_sub_emote_unlock": "a random sub emote",
    "chosen_sub_emote_unlock": "a sub emote",
    "chosen_modified_sub_emote_unlock": "a modified sub emote",
    "message_effect": "a message effect",
    "gigantify_an_emote": "a gigantified emote",
    "celebration": "a celebration",
}
CHAT_PREVIEW = 200  # characters of a chat message shown in one line


def _money(amount: Any) -> str:
    """A Twitch amount {value, decimal_places, currency} as '5.00 USD'."""
    if not isinstance(amount, Mapping) or not isinstance(amount.get("value"), int):
        return ""
    raw = amount.get("decimal_places")
    places = min(max(raw, 0), 8) if isinstance(raw, int) else 0
    return f"{amount['value'] / 10**places:.{places}f} {amount.get('currency') or ''}".strip()


def _bits_use(e: Mapping[str, Any]) -> str:
    bits, kind = e.get("bits", 0), e.get("type")
    if kind == "power_up":
        power_up = (e.get("power_up") or {}).get("type") or ""
        what = _AUTOMATIC_REWARDS.get(power_up, "a Power-up")
        return f"{who(e)} used {bits} Bits on {what}"
    if kind == "combo":
        return f"{who(e)} sent a {bits}-Bit combo"
    return f"{who(e)} cheered {bits} Bits"


def _automatic(e: Mapping[str, Any]) -> str:
    reward = e.get("reward") or {}
    what = _AUTOMATIC_REWARDS.get(str(reward.get("type")), "an automatic reward")
    points = reward.get("channel_points")
    return f"{who(e)} redeemed {what}" + (f" ({points} points)" if points else "")


def _chat(e: Mapping[str, Any]) -> str:
    text = (e.get("message") or {}).get("text")
    if not text:  # emptied by the chat text retention
        return f"{who(e)} sent a chat message"
    return f"{who(e)}: {text[:CHAT_PREVIEW]}" + ("…" if len(text) > CHAT_PREVIEW else "")


def _notice(e: Mapping[str, Any]) -> str:
    if e.get("system_message"):
        return str(e["system_message"])[:CHAT_PREVIEW]
    return f"{who(e)}: {str(e.get('notice_type') or 'notice').replace('_', ' ')}"


def _ad_break(e: Mapping[str, Any]) -> str:
    how = "scheduled" if e.get("is_automatic") else f"started by {who(e) or 'the channel'}"
    return f"Ad break of {e.get('duration_seconds', 0)} s ({how})"


def _charity(stage: str) -> Callable[[Mapping[str, Any]], str]:
    def text(e: Mapping[str, Any]) -> str:
        charity = e.get("charity_name") or "charity"
        if stage == "donate":
            return f"{who(e) or 'Someone'} donated {_money(e.get('amount'))} to {charity}"
        raised, goal = _money(e.get("current_amount")), _money(e.get("target_amount"))
        if stage == "start":
            return f"Charity campaign for {charity} started" + (f" (goal {goal})" if goal else "")
        if stage == "stop":
            return f"Charity campaign for {charity} ended: {raised} raised"
        return f"Charity campaign for {charity}: {raised} of {goal} raised"

    return text


def _shared_chat(stage: str) -> Callable[[Mapping[str, Any]], str]:
    def text(e: Mapping[str, Any]) -> str:
        if stage == "end":
            return "Shared chat ended"
        names = [
            str(p.get("broadcaster_user_name") or p.get("broadcaster_user_login") or "")
            for p in e.get("participants") or ()
            if isinstance(p, Mapping)
        ]
        verb = "began" if stage == "begin" else "now"
        return f"Shared chat {verb} with {', '.join(n for n in names if n) or 'other channels'}"

    return text


_TEXT.update(
    {
        "channel.bits.use": _bits_use,
        "channel.channel_points_automatic_reward_redemption.add": _automatic,
        "channel.chat.message": _chat,
        "channel.chat.notification": _notice,
        "channel.ad_break.begin": _ad_break,
        "channel.shoutout.create": lambda e: (
            f"Shoutout to {who(e)} ({e.get('viewer_count', 0)} viewers watching)"
        ),
        "channel.shoutout.receive": lambda e: (
            f"{who(e)} shouted you out to {e.get('viewer_count', 0)} viewers"
        ),
        **{
            f"channel.charity_campaign.{p}": _charity(p)
            for p in ("donate", "start", "progress", "stop")
        },
        **{f"channel.shared_chat.{p}": _shared_chat(p) for p in ("begin", "update", "end")},
    }
)


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


# What each type is called on the dashboard; the raw name stays in exports and on hover.
LABELS: dict[str, str] = {
    "channel.follow": "Follow",
    "channel.subscribe": "Sub",
    "channel.subscription.message": "Resub",
    "channel.subscription.gift": "Gift bomb",
    "channel.subscription.end": "Sub ended",
    "channel.cheer": "Cheer",
    "channel.raid": "Raid",
    "channel.channel_points_custom_reward_redemption.add": "Redemption",
    "channel.channel_points_custom_reward_redemption.update": "Redemption update",
    "stream.online": "Went live",
    "stream.offline": "Went offline",
    "channel.update": "Title/category",
    "channel.hype_train.begin": "Hype train start",
    "channel.hype_train.progress": "Hype train",
    "channel.hype_train.end": "Hype train end",
    "channel.poll.begin": "Poll start",
    "channel.poll.progress": "Poll",
    "channel.poll.end": "Poll end",
    "channel.prediction.begin": "Prediction start",
    "channel.prediction.progress": "Prediction",
    "channel.prediction.lock": "Prediction locked",
    "channel.prediction.end": "Prediction end",
    "channel.goal.begin": "Goal start",
    "channel.goal.progress": "Goal",
    "channel.goal.end": "Goal end",
    "channel.bits.use": "Bits",
    "channel.channel_points_automatic_reward_redemption.add": "Auto reward",
    "channel.chat.message": "Chat",
    "channel.chat.notification": "Chat notice",
    "channel.ad_break.begin": "Ad break",
    "channel.shoutout.create": "Shoutout given",
    "channel.shoutout.receive": "Shoutout received",
    "channel.charity_campaign.donate": "Charity donation",
    "channel.charity_campaign.start": "Charity start",
    "channel.charity_campaign.progress": "Charity",
    "channel.charity_campaign.stop": "Charity end",
    "channel.shared_chat.begin": "Shared chat start",
    "channel.shared_chat.update": "Shared chat",
    "channel.shared_chat.end": "Shared chat end",
    "streamerhub.bits.aggregate": "Bits total",
}


def label_of(subscription_type: str) -> str:
    """The friendly name of a type ("Gift bomb"); an unknown type reads as its last words."""
    if subscription_type in LABELS:
        return LABELS[subscription_type]
    tail = subscription_type.rpartition(".")[2] or subscription_type
    return tail.replace("_", " ").capitalize()
