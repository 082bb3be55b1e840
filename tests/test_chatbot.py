"""The chat bot against a real database, with a recording sender and a hand-driven clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from test_eventsub import wait_until

from streamerhub.chatbot.ports import Answer, ChatMessage, SupportEvent
from streamerhub.chatbot.rules import parse_command, parse_config, parse_event, parse_timer
from streamerhub.chatbot.service import ChatBot
from streamerhub.chatbot.store import ChatbotStore
from streamerhub.db import Database
from streamerhub.errors import Conflict, InvalidInput

CHANNEL = "1000"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sender:
    """Records what the bot posts; `refuse` makes the next sends fail like Twitch would."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.refuse: list[str] = []
        self.role = "broadcaster"

    async def send(self, channel_id: str, text: str) -> Answer:
        if self.refuse:
            return Answer(False, self.refuse.pop(0))
        self.sent.append(text)
        return Answer(True)

    def sender_id(self, channel_id: str) -> str | None:
        return channel_id

    def sender_role(self, channel_id: str) -> str:
        return self.role


class Facts:
    def __init__(self) -> None:
        self.live: dt.datetime | None = dt.datetime.now(dt.timezone.utc) - dt.timedelta(
            hours=2, minutes=5
        )
        self.slow: dict[str, float] = {}  # user id -> seconds its followage lookup takes

    async def channels(self) -> list[str]:
        return [CHANNEL]

    async def title_and_game(self, channel_id: str) -> tuple[str, str]:
        return "Speedrun night", "Celeste"

    async def live_since(self, channel_id: str) -> dt.datetime | None:
        return self.live

    async def followed_at(self, channel_id: str, user_id: str) -> dt.datetime | None:
        await asyncio.sleep(self.slow.get(user_id, 0))
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400, hours=1)


class Rig:
    def __init__(self, bot: ChatBot, sender: Sender, facts: Facts, clock: Clock) -> None:
        self.bot, self.sender, self.facts, self.clock = bot, sender, facts, clock

    def say(self, text: str, user: str = "5001", badges: tuple[str, ...] = ()) -> None:
        assert self.bot.offer(
            ChatMessage(CHANNEL, user, f"u{user}", f"User{user}", text, frozenset(badges))
        )

    def event(self, kind: str, **event: Any) -> None:
        event.setdefault("to_broadcaster_user_id", CHANNEL)
        assert self.bot.offer(SupportEvent(CHANNEL, kind, event))

    async def settle(self) -> None:
        """Until the inbox, the replies and the outbox are all done and the log is written."""
        bot = self.bot
        for _ in range(200):
            busy = len(bot.tasks) > 4 or not bot.inbox.empty() or not bot.outbox.empty()
            if not busy and bot.logq.empty():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)

    async def log(self) -> list[tuple[str, str, str | None]]:
        await self.settle()
        entries = await self.bot.store.log(500)
        return [(e.text, e.outcome, e.reason) for e in reversed(entries)]


@pytest.fixture
async def rig(db: Database) -> AsyncIterator[Rig]:
    clock, sender, facts = Clock(), Sender(), Facts()
    bot = ChatBot(ChatbotStore(db), sender, facts, minute_s=1.0, timer_tick_s=3600, clock=clock)
    await bot.store.set_enabled(CHANNEL, True)
    await bot.start()
    try:
        yield Rig(bot, sender, facts, clock)
    finally:
        await bot.stop()


async def add(rig: Rig, **body: Any) -> None:
    await rig.bot.store.save_command(parse_command(body))
    await rig.bot.reload()


async def test_a_command_answers_with_its_variables_and_counts_its_uses(rig: Rig) -> None:
    await add(
        rig,
        name="!Hello",
        response="Hi {user} ({args}), use #{count}, live {uptime}, {title} / {game}, {followage}",
        aliases=["hi"],
        user_cooldown_s=0,
        cooldown_s=0,
    )
    rig.facts.slow["5001"] = 0.2  # the first one's lookup is slower: it is sent second
    count_use, calls = rig.bot.store.count_use, []

    async def first_count_late(name: str) -> int:  # as a busy pool may hand out connections
        calls.append(name)
        if len(calls) == 1:
            await asyncio.sleep(0.1)
        return await count_use(name)

    rig.bot.store.count_use = first_count_late  # type: ignore[method-assign]
    rig.say("!hello there")
    rig.say("!HI", user="5002")
    rig.say("hello without the bang")
    await rig.settle()
    # Uses are counted in the order they were typed, whichever reply is ready first (under load
    # the second one's count was once #1).
    assert rig.sender.sent == [
        "Hi User5002 (), use #2, live 2h 5m, Speedrun night / Celeste, 1 year, 1 month, 5 days",
        "Hi User5001 (there), use #1, live 2h 5m, Speedrun night / Celeste, 1 year, 1 month, 5 days",
    ]
    assert (await rig.bot.store.commands())[0].uses == 2


async def test_built_ins_read_the_channel(rig: Rig) -> None:
    await add(rig, name="lurk", response="{user} lurks")
    rig.say("!followage")
    rig.say("!commands", user="5002")
    rig.say("!uptime", user="5003")
    await rig.settle()
    # Each reply is answered on its own (a slow Helix holds up no other): any order.
    assert sorted(rig.sender.sent) == [
        "Commands: !commands !followage !game !lurk !socials !title !uptime",
        "Live for 2h 5m.",
        "User5001 has followed for 1 year, 1 month, 5 days.",
    ]


async def test_permissions_and_cooldowns_skip_with_the_reason_in_the_log(rig: Rig) -> None:
    await add(rig, name="so", response="Go follow {args}!", permission="moderator", cooldown_s=0)
    await add(rig, name="dice", response="{user} rolls", cooldown_s=10, user_cooldown_s=60)
    steps: list[tuple[str, str, tuple[str, ...], float]] = [
        ("!so friend", "5001", (), 0),  # a viewer: refused
        ("!so friend", "6000", ("moderator",), 0),
        ("!dice", "5001", (), 0),
        ("!dice", "5002", (), 0),  # the command's own cooldown
        ("!dice", "5001", (), 11),  # this user's cooldown still runs
        ("!dice", "5002", (), 0),
        ("!dice", "6000", ("moderator",), 0),  # moderators skip cooldowns
    ]
    for text, user, badges, later in steps:
        rig.clock.now += later
        rig.say(text, user=user, badges=badges)
        await rig.settle()
    log = await rig.log()
    assert rig.sender.sent == [
        "Go follow friend!",
        "User5001 rolls",
        "User5002 rolls",
        "User6000 rolls",
    ]
    skipped = [(text, reason) for text, outcome, reason in log if outcome == "skipped"]
    assert skipped == [
        ("!so friend", "permission: !so is for moderators and up"),
        ("!dice", "cooldown: !dice again in 10 s"),
        ("!dice", "user cooldown: !dice again in 49 s"),
    ]


async def test_a_gift_bomb_is_thanked_once_naming_the_gifter_and_count(rig: Rig) -> None:
    rig.event("channel.subscription.gift", user_name="Santa", total=50, is_anonymous=False)
    for i in range(50):
        rig.event("channel.subscribe", user_name=f"lucky{i}", is_gift=True)
    rig.event("channel.subscribe", user_name="Payer", is_gift=False)
    await rig.settle()
    assert rig.sender.sent == [
        "Santa gifted 50 subs, thank you!",
        "Payer just subscribed, welcome!",
    ]


async def test_raids_below_the_minimum_or_over_the_rate_are_skipped(rig: Rig) -> None:
    await rig.bot.store.save_event_message(
        parse_event(
            {
                "kind": "raid",
                "template": "Welcome {user} and {viewers} raiders!",
                "minimum": 10,
                "per_minute": 2,
            }
        )
    )
    await rig.bot.reload()
    rig.event("channel.raid", from_broadcaster_user_name="Tiny", viewers=3)
    for i in range(5):
        rig.event("channel.raid", from_broadcaster_user_name=f"Big{i}", viewers=5000)
    rig.event(
        "channel.raid", to_broadcaster_user_id="99", from_broadcaster_user_name="Us", viewers=50
    )
    log = await rig.log()
    assert rig.sender.sent == ["Welcome Big0 and 5000 raiders!", "Welcome Big1 and 5000 raiders!"]
    reasons = [reason for _, outcome, reason in log if outcome == "skipped"]
    assert (
        reasons
        == ["minimum: raid of 3 is below 10"] + ["rate limit: at most 2 raid messages a minute"] * 3
    )
    rig.clock.now += 61  # a minute later the window has room again
    rig.event("channel.raid", from_broadcaster_user_name="Late", viewers=20)
    await rig.settle()
    assert rig.sender.sent[-1] == "Welcome Late and 20 raiders!"


async def test_timers_post_only_while_live_and_after_enough_chat(rig: Rig) -> None:
    await rig.bot.store.save_timer(
        parse_timer(
            {
                "name": "discord",
                "message": "Join the Discord!",
                "interval_min": 5,
                "min_chat_messages": 3,
            }
        )
    )
    await rig.bot.reload()
    await rig.bot.run_timers()  # starts the clock of the timer
    rig.clock.now += 5
    await rig.bot.run_timers()  # due, but nobody talked
    for i in range(3):
        rig.say(f"hello {i}")
    await rig.settle()
    rig.clock.now += 5
    await rig.bot.run_timers()  # due, and 3 messages since
    rig.facts.live = None
    for i in range(3):
        rig.say(f"again {i}")
    rig.clock.now += 5
    await rig.bot.run_timers()  # offline: nothing
    log = await rig.log()
    assert rig.sender.sent == ["Join the Discord!"]
    assert (
        "Join the Discord!",
        "skipped",
        "quiet chat: 0 messages since the last one, needs 3",
    ) in log


async def test_a_refused_send_is_logged_and_our_own_echo_is_not_a_trigger(rig: Rig) -> None:
    await add(rig, name="loop", response="!loop again", cooldown_s=0, user_cooldown_s=0)
    rig.sender.refuse.append("Twitch dropped it: msg_banned: You are banned")
    rig.say("!loop")
    await rig.settle()
    rig.say("!loop", user="5002")
    await rig.settle()
    rig.say("!loop again", user=CHANNEL)  # Twitch echoing what we sent: not a command
    log = await rig.log()
    assert rig.sender.sent == ["!loop again"]
    assert log == [
        ("!loop again", "refused", "Twitch dropped it: msg_banned: You are banned"),
        ("!loop again", "sent", None),
    ]


async def test_long_and_duplicate_messages_follow_twitch_rules(rig: Rig) -> None:
    await add(rig, name="long", response="x" * 490 + " {args}", cooldown_s=0, user_cooldown_s=0)
    rig.say("!long " + "y" * 40)
    await rig.settle()
    rig.say("!long " + "y" * 40, user="5002")
    log = await rig.log()
    assert len(rig.sender.sent) == 1 and len(rig.sender.sent[0]) == 500
    assert rig.sender.sent[0].endswith("…")
    assert log[-1][1:] == ("skipped", "duplicate: Twitch drops the same message again within 30 s")


async def test_a_full_inbox_drops_and_counts_without_waiting(db: Database) -> None:
    bot = ChatBot(ChatbotStore(db), Sender(), Facts(), inbox_size=10)
    # not started: nothing consumes, so the 11th offer finds the inbox full
    taken = [bot.offer(ChatMessage(CHANNEL, "1", "a", "A", "hi")) for _ in range(15)]
    assert taken == [True] * 10 + [False] * 5
    assert bot.status()["dropped"] == 5 and bot.status()["received"] == 10


async def test_export_then_import_round_trips_and_a_bad_import_saves_nothing(rig: Rig) -> None:
    store = rig.bot.store
    body = {
        "commands": [
            {"name": "discord", "response": "https://discord.gg/example", "aliases": ["dc"]},
            {"name": "hug", "response": "{user} hugs {args}", "permission": "subscriber"},
        ],
        "timers": [{"name": "socials", "message": "Follow me!", "interval_min": 20}],
        "events": [{"kind": "follow", "template": "Welcome {user}!", "per_minute": 3}],
    }
    assert await store.import_config(parse_config(body)) == {
        "commands": 2,
        "timers": 1,
        "events": 1,
    }
    exported = (await store.export()).to_json()
    assert [c["name"] for c in exported["commands"]] == ["discord", "hug"]
    assert exported["commands"][0]["aliases"] == ["dc"]
    assert {
        "kind": "follow",
        "template": "Welcome {user}!",
        "enabled": True,
        "minimum": 0,
        "per_minute": 3,
    } in exported["events"]
    with pytest.raises(InvalidInput, match=r"import commands\[1\]: a command name"):
        parse_config(
            {
                "commands": [
                    {"name": "ok", "response": "fine"},
                    {"name": "bad name!", "response": "x"},
                ]
            }
        )
    with pytest.raises(InvalidInput, match="Twitch allows 500"):
        parse_command({"name": "big", "response": "x" * 501})
    with pytest.raises(Conflict, match="!discord already uses"):
        await store.save_command(parse_command({"name": "dc", "response": "clash"}))
    assert len(await store.commands()) == 2


async def test_the_chat_rate_limit_of_the_senders_status_skips_what_would_wait_too_long(
    rig: Rig,
) -> None:
    rig.sender.role = "viewer"  # Twitch: 20 messages per 30 s for an account that is not a mod
    await rig.bot.store.save_event_message(
        parse_event({"kind": "follow", "template": "Hi {user}", "per_minute": 100})
    )
    await rig.bot.reload()
    for i in range(21):
        rig.event("channel.follow", user_name=f"fan{i}")
    log = await rig.log()
    assert len(rig.sender.sent) == 20
    assert log[-1] == ("Hi fan20", "skipped", "rate limit: Twitch allows 20 messages per 30 s")


async def test_the_readme_import_example_imports(rig: Rig) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("**Import format.**") :]
    example = re.search(r"```json\n(.*?)```", section, re.S)
    assert example is not None
    config = parse_config(json.loads(example.group(1)))
    assert await rig.bot.store.import_config(config) == {"commands": 1, "timers": 1, "events": 1}
    await rig.bot.reload()
    rig.say("!dc", badges=("moderator",))
    await rig.settle()
    assert rig.sender.sent == ["User5001, join us: https://discord.gg/example"]
