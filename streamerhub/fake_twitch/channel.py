"""What Helix reports about a channel: stream status, followers, subscribers, categories."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

from .frames import rfc3339_ns

# A small slice of Twitch's category table, enough for search and PATCH /channels.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("509658", "Just Chatting"),
    ("32982", "Grand Theft Auto V"),
    ("21779", "League of Legends"),
    ("33214", "Fortnite"),
    ("27471", "Minecraft"),
    ("516575", "VALORANT"),
    ("26936", "Music"),
    ("509660", "Art"),
    ("1469308723", "Software and Game Development"),
    ("491931", "Escape From Tarkov"),
    ("512710", "Call of Duty: Warzone"),
    ("518203", "Sports"),
)

_TIER_POINTS = {"1000": 1, "2000": 2, "3000": 6}


@dataclass
class Channel:
    """One broadcaster's channel information and, when live, its stream."""

    user_id: str
    title: str = "Chill stream, come say hi"
    game_id: str = "509658"
    game_name: str = "Just Chatting"
    language: str = "en"
    tags: list[str] = field(default_factory=lambda: ["English"])
    content_classification_labels: list[str] = field(default_factory=list)
    live: bool = False
    viewer_count: int = 0
    started_at: str | None = None
    stream_id: str | None = None
    stream_key: str = field(default_factory=lambda: f"live_{secrets.token_hex(12)}", repr=False)

    def go_live(self, stream_id: str | None = None, started_at: str | None = None) -> None:
        """Start a stream, keeping it when already live."""
        if not self.live:
            self.live = True
            self.stream_id = stream_id or str(40_000_000_000 + secrets.randbelow(10**9))
            self.started_at = started_at or rfc3339_ns()

    def go_offline(self) -> None:
        """End the stream."""
        self.live, self.viewer_count, self.started_at, self.stream_id = False, 0, None, None

    def stream_json(self, user: dict[str, Any]) -> dict[str, Any]:
        """The Helix GET /streams entry for this channel (call only when live)."""
        return {
            "id": self.stream_id,
            "user_id": self.user_id,
            "user_login": user["login"],
            "user_name": user["display_name"],
            "game_id": self.game_id,
            "game_name": self.game_name,
            "type": "live",
            "title": self.title,
            "tags": list(self.tags),
            "viewer_count": self.viewer_count,
            "started_at": _seconds(self.started_at),
            "language": self.language,
            "thumbnail_url": f"https://static-cdn.jtvnw.net/previews-ttv/live_user_"
            f"{user['login']}-{{width}}x{{height}}.jpg",
            "tag_ids": [],
            "is_mature": False,
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything but the stream key, for /_fake/state."""
        shown = asdict(self)
        del shown["stream_key"]
        return shown


@dataclass
class Follower:
    """One follow, as GET /channels/followers lists it."""

    user_id: str
    user_login: str
    user_name: str
    followed_at: str


@dataclass
class Subscriber:
    """One paid or gifted sub, as GET /subscriptions lists it."""

    user_id: str
    user_login: str
    user_name: str
    tier: str = "1000"
    is_gift: bool = False
    gifter_id: str = ""
    gifter_login: str = ""
    gifter_name: str = ""

    def to_json(self, broadcaster: dict[str, Any]) -> dict[str, Any]:
        """The Helix entry, broadcaster fields included."""
        plan = {"1000": "Tier 1", "2000": "Tier 2", "3000": "Tier 3"}.get(self.tier, "Tier 1")
        return {
            "broadcaster_id": broadcaster["id"],
            "broadcaster_login": broadcaster["login"],
            "broadcaster_name": broadcaster["display_name"],
            "plan_name": plan,
            **asdict(self),
        }


def sub_points(subscribers: dict[str, Subscriber]) -> int:
    """Subscriber points as Twitch counts them (tier 1 = 1, tier 2 = 2, tier 3 = 6)."""
    return sum(_TIER_POINTS.get(sub.tier, 1) for sub in subscribers.values())


def generated_followers(count: int) -> list[Follower]:
    """count made-up followers, oldest first, one minute apart ending now."""
    now = time.time_ns()
    return [
        Follower(
            str(2_000_000 + i),
            f"viewer{i}",
            f"Viewer{i}",
            rfc3339_ns(now - (count - i) * 60_000_000_000),
        )
        for i in range(count)
    ]


def generated_subscribers(count: int) -> list[Subscriber]:
    """count made-up tier-1 subscribers."""
    return [Subscriber(str(3_000_000 + i), f"subber{i}", f"Subber{i}") for i in range(count)]


def _seconds(timestamp: str | None) -> str | None:
    """Helix writes started_at to the second, unlike EventSub."""
    if not timestamp or "." not in timestamp:
        return timestamp
    return timestamp.split(".")[0] + "Z"


class World(Protocol):
    """What an event changes in the fake's state (state.State, which imports this module)."""

    followers: dict[str, dict[str, Follower]]
    subscribers: dict[str, dict[str, Subscriber]]

    def channel(self, user_id: str) -> Channel: ...

    def history(self, user_id: str) -> dict[str, list[dict[str, Any]]]: ...


def _user(event: dict[str, Any], prefix: str = "user") -> tuple[str, str, str]:
    return (
        str(event.get(f"{prefix}_id") or ""),
        event.get(f"{prefix}_login") or "",
        event.get(f"{prefix}_name") or "",
    )


def _on_follow(state: World, event: dict[str, Any]) -> None:
    follows = state.followers.setdefault(str(event["broadcaster_user_id"]), {})
    user_id, login, name = _user(event)
    follows.pop(user_id, None)  # a re-follow moves to the newest end
    follows[user_id] = Follower(user_id, login, name, event.get("followed_at") or rfc3339_ns())


def _on_subscribe(state: World, event: dict[str, Any]) -> None:
    subs = state.subscribers.setdefault(str(event["broadcaster_user_id"]), {})
    user_id, login, name = _user(event)
    if user_id not in subs:
        subs[user_id] = Subscriber(
            user_id, login, name, str(event.get("tier") or "1000"), bool(event.get("is_gift"))
        )


def _on_sub_end(state: World, event: dict[str, Any]) -> None:
    state.subscribers.get(str(event["broadcaster_user_id"]), {}).pop(_user(event)[0], None)


def _on_online(state: World, event: dict[str, Any]) -> None:
    state.channel(str(event["broadcaster_user_id"])).go_live(
        event.get("id"), event.get("started_at")
    )


def _on_offline(state: World, event: dict[str, Any]) -> None:
    state.channel(str(event["broadcaster_user_id"])).go_offline()


def _on_update(state: World, event: dict[str, Any]) -> None:
    channel = state.channel(str(event["broadcaster_user_id"]))
    channel.title = event.get("title", channel.title)
    channel.language = event.get("language", channel.language)
    channel.game_id = event.get("category_id", channel.game_id)
    channel.game_name = event.get("category_name", channel.game_name)
    channel.content_classification_labels = list(event.get("content_classification_labels") or [])


def _on_raid(state: World, event: dict[str, Any]) -> None:
    channel = state.channel(str(event["to_broadcaster_user_id"]))
    if channel.live:
        channel.viewer_count += int(event.get("viewers") or 0)


def _on_cheer(state: World, event: dict[str, Any]) -> None:
    """Twitch keeps every cheer for the Bits leaderboard (bits.py), heard or not."""
    ledger = state.history(str(event["broadcaster_user_id"])).setdefault("cheers", [])
    user_id, login, name = _user(event)
    ledger.append(
        {
            "user_id": None if event.get("is_anonymous") else user_id or None,
            "user_login": login,
            "user_name": name,
            "bits": int(event["bits"]),
            "at": rfc3339_ns(),
        }
    )


_EFFECTS: dict[str, Callable[[World, dict[str, Any]], None]] = {
    "channel.follow": _on_follow,
    "channel.subscribe": _on_subscribe,
    "channel.subscription.message": _on_subscribe,
    "channel.subscription.end": _on_sub_end,
    "stream.online": _on_online,
    "stream.offline": _on_offline,
    "channel.update": _on_update,
    "channel.raid": _on_raid,
    "channel.cheer": _on_cheer,
}


def apply_event(state: World, subscription_type: str, event: dict[str, Any]) -> None:
    """Make Helix agree with an event that just happened (follow lists, subs, live state)."""
    effect = _EFFECTS.get(subscription_type)
    if effect is not None:
        try:
            effect(state, event)
        except (KeyError, TypeError, ValueError):
            pass  # a hand-written partial event still gets delivered, just not mirrored
