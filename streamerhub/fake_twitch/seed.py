"""Weeks of believable history for one channel, for the demo: what a dashboard shows after a month.

Four evenings a week, streams of two to four and a half hours; a viewer curve a minute that
climbs for half an hour, holds with some drift, jumps with a raid and tails off; the follows,
subs, gifts, Bits and raids of each stream as EventSub would have delivered them. The channel's
follower list (what Helix totals) is filled to match: the followers it had before, plus one per
follow in the history, so a total and its "+N" always add up.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

from .channel import Follower
from .events import sample_event
from .simulate import CHANNEL
from .state import State

UTC = dt.timezone.utc
STREAM_DAYS = (0, 2, 4, 5)  # Monday, Wednesday, Friday, Saturday
TITLES = (
    ("Chill ranked grind", "509658", "Just Chatting"),
    ("Road to Diamond", "21779", "League of Legends"),
    ("Cozy farm evening", "1669327442", "Stardew Valley"),
    ("Speedrun practice", "27471", "Minecraft"),
)
_NAMES = ("otter", "gamer", "wizard", "panda", "noodle", "falcon", "potato", "ninja", "mochi")
_MOODS = ("cozy", "salty", "hyper", "sleepy", "lucky", "pixel", "turbo", "chill", "brave")


@dataclass(frozen=True)
class PastEvent:
    """One notification as EventSub delivered it: type, version, when, and its event."""

    subscription_type: str
    version: str
    occurred_at: dt.datetime
    event: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        """The notification's payload, as the daemon's reader hands it on."""
        subscription = {
            "type": self.subscription_type,
            "version": self.version,
            "condition": {"broadcaster_user_id": CHANNEL},
        }
        return {"subscription": subscription, "event": self.event}


@dataclass
class PastStream:
    stream_id: str
    started_at: dt.datetime
    ended_at: dt.datetime
    title: str
    category_id: str
    category_name: str
    viewers: list[tuple[dt.datetime, int]] = field(default_factory=list)  # one a minute
    events: list[PastEvent] = field(default_factory=list)


@dataclass
class History:
    streams: list[PastStream]
    followers_before: int  # followers the channel had when the history begins
    totals: list[tuple[dt.datetime, int]]  # the follower total each day at 00:00 UTC

    @property
    def follows(self) -> int:
        return sum(e.subscription_type == "channel.follow" for s in self.streams for e in s.events)


class _Crowd:
    """Made-up viewers: a few regulars who come back, and new faces."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ids = itertools.count(7_000_000)
        self.regulars = [self.new() for _ in range(25)]

    def new(self) -> dict[str, str]:
        login = f"{self.rng.choice(_MOODS)}_{self.rng.choice(_NAMES)}{self.rng.randrange(100)}"
        return {
            "user_id": str(next(self.ids)),
            "user_login": login,
            "user_name": login.title().replace("_", ""),
        }

    def regular(self) -> dict[str, str]:
        return self.rng.choice(self.regulars)


def seed_history(state: State, now: dt.datetime, *, weeks: int = 4, seed: int = 20_26) -> History:
    """Make the history of the last `weeks` weeks (streams ending before `now`) and fill the
    channel's follower list to match it. Deterministic for a seed."""
    rng = random.Random(seed)
    crowd = _Crowd(rng)
    first_day = (now - dt.timedelta(weeks=weeks)).date()
    streams: list[PastStream] = []
    for offset in range(weeks * 7 + 1):
        day = first_day + dt.timedelta(days=offset)
        if day.weekday() not in STREAM_DAYS:
            continue
        begin = dt.datetime.combine(day, dt.time(18, rng.choice((0, 0, 15, 30))), UTC)
        length = dt.timedelta(minutes=rng.randint(120, 270))
        if begin + length > now - dt.timedelta(minutes=30):
            continue  # the live demo show is today's stream
        growth = offset / (weeks * 7)  # the channel grows over the month
        streams.append(_stream(rng, crowd, len(streams), begin, length, growth))
    before = 180
    _fill_followers(state, streams, before, first_day)
    return History(streams, before, _daily_totals(streams, before, first_day, now))


def _stream(
    rng: random.Random,
    crowd: _Crowd,
    number: int,
    begin: dt.datetime,
    length: dt.timedelta,
    growth: float,
) -> PastStream:
    title, category_id, category_name = TITLES[number % len(TITLES)]
    stream = PastStream(
        str(41_000_000_000 + number), begin, begin + length, title, category_id, category_name
    )
    stream.viewers = _curve(rng, begin, length, peak=rng.randint(30, 45) + int(40 * growth))
    _online(stream)
    minutes = int(length.total_seconds() // 60)
    follows = rng.randint(4, 9) + int(6 * growth)
    for _ in range(follows):
        _add(stream, "channel.follow", rng.randrange(minutes), **crowd.new())
    for _ in range(rng.randint(1, 3)):
        tier = rng.choice(("1000", "1000", "1000", "2000"))
        _add(stream, "channel.subscribe", rng.randrange(minutes), tier=tier, **crowd.new())
    for _ in range(rng.randint(1, 4)):
        months = rng.randint(2, 30)
        extra = {"cumulative_months": months, "streak_months": rng.randint(1, months)}
        _add(
            stream,
            "channel.subscription.message",
            rng.randrange(minutes),
            **extra,
            **crowd.regular(),
        )
    if rng.random() < 0.35:
        _gifts(stream, rng, crowd, rng.randrange(minutes))
    for _ in range(rng.randint(2, 7)):
        bits = rng.choice((100, 100, 200, 500, 1000))
        _add(
            stream,
            "channel.cheer",
            rng.randrange(minutes),
            bits=bits,
            message=f"Cheer{bits} gg",
            **crowd.regular(),
        )
    if rng.random() < 0.4:
        at = rng.randrange(20, max(21, minutes - 30))
        raiders = rng.randint(12, 60)
        _add(stream, "channel.raid", at, **_raider(crowd), viewers=raiders)
        stream.viewers = [
            (when, count + (raiders * 2 // 3 if i >= at else 0))
            for i, (when, count) in enumerate(stream.viewers)
        ]
    _add(stream, "stream.offline", minutes)
    stream.events.sort(key=lambda e: e.occurred_at)
    return stream


def _curve(
    rng: random.Random, begin: dt.datetime, length: dt.timedelta, peak: int
) -> list[tuple[dt.datetime, int]]:
    """Viewers a minute: a climb over ~30 minutes, a plateau that drifts, a tail in the last 20."""
    minutes = int(length.total_seconds() // 60)
    drift, samples = 0.0, []
    for minute in range(minutes):
        rise = 1 - math.exp(-minute / 12)
        fall = min(1.0, (minutes - minute) / 20)
        drift = max(-0.25, min(0.2, drift + rng.uniform(-0.02, 0.02)))
        count = peak * rise * fall * (1 + drift) + rng.uniform(-1.5, 1.5)
        samples.append((begin + dt.timedelta(minutes=minute), max(1, round(count))))
    return samples


def _online(stream: PastStream) -> None:
    version, event = sample_event("stream.online")
    event.update(id=stream.stream_id, started_at=_rfc3339(stream.started_at))
    stream.events.append(PastEvent("stream.online", version, stream.started_at, event))
    version, update = sample_event(
        "channel.update",
        title=stream.title,
        category_id=stream.category_id,
        category_name=stream.category_name,
    )
    at = stream.started_at - dt.timedelta(minutes=2)
    stream.events.append(PastEvent("channel.update", version, at, update))


def _add(stream: PastStream, kind: str, minute: int, **fields: Any) -> None:
    """An event `minute` minutes into the stream; a follow's followed_at is that time."""
    at = stream.started_at + dt.timedelta(minutes=minute, seconds=17 * (minute % 3))
    at = min(at, stream.ended_at)  # the offline comes last
    if kind == "channel.follow":
        fields["followed_at"] = _rfc3339(at)
    version, event = sample_event(kind, **fields)
    stream.events.append(PastEvent(kind, version, at, event))


def _gifts(stream: PastStream, rng: random.Random, crowd: _Crowd, minute: int) -> None:
    gifter, count = crowd.regular(), rng.choice((5, 5, 10, 20))
    _add(
        stream,
        "channel.subscription.gift",
        minute,
        total=count,
        tier="1000",
        cumulative_total=count + rng.randint(0, 40),
        **gifter,
    )
    for _ in range(count):
        _add(stream, "channel.subscribe", minute, tier="1000", is_gift=True, **crowd.new())


def _raider(crowd: _Crowd) -> dict[str, str]:
    who = crowd.new()
    return {
        "from_broadcaster_user_id": who["user_id"],
        "from_broadcaster_user_login": who["user_login"],
        "from_broadcaster_user_name": who["user_name"],
    }


def _fill_followers(
    state: State, streams: list[PastStream], before: int, first_day: dt.date
) -> None:
    """The channel's follower list: `before` old followers, then each follow of the history."""
    start = dt.datetime.combine(first_day, dt.time(), UTC)
    old = [
        Follower(
            str(3_000_000 + i),
            f"viewer{i}",
            f"Viewer{i}",
            _rfc3339(start - dt.timedelta(hours=6 * (before - i))),
        )
        for i in range(before)
    ]
    new = [
        Follower(
            e.event["user_id"], e.event["user_login"], e.event["user_name"], e.event["followed_at"]
        )
        for s in streams
        for e in s.events
        if e.subscription_type == "channel.follow"
    ]
    follows = state.followers.setdefault(CHANNEL, {})
    for follower in [*old, *new]:
        follows[follower.user_id] = follower


def _daily_totals(
    streams: list[PastStream], before: int, first_day: dt.date, now: dt.datetime
) -> list[tuple[dt.datetime, int]]:
    """What a totals poller would have seen at each midnight: the followers up to then."""
    times = sorted(
        e.occurred_at for s in streams for e in s.events if e.subscription_type == "channel.follow"
    )
    totals, day = [], dt.datetime.combine(first_day, dt.time(), UTC)
    while day < now:
        totals.append((day, before + sum(1 for t in times if t < day)))
        day += dt.timedelta(days=1)
    return totals


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
