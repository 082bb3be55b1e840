"""Event payloads of the newer EventSub types, shaped like the examples in Twitch's reference.

Registered into `events.sample_event` (which applies overrides and the version from the catalog):
Bits use, automatic reward redemptions (v2), chat messages and notifications, ad breaks,
shoutouts, charity campaigns and shared chat sessions. Charity events name the channel
`broadcaster_id`/`_login`/`_name`, as Twitch's do; the others `broadcaster_user_*`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .frames import new_id, rfc3339_ns

BROADCASTER = ("1000", "streamer", "Streamer")
VIEWER = ("5001", "cool_viewer", "Cool_Viewer")
OTHER = ("4242", "raider_rick", "Raider_Rick")


def _who(prefix: str, who: tuple[str, str, str]) -> dict[str, str]:
    return {f"{prefix}_id": who[0], f"{prefix}_login": who[1], f"{prefix}_name": who[2]}


def _at(offset_seconds: float = 0) -> str:
    return rfc3339_ns(time.time_ns() + int(offset_seconds * 1e9))


def _channel() -> dict[str, str]:
    return _who("broadcaster_user", BROADCASTER)


def _text(text: str) -> dict[str, Any]:
    fragment = {"type": "text", "text": text, "cheermote": None, "emote": None, "mention": None}
    return {"text": text, "fragments": [fragment]}


def _bits_use() -> dict[str, Any]:
    return {
        **_who("user", VIEWER),
        **_channel(),
        "bits": 100,
        "type": "power_up",
        "power_up": {
            "type": "gigantify_an_emote",
            "emote": {"id": "emotesv2_0b8d2ed2", "name": "SeemsGood"},
            "message_effect_id": None,
        },
        "message": _text("SeemsGood"),
    }


def _automatic_reward() -> dict[str, Any]:
    return {
        **_channel(),
        **_who("user", VIEWER),
        "id": new_id(),
        "reward": {
            "type": "send_highlighted_message",
            "channel_points": 100,
            "emote": None,
        },
        "message": _text("Hello from the highlight!"),
        "redeemed_at": _at(),
    }


def _chat_message() -> dict[str, Any]:
    return {
        **_channel(),
        **_who("chatter_user", VIEWER),
        "message_id": new_id(),
        "message": _text("Hi chat"),
        "message_type": "text",
        "badges": [{"set_id": "subscriber", "id": "3", "info": "3"}],
        "cheer": None,
        "color": "#00FF7F",
        "reply": None,
        "channel_points_custom_reward_id": None,
        "source_broadcaster_user_id": None,
        "source_broadcaster_user_login": None,
        "source_broadcaster_user_name": None,
        "source_message_id": None,
        "source_badges": None,
    }


def _chat_notification() -> dict[str, Any]:
    return {
        **_channel(),
        **_who("chatter_user", VIEWER),
        "chatter_is_anonymous": False,
        "color": "#00FF7F",
        "badges": [],
        "system_message": "Cool_Viewer is continuing the Gift Sub they got from an anonymous user!",
        "message_id": new_id(),
        "message": _text(""),
        "notice_type": "gift_paid_upgrade",
        "sub": None,
        "resub": None,
        "sub_gift": None,
        "community_sub_gift": None,
        "gift_paid_upgrade": {
            "gifter_is_anonymous": True,
            "gifter_user_id": None,
            "gifter_user_name": None,
            "gifter_user_login": None,
        },
        "prime_paid_upgrade": None,
        "pay_it_forward": None,
        "raid": None,
        "unraid": None,
        "announcement": None,
        "bits_badge_tier": None,
        "charity_donation": None,
        "source_broadcaster_user_id": None,
        "source_broadcaster_user_login": None,
        "source_broadcaster_user_name": None,
        "source_message_id": None,
        "source_badges": None,
    }


def _ad_break() -> dict[str, Any]:
    return {
        "duration_seconds": 60,
        "started_at": _at(),
        "is_automatic": False,
        **_channel(),
        **_who("requester_user", BROADCASTER),
    }


def _shoutout_create() -> dict[str, Any]:
    return {
        **_channel(),
        **_who("to_broadcaster_user", OTHER),
        **_who("moderator_user", BROADCASTER),
        "viewer_count": 860,
        "started_at": _at(),
        "cooldown_ends_at": _at(120),
        "target_cooldown_ends_at": _at(3600),
    }


def _shoutout_receive() -> dict[str, Any]:
    return {
        **_channel(),
        **_who("from_broadcaster_user", OTHER),
        "viewer_count": 860,
        "started_at": _at(),
    }


def _amount(value: int) -> dict[str, Any]:
    return {"value": value, "decimal_places": 2, "currency": "USD"}


def _charity_base() -> dict[str, Any]:
    return {
        "broadcaster_id": BROADCASTER[0],
        "broadcaster_login": BROADCASTER[1],
        "broadcaster_name": BROADCASTER[2],
        "charity_name": "Example Charity",
        "charity_description": "Example description.",
        "charity_logo": "https://abc.cloudfront.net/ppgf/1000/100.png",
        "charity_website": "https://www.example.com",
    }


CAMPAIGN_ID = "123-abc-456-def"


def _charity(stage: str) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if stage == "donate":
            return {
                "id": new_id(),
                "campaign_id": CAMPAIGN_ID,
                **_charity_base(),
                **_who("user", VIEWER),
                "amount": _amount(500),
            }
        event = {
            "id": CAMPAIGN_ID,
            **_charity_base(),
            "current_amount": _amount(0 if stage == "start" else 260000),
            "target_amount": _amount(1500000),
        }
        if stage == "start":
            event["started_at"] = _at()
        elif stage == "stop":
            event["stopped_at"] = _at()
        return event

    return build


def _shared_chat(stage: str) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        event: dict[str, Any] = {
            "session_id": "2b64a92a-dbb8-424e-b1c3-304423ba1b6f",
            **_channel(),
            **_who("host_broadcaster_user", BROADCASTER),
        }
        if stage != "end":
            event["participants"] = [
                _who("broadcaster_user", BROADCASTER),
                _who("broadcaster_user", OTHER),
            ]
        return event

    return build


BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "channel.bits.use": _bits_use,
    "channel.channel_points_automatic_reward_redemption.add": _automatic_reward,
    "channel.chat.message": _chat_message,
    "channel.chat.notification": _chat_notification,
    "channel.ad_break.begin": _ad_break,
    "channel.shoutout.create": _shoutout_create,
    "channel.shoutout.receive": _shoutout_receive,
    **{
        f"channel.charity_campaign.{s}": _charity(s)
        for s in ("donate", "start", "progress", "stop")
    },
    **{f"channel.shared_chat.{s}": _shared_chat(s) for s in ("begin", "update", "end")},
}
