"""Realistic EventSub event payloads for every subscription type the project handles.

`sample_event(subscription_type, **overrides)` returns `(version, event)`: the version StreamerHub
subscribes to (see `catalog.SUBSCRIPTION_TYPES`) and a fresh event dict shaped like Twitch's own
examples. The broadcaster defaults to the fake's user 1000 (`streamer`); the acting viewer to
user 5001 (`cool_viewer`). Overrides replace top-level keys as given (a nested value such as
`reward` or `choices` is replaced whole). Ids are fresh UUIDs and timestamps are "now" with
nanoseconds, so pass `id=` / `message_id` yourself when a test needs them fixed.

`is_anonymous=True` on channel.subscription.gift or channel.cheer nulls the user fields (and the
gift's cumulative_total), as Twitch does for anonymous gifters and cheerers.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from . import catalog
from .frames import new_id, rfc3339_ns

BROADCASTER = ("1000", "streamer", "Streamer")
VIEWER = ("5001", "cool_viewer", "Cool_Viewer")
RAIDER = ("4242", "raider_rick", "Raider_Rick")


def _who(prefix: str, who: tuple[str, str, str]) -> dict[str, str]:
    return {f"{prefix}_id": who[0], f"{prefix}_login": who[1], f"{prefix}_name": who[2]}


def _at(offset_seconds: float = 0) -> str:
    return rfc3339_ns(time.time_ns() + int(offset_seconds * 1e9))


def _base(viewer: bool = True) -> dict[str, Any]:
    event = _who("user", VIEWER) if viewer else {}
    return {**event, **_who("broadcaster_user", BROADCASTER)}


def _follow() -> dict[str, Any]:
    return {**_base(), "followed_at": _at()}


def _subscribe() -> dict[str, Any]:
    return {**_base(), "tier": "1000", "is_gift": False}


def _gift() -> dict[str, Any]:
    return {**_base(), "total": 5, "tier": "1000", "cumulative_total": 25, "is_anonymous": False}


def _resub() -> dict[str, Any]:
    message = {"text": "Love the stream! Kappa", "emotes": [{"begin": 17, "end": 21, "id": "25"}]}
    return {
        **_base(),
        "tier": "1000",
        "message": message,
        "cumulative_months": 15,
        "streak_months": 3,
        "duration_months": 1,
    }


def _cheer() -> dict[str, Any]:
    return {"is_anonymous": False, **_base(), "message": "Cheer100 great play!", "bits": 100}


def _online() -> dict[str, Any]:
    return {
        "id": str(40_000_000_000 + time.time_ns() % 1_000_000_000),
        **_base(viewer=False),
        "type": "live",
        "started_at": _at(),
    }


def _raid() -> dict[str, Any]:
    return {
        **_who("from_broadcaster_user", RAIDER),
        **_who("to_broadcaster_user", BROADCASTER),
        "viewers": 42,
    }


def _redemption(status: str) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        reward = {
            "id": "92af127c-7326-4483-a52b-b0da0be61c01",
            "title": "Hydrate!",
            "cost": 500,
            "prompt": "Make the streamer drink some water",
        }
        return {
            "id": new_id(),
            **_base(viewer=False),
            **_who("user", VIEWER),
            "user_input": "",
            "status": status,
            "reward": reward,
            "redeemed_at": _at(),
        }

    return build


def _update() -> dict[str, Any]:
    return {
        **_base(viewer=False),
        "title": "Ranked grind until diamond",
        "language": "en",
        "category_id": "516575",
        "category_name": "VALORANT",
        "content_classification_labels": [],
    }


def _contribution(kind: str, total: int) -> dict[str, Any]:
    return {**_who("user", VIEWER), "type": kind, "total": total}


def _hype(stage: str) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": new_id(),
            **_base(viewer=False),
            "total": 1750,
            "progress": 350,
            "goal": 1800,
            "top_contributions": [_contribution("bits", 1000), _contribution("subscription", 500)],
            "shared_train_participants": None,
            "level": 2,
            "started_at": _at(-120),
            "expires_at": _at(180),
            "is_shared_train": False,
            "type": "regular",
        }
        if stage == "begin":
            event.update(
                total=500,
                progress=500,
                goal=1000,
                level=1,
                top_contributions=[_contribution("bits", 500)],
                started_at=_at(),
                expires_at=_at(300),
                all_time_high_level=4,
                all_time_high_total=6200,
            )
        elif stage == "end":
            for key in ("progress", "goal", "expires_at"):
                del event[key]
            event.update(ended_at=_at(), cooldown_ends_at=_at(3600))
        return event

    return build


_CHOICES = (("a1", "Yes"), ("a2", "No"), ("a3", "Maybe"))


def _poll(stage: str) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        choices: list[dict[str, Any]] = [{"id": cid, "title": title} for cid, title in _CHOICES]
        if stage != "begin":
            for i, choice in enumerate(choices):
                votes = (12, 7, 3)[i] * (10 if stage == "end" else 1)
                choice.update(bits_votes=0, channel_points_votes=votes // 2, votes=votes)
        event = {
            "id": new_id(),
            **_base(viewer=False),
            "title": "Which map next?",
            "choices": choices,
            "bits_voting": {"is_enabled": False, "amount_per_vote": 0},
            "channel_points_voting": {"is_enabled": True, "amount_per_vote": 100},
            "started_at": _at(-60),
        }
        if stage == "end":
            event.update(status="completed", ended_at=_at())
        else:
            event["ends_at"] = _at(60)
        return event

    return build


def _outcomes(stage: str) -> list[dict[str, Any]]:
    outcomes: list[dict[str, Any]] = [
        {"id": "o-blue", "title": "Win", "color": "blue"},
        {"id": "o-pink", "title": "Lose", "color": "pink"},
    ]
    if stage == "begin":
        return outcomes
    won = stage == "end"
    for outcome, users, points in zip(outcomes, (10, 8), (15000, 13000), strict=True):
        predictor = {
            **_who("user", VIEWER),
            "channel_points_used": points // users,
            "channel_points_won": (points * 2 if won and outcome["color"] == "blue" else None),
        }
        outcome.update(users=users, channel_points=points, top_predictors=[predictor])
    return outcomes


def _prediction(stage: str) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        event = {
            "id": new_id(),
            **_base(viewer=False),
            "title": "Will we win this round?",
            "outcomes": _outcomes(stage),
            "started_at": _at(-120),
        }
        if stage in ("begin", "progress"):
            event["locks_at"] = _at(180)
        elif stage == "lock":
            event["locked_at"] = _at()
        else:
            event.update(winning_outcome_id="o-blue", status="resolved", ended_at=_at())
        return event

    return build


def _goal(stage: str) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        event = {
            "id": new_id(),
            **_base(viewer=False),
            "type": "follower",
            "description": "Road to 1000 followers",
            "current_amount": 0 if stage == "begin" else 640,
            "target_amount": 1000,
            "started_at": _at(-3600),
        }
        if stage == "end":
            event.update(is_achieved=False, ended_at=_at())
        return event

    return build


def _chat_message() -> dict[str, Any]:
    text = "hello chat"
    return {
        **_base(viewer=False),
        **_who("chatter_user", VIEWER),
        "message_id": new_id(),
        "message": {"text": text, "fragments": [{"type": "text", "text": text}]},
        "color": "",
        "badges": [],
        "message_type": "text",
        "cheer": None,
        "reply": None,
        "channel_points_custom_reward_id": None,
    }


_BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "channel.follow": _follow,
    "channel.subscribe": _subscribe,
    "channel.subscription.gift": _gift,
    "channel.subscription.message": _resub,
    "channel.subscription.end": _subscribe,
    "channel.cheer": _cheer,
    "stream.online": _online,
    "stream.offline": lambda: _base(viewer=False),
    "channel.raid": _raid,
    "channel.channel_points_custom_reward_redemption.add": _redemption("unfulfilled"),
    "channel.channel_points_custom_reward_redemption.update": _redemption("fulfilled"),
    "channel.update": _update,
    **{f"channel.hype_train.{s}": _hype(s) for s in ("begin", "progress", "end")},
    **{f"channel.poll.{s}": _poll(s) for s in ("begin", "progress", "end")},
    **{f"channel.prediction.{s}": _prediction(s) for s in ("begin", "progress", "lock", "end")},
    **{f"channel.goal.{s}": _goal(s) for s in ("begin", "progress", "end")},
    "channel.chat.message": _chat_message,
}

_ANONYMOUS_NULLS = {
    "channel.subscription.gift": ("user_id", "user_login", "user_name", "cumulative_total"),
    "channel.cheer": ("user_id", "user_login", "user_name"),
}


def sample_event(subscription_type: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """(version, event) for a subscription type, with top-level fields overridden."""
    row = catalog.current(subscription_type)
    if row is None or subscription_type not in _BUILDERS:
        raise ValueError(f"no sample for EventSub type {subscription_type!r}")
    event = _BUILDERS[subscription_type]()
    if overrides.get("is_anonymous"):
        event.update(dict.fromkeys(_ANONYMOUS_NULLS.get(subscription_type, ())))
    event.update(overrides)
    return row.version, event
