"""--simulate: one channel's believable stream, looped, delivered like real traffic."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .delivery import deliver
from .events import sample_event
from .keys import STATE_KEY
from .state import State

CHANNEL = "1000"
GIFT_BOMB = 50
_ADJECTIVES = ("cozy", "salty", "hyper", "sleepy", "lucky", "pixel", "turbo", "chill")
_NOUNS = ("otter", "gamer", "wizard", "panda", "noodle", "falcon", "potato", "ninja")


class Show:
    """One run of the script: its pacing, its viewers, and a way to emit events."""

    def __init__(self, state: State, rng: random.Random) -> None:
        self.state, self.rng = state, rng
        self.ids = itertools.count(6000 + rng.randrange(1000) * 1000)

    def viewer(self) -> dict[str, str]:
        """A made-up chatter as user_* fields."""
        login = f"{self.rng.choice(_ADJECTIVES)}_{self.rng.choice(_NOUNS)}{self.rng.randrange(99)}"
        return {
            "user_id": str(next(self.ids)),
            "user_login": login,
            "user_name": login.title().replace("_", ""),
        }

    async def pause(self, seconds: float) -> None:
        """Wait (scaled by speed) while the viewer count drifts."""
        await asyncio.sleep(seconds / max(self.state.settings.speed, 1e-3))
        channel = self.state.channel(CHANNEL)
        if channel.live:
            channel.viewer_count = max(1, channel.viewer_count + self.rng.randint(-3, 5))

    async def emit(self, *events: tuple[str, dict[str, Any]]) -> None:
        """Deliver (type, overrides) pairs in one batch, mirrored into Helix state."""
        items = []
        for subscription_type, overrides in events:
            version, event = sample_event(subscription_type, **overrides)
            items.append(
                {
                    "subscription_type": subscription_type,
                    "subscription_version": version,
                    "event": event,
                }
            )
        await deliver(self.state, items)
        self.state.counters["simulated_events"] += len(items)


async def _go_live(show: Show) -> None:
    await show.emit(("stream.online", {}))
    show.state.channel(CHANNEL).viewer_count = show.rng.randint(8, 25)
    await show.pause(3)


async def _follows_and_subs(show: Show) -> None:
    for _ in range(show.rng.randint(3, 6)):
        await show.emit(("channel.follow", show.viewer()))
        await show.pause(2)
    for tier in ("1000", show.rng.choice(("1000", "2000", "3000"))):
        await show.emit(("channel.subscribe", {**show.viewer(), "tier": tier}))
        await show.pause(2)
    months = show.rng.randint(2, 40)
    await show.emit(
        (
            "channel.subscription.message",
            {
                **show.viewer(),
                "cumulative_months": months,
                "streak_months": show.rng.randint(1, months),
            },
        )
    )
    await show.pause(2)


async def _cheers(show: Show) -> None:
    await show.emit(
        (
            "channel.cheer",
            {
                **show.viewer(),
                "bits": show.rng.choice((100, 500, 1000)),
                "message": "Cheer100 let's go!",
            },
        )
    )
    await show.pause(2)
    await show.emit(
        ("channel.cheer", {"is_anonymous": True, "bits": 250, "message": "Cheer250 anonymous love"})
    )
    await show.pause(2)


async def _chat_and_support(show: Show) -> None:
    """Chat, a Power-up, an automatic reward, a shoutout, an ad break and a donation."""
    lines = ("hi chat", "gg", "PogChamp", "what a play", "LUL", "hype!")
    for _ in range(show.rng.randint(6, 12)):
        who = {f"chatter_{k}": v for k, v in show.viewer().items()}
        text = show.rng.choice(lines)
        message = {"text": text, "fragments": [{"type": "text", "text": text}]}
        await show.emit(("channel.chat.message", {**who, "message": message}))
        await show.pause(0.5)
    await show.emit(("channel.bits.use", show.viewer()))
    await show.emit(("channel.channel_points_automatic_reward_redemption.add", show.viewer()))
    await show.pause(2)
    await show.emit(("channel.shoutout.receive", {"viewer_count": show.rng.randint(50, 900)}))
    await show.pause(2)
    await show.emit(("channel.ad_break.begin", {"duration_seconds": show.rng.choice((30, 60, 90))}))
    await show.pause(2)
    await show.emit(("channel.charity_campaign.donate", show.viewer()))
    await show.pause(2)


async def _gift_bomb(show: Show) -> None:
    gifter = show.viewer()
    bomb = [
        (
            "channel.subscription.gift",
            {**gifter, "total": GIFT_BOMB, "tier": "1000", "cumulative_total": GIFT_BOMB + 12},
        )
    ]
    bomb += [("channel.subscribe", {**show.viewer(), "is_gift": True}) for _ in range(GIFT_BOMB)]
    await show.emit(*bomb)
    await show.pause(4)


async def _redemption_and_raid(show: Show) -> None:
    who = show.viewer()
    _, added = sample_event("channel.channel_points_custom_reward_redemption.add", **who)
    await show.emit(("channel.channel_points_custom_reward_redemption.add", added))
    await show.pause(3)
    await show.emit(
        (
            "channel.channel_points_custom_reward_redemption.update",
            {**who, "id": added["id"], "redeemed_at": added["redeemed_at"]},
        )
    )
    await show.pause(2)
    await show.emit(("channel.raid", {"viewers": show.rng.randint(20, 150)}))
    await show.pause(3)


async def _stages(show: Show, prefix: str, stages: tuple[str, ...], gap: float) -> None:
    """Begin…end of one poll, prediction or hype train, all under one id."""
    event_id = f"{prefix.rsplit('.', 1)[-1]}-{show.rng.randrange(10**9)}"
    for stage in stages:
        await show.emit((f"{prefix}.{stage}", {"id": event_id}))
        await show.pause(gap)


async def _go_offline(show: Show) -> None:
    subscribers = list(show.state.subscribers.get(CHANNEL, {}).values())
    if subscribers:
        leaver = show.rng.choice(subscribers)
        await show.emit(
            (
                "channel.subscription.end",
                {
                    "user_id": leaver.user_id,
                    "user_login": leaver.user_login,
                    "user_name": leaver.user_name,
                    "tier": leaver.tier,
                },
            )
        )
    await show.pause(2)
    await show.emit(("stream.offline", {}))
    await show.pause(10)


async def run_show(state: State, rng: random.Random) -> None:
    """One stream from online to offline."""
    show = Show(state, rng)
    await _go_live(show)
    await _follows_and_subs(show)
    await _cheers(show)
    await _chat_and_support(show)
    await _gift_bomb(show)
    await _redemption_and_raid(show)
    await _stages(show, "channel.poll", ("begin", "progress", "end"), 4)
    await _stages(show, "channel.prediction", ("begin", "progress", "lock", "end"), 4)
    await _stages(show, "channel.hype_train", ("begin", "progress", "progress", "end"), 3)
    await _go_offline(show)


async def stay_live(state: State, breather: float = 20.0) -> None:
    """One stream that stays on air (the demo's today): the show's moments in a loop with a
    breather between them, a gift bomb every fourth round only, never going offline."""
    rng = random.Random(state.settings.seed)
    show = Show(state, rng)
    await _go_live(show)
    for round_number in itertools.count():
        await _follows_and_subs(show)
        await show.pause(breather)
        await _cheers(show)
        await show.pause(breather)
        if round_number % 4 == 3:
            await _gift_bomb(show)
            await show.pause(breather)
        await _redemption_and_raid(show)
        await show.pause(breather)
        await _stages(show, "channel.poll", ("begin", "progress", "end"), 4)
        await show.pause(breather)
        state.counters["simulated_shows"] += 1


async def simulate(state: State) -> None:
    """Loop shows forever."""
    rng = random.Random(state.settings.seed)
    while True:
        await run_show(state, rng)
        state.counters["simulated_shows"] += 1


async def simulation_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the simulation for the app's lifetime when settings.simulate is on."""
    state = app[STATE_KEY]
    if not state.settings.simulate:
        yield
        return
    task = asyncio.create_task(simulate(state), name="fake_twitch_simulation")
    yield
    task.cancel()
    await asyncio.wait([task])
    failure = None if task.cancelled() else task.exception()
    if failure is not None:
        raise failure  # a broken script should fail loudly, not go quiet
