"""The EventSub subscription types the fake knows: version, scope and condition per type."""

from __future__ import annotations

from typing import NamedTuple


class SubscriptionType(NamedTuple):
    """One row of Twitch's subscription table; unpacks as (type, version, scope, condition)."""

    type: str
    version: str
    scope: str | None
    condition: tuple[str, ...]


_B = ("broadcaster_user_id",)
_SUBS = "channel:read:subscriptions"
_CHAT = ("broadcaster_user_id", "user_id")
_MOD = ("broadcaster_user_id", "moderator_user_id")

SUBSCRIPTION_TYPES: list[SubscriptionType] = [
    SubscriptionType(
        "channel.follow",
        "2",
        "moderator:read:followers",
        ("broadcaster_user_id", "moderator_user_id"),
    ),
    SubscriptionType("channel.subscribe", "1", _SUBS, _B),
    SubscriptionType("channel.subscription.gift", "1", _SUBS, _B),
    SubscriptionType("channel.subscription.message", "1", _SUBS, _B),
    SubscriptionType("channel.subscription.end", "1", _SUBS, _B),
    SubscriptionType("channel.cheer", "1", "bits:read", _B),
    SubscriptionType("stream.online", "1", None, _B),
    SubscriptionType("stream.offline", "1", None, _B),
    # A raid condition names exactly one side: raids received (to_) or raids sent (from_).
    SubscriptionType(
        "channel.raid", "1", None, ("to_broadcaster_user_id", "from_broadcaster_user_id")
    ),
    SubscriptionType(
        "channel.channel_points_custom_reward_redemption.add", "1", "channel:read:redemptions", _B
    ),
    SubscriptionType(
        "channel.channel_points_custom_reward_redemption.update",
        "1",
        "channel:read:redemptions",
        _B,
    ),
    SubscriptionType("channel.update", "2", None, _B),
    # Hype train v1 was withdrawn by Twitch: only v2 exists, asking for v1 is a 400.
    SubscriptionType("channel.hype_train.begin", "2", "channel:read:hype_train", _B),
    SubscriptionType("channel.hype_train.progress", "2", "channel:read:hype_train", _B),
    SubscriptionType("channel.hype_train.end", "2", "channel:read:hype_train", _B),
    SubscriptionType("channel.poll.begin", "1", "channel:read:polls", _B),
    SubscriptionType("channel.poll.progress", "1", "channel:read:polls", _B),
    SubscriptionType("channel.poll.end", "1", "channel:read:polls", _B),
    SubscriptionType("channel.prediction.begin", "1", "channel:read:predictions", _B),
    SubscriptionType("channel.prediction.progress", "1", "channel:read:predictions", _B),
    SubscriptionType("channel.prediction.lock", "1", "channel:read:predictions", _B),
    SubscriptionType("channel.prediction.end", "1", "channel:read:predictions", _B),
    SubscriptionType("channel.goal.begin", "1", "channel:read:goals", _B),
    SubscriptionType("channel.goal.progress", "1", "channel:read:goals", _B),
    SubscriptionType("channel.goal.end", "1", "channel:read:goals", _B),
    SubscriptionType("channel.bits.use", "1", "bits:read", _B),
    # v1 of automatic rewards is superseded: v2 says channel_points and emote, not cost.
    SubscriptionType(
        "channel.channel_points_automatic_reward_redemption.add",
        "2",
        "channel:read:redemptions",
        _B,
    ),
    SubscriptionType("channel.chat.message", "1", "user:read:chat", _CHAT),
    SubscriptionType("channel.chat.notification", "1", "user:read:chat", _CHAT),
    SubscriptionType("channel.ad_break.begin", "1", "channel:read:ads", ("broadcaster_id",)),
    SubscriptionType("channel.shoutout.create", "1", "moderator:read:shoutouts", _MOD),
    SubscriptionType("channel.shoutout.receive", "1", "moderator:read:shoutouts", _MOD),
    *(
        SubscriptionType(f"channel.charity_campaign.{p}", "1", "channel:read:charity", _B)
        for p in ("donate", "start", "progress", "stop")
    ),
    *(
        SubscriptionType(f"channel.shared_chat.{p}", "1", None, _B)
        for p in ("begin", "update", "end")
    ),
]

_BY_KEY = {(row.type, row.version): row for row in SUBSCRIPTION_TYPES}
_LATEST = {row.type: row for row in SUBSCRIPTION_TYPES}

# Scopes the fake's Helix endpoints check, plus every EventSub scope: a default token gets them all.
HELIX_SCOPES = (
    "channel:manage:broadcast",
    "channel:read:stream_key",
    "user:read:email",
    "user:write:chat",
)
ALL_SCOPES: tuple[str, ...] = tuple(
    sorted({row.scope for row in SUBSCRIPTION_TYPES if row.scope} | set(HELIX_SCOPES))
)


def lookup(subscription_type: str, version: str) -> SubscriptionType | None:
    """The table row for a type and version, or None when Twitch would reject the pair."""
    return _BY_KEY.get((subscription_type, str(version)))


def current(subscription_type: str) -> SubscriptionType | None:
    """The one supported row for a type, whatever its version."""
    return _LATEST.get(subscription_type)


def is_one_of(row: SubscriptionType) -> bool:
    """True when the condition needs exactly one of its keys rather than all of them."""
    return row.type == "channel.raid"


def scope_granted(scope: str, granted: list[str] | tuple[str, ...]) -> bool:
    """Twitch accepts a read scope's manage counterpart too (channel:manage:polls for
    channel.poll.*, channel:manage:redemptions for redemptions)."""
    if scope in granted:
        return True
    return ":read:" in scope and scope.replace(":read:", ":manage:", 1) in granted
