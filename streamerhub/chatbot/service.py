"""The chat bot at run time: an inbox the bot offers chat and support events to, an outbox
that speaks within Twitch's limits, the timers, and the log of every message sent or skipped.

Capture never waits on the chat bot: `offer` is put_nowait on a bounded inbox, and what does not
fit is counted and dropped (logged as chatbot_inbox_full). Replies leave through one outbox
honouring Twitch's chat rate limit for the sender's status in the channel (limits.py), its
500-character limit and its duplicate rule; what cannot go is logged with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Coroutine, Mapping, cast

from streamerhub.chatbot.limits import (
    CHAT_LIMIT,
    CHAT_WINDOW_S,
    DUPLICATE_WINDOW_S,
    Clock,
    Cooldowns,
    Window,
)
from streamerhub.chatbot.ports import (
    CHAT_KIND,
    Answer,
    BotAccount,
    ChannelFacts,
    ChatLine,
    ChatSender,
    Incoming,
    SendResult,
    Speakers,
    Support,
)
from streamerhub.chatbot.rules import BUILT_INS, PERMISSIONS, Command, EventMessage, Timer
from streamerhub.chatbot.store import ChatbotStore
from streamerhub.chatbot.variables import clip, facts_for, fill
from streamerhub.log import get_logger

log = get_logger(__name__)

INBOX_SIZE = 10_000
OUTBOX_SIZE = 200
LOG_QUEUE = 10_000
MAX_SEND_WAIT_S = 15.0  # a message that would wait longer for the rate limit is skipped
TIMER_TICK_S = 30.0
# Badge set ids that rank a chatter; founders are subscribers.
RANK = {"subscriber": 1, "founder": 1, "vip": 2, "moderator": 3, "broadcaster": 4}
EVENT_KINDS = {
    "channel.follow": "follow",
    "channel.subscribe": "sub",
    "channel.subscription.message": "resub",
    "channel.subscription.gift": "gift",
    "channel.cheer": "cheer",
    "channel.raid": "raid",
    "channel.hype_train.begin": "hype_train",
    "channel.channel_points_custom_reward_redemption.add": "redemption",
}
BUILT_IN_REPLIES = {
    "uptime": "Live for {uptime}.",
    "followage": "{user} has followed for {followage}.",
    "title": "Title: {title}",
    "game": "Playing {game}.",
    "socials": "No socials yet: add a !socials command on StreamerHub's Chat bot page.",
}


@dataclass(frozen=True)
class Outgoing:
    channel_id: str
    source: str  # "!name", "event:follow", "timer:name"
    text: str


def rank(badges: frozenset[str]) -> int:
    return max((RANK.get(b, 0) for b in badges), default=0)


class ChatBot:
    """One chat bot for every channel of the daemon; start() / stop() from app.py."""

    def __init__(
        self,
        store: ChatbotStore,
        sender: ChatSender,
        facts: ChannelFacts,
        *,
        inbox_size: int = INBOX_SIZE,
        minute_s: float = 60.0,
        timer_tick_s: float = TIMER_TICK_S,
        clock: Clock = time.monotonic,
        account: BotAccount | None = None,
        speakers: Speakers | None = None,
    ) -> None:
        self.store, self.sender, self.facts = store, sender, facts
        self.account, self.speakers = account, speakers  # the page's; None in unit tests
        self.minute_s, self.timer_tick_s, self.clock = minute_s, timer_tick_s, clock
        self.inbox: asyncio.Queue[Incoming] = asyncio.Queue(inbox_size)
        self.outbox: asyncio.Queue[Outgoing] = asyncio.Queue(OUTBOX_SIZE)
        self.logq: asyncio.Queue[tuple[str, str, str, str, str | None]] = asyncio.Queue(LOG_QUEUE)
        self.counters: Counter[str] = Counter()
        self.commands: dict[str, Command] = {}  # by name and by alias
        self.events: dict[str, EventMessage] = {}
        self.timers: list[Timer] = []
        self.enabled: set[str] = set()  # channels where the bot may speak (off by default)
        self.cooldowns = Cooldowns(clock)
        self.event_windows: dict[tuple[str, str], Window] = {}
        self.chat_windows: dict[str, Window] = {}
        self.last_sent: dict[str, tuple[str, float]] = {}
        self.echoes: dict[str, Counter[str]] = {}  # texts we sent, until Twitch echoes them
        self.chat_count: Counter[str] = Counter()  # chat messages seen per channel
        self.timer_marks: dict[tuple[str, str], tuple[float, int]] = {}  # last post: time, count
        self.tasks: set[asyncio.Task[Any]] = set()
        # Uses are counted in the order the commands were typed (asyncio's lock is first come,
        # first served, and replies start in that order); the rest of a reply runs on its own.
        self.counting = asyncio.Lock()

    # life --------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.reload()
        for loop in (self._consume(), self._send_loop(), self._log_loop(), self._timer_loop()):
            self._spawn(loop)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._flush_log()

    async def reload(self) -> None:
        """Re-read the configuration (after the API changed it)."""
        commands = await self.store.commands()
        self.commands = {n: c for c in commands for n in (c.name, *c.aliases)}
        self.events = {e.kind: e for e in await self.store.event_messages()}
        self.timers = await self.store.timers()
        self.enabled = await self.store.enabled_channels()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def status(self) -> dict[str, Any]:
        return {
            **{k: self.counters[k] for k in ("received", "dropped", "sent", "skipped", "refused")},
            "inbox": self.inbox.qsize(),
            "outbox": self.outbox.qsize(),
        }

    # in ----------------------------------------------------------------------------------
    def offer(self, item: Incoming) -> bool:
        """Take a chat message or support event without waiting; False when the inbox is full."""
        try:
            self.inbox.put_nowait(item)
        except asyncio.QueueFull:
            self.counters["dropped"] += 1
            dropped = self.counters["dropped"]
            if dropped & (dropped - 1) == 0:  # 1, 2, 4, 8…: a flood is not a log flood
                log.warning("chatbot_inbox_full", dropped=dropped, size=self.inbox.maxsize)
            return False
        self.counters["received"] += 1
        return True

    async def _consume(self) -> None:
        while True:
            item = await self.inbox.get()
            try:
                if item.kind == CHAT_KIND:
                    self._on_chat(cast(ChatLine, item))
                else:
                    self._on_event(cast(Support, item))
            except Exception as exc:  # noqa: BLE001 - one odd message never stops the bot
                log.error("chatbot_item_failed", error=repr(exc))

    def _on_chat(self, msg: ChatLine) -> None:
        echoes = self.echoes.get(msg.channel_id)
        if echoes and msg.user_id == self.sender.sender_id(msg.channel_id) and echoes[msg.text]:
            echoes[msg.text] -= 1  # our own message coming back: never a trigger or activity
            return
        self.chat_count[msg.channel_id] += 1
        if msg.channel_id not in self.enabled or not msg.text.startswith("!"):
            return
        name, _, args = msg.text[1:].strip().partition(" ")
        name = name.lower()
        command = self.commands.get(name)
        if command is None and name in BUILT_INS:
            command = Command(name, BUILT_IN_REPLIES.get(name, ""), cooldown_s=5)
        if command is None or not command.enabled:
            return
        source = f"!{command.name}"
        why = self._refusal(command, msg)
        if why:
            self._log(msg.channel_id, source, msg.text, "skipped", why)
            return
        self._spawn(self._reply(command, msg, args.strip()))

    def _refusal(self, command: Command, msg: ChatLine) -> str | None:
        """Why this chatter may not run the command now (None: they may)."""
        level = rank(msg.badges)
        needed = PERMISSIONS.index(command.permission)
        if level < needed:
            return f"permission: !{command.name} is for {command.permission}s and up"
        if level >= RANK["moderator"]:
            return None  # moderators and the broadcaster skip cooldowns
        shared = ("cmd", msg.channel_id, command.name)
        own = ("user", msg.channel_id, command.name, msg.user_id)
        for key, whose in ((shared, "cooldown"), (own, "user cooldown")):
            left = self.cooldowns.left(key)
            if left:
                return f"{whose}: !{command.name} again in {left:.0f} s"
        self.cooldowns.start(shared, command.cooldown_s)
        self.cooldowns.start(own, command.user_cooldown_s)
        return None

    async def _reply(self, command: Command, msg: ChatLine, args: str) -> None:
        template = command.response
        values: dict[str, object] = {"user": msg.user_name or msg.user_login, "args": args}
        if command.name in self._custom_names():
            async with self.counting:
                values["count"] = await self.store.count_use(command.name)
        elif command.name == "commands":
            template = "Commands: " + " ".join(f"!{n}" for n in self._everyone_commands())
        values.update(await facts_for(template, self.facts, msg.channel_id, msg.user_id))
        self._enqueue(Outgoing(msg.channel_id, f"!{command.name}", fill(template, values)))

    def _custom_names(self) -> set[str]:
        return {c.name for c in self.commands.values()}

    def _everyone_commands(self) -> list[str]:
        custom = {
            c.name for c in self.commands.values() if c.enabled and c.permission == "everyone"
        }
        return sorted(custom | set(BUILT_INS))

    def _on_event(self, item: Support) -> None:
        kind = EVENT_KINDS.get(item.kind)
        message = self.events.get(kind or "")
        if kind is None or message is None or item.channel_id not in self.enabled:
            return
        values = event_values(kind, item.event)
        if kind == "raid" and item.event.get("to_broadcaster_user_id") != item.channel_id:
            values = None  # a raid this channel sent
        if values is None or not message.enabled:
            return  # a gifted sub (its gift thanks the gifter) or a raid we sent
        source = f"event:{kind}"
        text = fill(message.template, values)
        amount = int(str(values.get("amount", 0)))
        if amount < message.minimum:
            why = f"minimum: {kind} of {amount} is below {message.minimum}"
            self._log(item.channel_id, source, text, "skipped", why)
            return
        window = self.event_windows.setdefault(
            (item.channel_id, kind), Window(self.minute_s, self.clock)
        )
        if not window.take(message.per_minute):
            why = f"rate limit: at most {message.per_minute} {kind} messages a minute"
            self._log(item.channel_id, source, text, "skipped", why)
            return
        self._enqueue(Outgoing(item.channel_id, source, text))

    # out ---------------------------------------------------------------------------------
    def _enqueue(self, out: Outgoing) -> None:
        try:
            self.outbox.put_nowait(out)
        except asyncio.QueueFull:
            self._log(out.channel_id, out.source, out.text, "skipped", "send queue full")

    async def _send_loop(self) -> None:
        while True:
            out = await self.outbox.get()
            try:
                await self._send_one(out)
            except Exception as exc:  # noqa: BLE001 - a send that blew up is a refused send
                self._log(out.channel_id, out.source, out.text, "refused", repr(exc))

    async def _send_one(self, out: Outgoing) -> None:
        text, channel = clip(out.text), out.channel_id
        last = self.last_sent.get(channel)
        if last and last[0] == text and self.clock() - last[1] < DUPLICATE_WINDOW_S:
            why = "duplicate: Twitch drops the same message again within 30 s"
            self._log(channel, out.source, text, "skipped", why)
            return
        limit = CHAT_LIMIT.get(self.sender.sender_role(channel), CHAT_LIMIT["viewer"])
        window = self.chat_windows.setdefault(channel, Window(CHAT_WINDOW_S, self.clock))
        wait = window.wait(limit)
        if wait > MAX_SEND_WAIT_S:
            why = f"rate limit: Twitch allows {limit} messages per 30 s"
            self._log(channel, out.source, text, "skipped", why)
            return
        if wait > 0:
            await asyncio.sleep(wait)
        window.take(limit)
        echoes = self.echoes.setdefault(channel, Counter())
        echoes[text] += 1  # before the send: Twitch may echo it before it answers
        result = await self._post(channel, text)
        if not result.sent:
            echoes[text] -= 1
            self._log(channel, out.source, text, "refused", result.reason)
            if result.retry_after_s:
                await asyncio.sleep(min(result.retry_after_s, MAX_SEND_WAIT_S))
            return
        self.last_sent[channel] = (text, self.clock())
        self._log(channel, out.source, text, "sent", None)

    async def _post(self, channel: str, text: str) -> SendResult:
        try:
            return await self.sender.send(channel, text)
        except Exception as exc:  # noqa: BLE001 - Twitch or the network: logged as refused
            return Answer(False, str(exc))

    # timers ------------------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timer_tick_s)
            try:
                await self.run_timers()
            except Exception as exc:  # noqa: BLE001 - Helix or database away: next tick
                log.warning("chatbot_timers_failed", error=repr(exc))

    async def run_timers(self) -> None:
        """Post every due timer of every live channel whose chat was active enough."""
        timers = [t for t in self.timers if t.enabled]
        if not timers:
            return
        for channel in await self.facts.channels():
            if channel not in self.enabled or await self.facts.live_since(channel) is None:
                # Offline: each timer's clock and chat count start again when the stream does,
                # so chat between streams never makes the bot speak at the first tick.
                for timer in timers:
                    self.timer_marks.pop((channel, timer.name), None)
                continue
            for timer in timers:
                self._timer_due(channel, timer)

    def _timer_due(self, channel: str, timer: Timer) -> None:
        key, now, count = (channel, timer.name), self.clock(), self.chat_count[channel]
        at, mark = self.timer_marks.setdefault(key, (now, count))
        if now - at < timer.interval_min * self.minute_s:
            return
        self.timer_marks[key] = (now, count)
        source = f"timer:{timer.name}"
        if count - mark < timer.min_chat_messages:
            needed = timer.min_chat_messages
            why = f"quiet chat: {count - mark} messages since the last one, needs {needed}"
            self._log(channel, source, timer.message, "skipped", why)
            return
        self._enqueue(Outgoing(channel, source, timer.message))

    # the log -----------------------------------------------------------------------------
    def _log(self, channel: str, source: str, text: str, outcome: str, why: str | None) -> None:
        self.counters[outcome] += 1
        log.info("chatbot_message", channel_id=channel, source=source, outcome=outcome, reason=why)
        with contextlib.suppress(asyncio.QueueFull):
            self.logq.put_nowait((channel, source, clip(text), outcome, why))

    async def _log_loop(self) -> None:
        while True:
            first = await self.logq.get()
            batch = [first, *self._drain_log()]
            try:
                await self.store.write_log(batch)
            except Exception as exc:  # noqa: BLE001 - database away: these rows are lost, not the bot
                log.warning("chatbot_log_write_failed", rows=len(batch), error=repr(exc))

    def _drain_log(self) -> list[tuple[str, str, str, str, str | None]]:
        rows = []
        while not self.logq.empty():
            rows.append(self.logq.get_nowait())
        return rows

    async def _flush_log(self) -> None:
        rows = self._drain_log()
        if rows:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.write_log(rows), 5)


def event_values(kind: str, event: Mapping[str, Any]) -> dict[str, object] | None:
    """The template values of one support event; None when it gets no message of its own."""
    user = str(event.get("user_name") or event.get("user_login") or "someone")
    if kind == "sub" and event.get("is_gift"):
        return None  # one message per gift bomb, from its channel.subscription.gift
    if kind == "gift":
        gifter = "An anonymous gifter" if event.get("is_anonymous") else user
        total = int(event.get("total") or 1)
        return {"user": gifter, "count": total, "amount": total}
    if kind == "cheer":
        bits = int(event.get("bits") or 0)
        name = "Anonymous" if event.get("is_anonymous") else user
        return {"user": name, "bits": bits, "amount": bits}
    if kind == "raid":
        viewers = int(event.get("viewers") or 0)
        name = str(event.get("from_broadcaster_user_name") or "someone")
        return {"user": name, "viewers": viewers, "amount": viewers}
    if kind == "resub":
        months = event.get("cumulative_months") or event.get("duration_months") or 1
        return {"user": user, "months": months}
    if kind == "redemption":
        reward = event.get("reward")
        title = reward.get("title") if isinstance(reward, dict) else None
        return {"user": user, "reward": title or "a reward", "input": event.get("user_input", "")}
    return {"user": user}
