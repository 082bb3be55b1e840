"""The bot's side of the chat bot (chatbot/): the tap that hands it chat and support events, the
sender that posts with Helix "Send Chat Message", and the channel facts its commands read.

The tap sits between the EventSub reader and the event store: every notification still goes to
the store first, unchanged, and a copy of the chat-relevant ones is *offered* to the chat bot,
which takes it without waiting or drops it (its inbox is bounded), so capture never waits on chat.

The sender speaks as the bot account when one is connected (bot/botaccount.py: the app's own
token, sender_id = the bot, Twitch shows the "Chat Bot" badge), else as the streamer's own
account: the channel's user token, which must carry user:write:chat (sender_id =
broadcaster_id, Twitch's user-token path).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from streamerhub.bot.backfill import BackfillSink
from streamerhub.bot.botaccount import Speaker, TwitchBotAccount
from streamerhub.bot.channel import BotStore, ChannelState
from streamerhub.bot.helix import Helix, HelixError, TokenSource
from streamerhub.bot.oauth import TokenError
from streamerhub.bot.service import TwitchBot
from streamerhub.events.frames import Frame

WRITE_SCOPE = "user:write:chat"
SEND_RETRIES = 1
CHAT_TYPE = "channel.chat.message"
SUPPORT_TYPES = frozenset(
    {
        "channel.follow",
        "channel.subscribe",
        "channel.subscription.message",
        "channel.subscription.gift",
        "channel.cheer",
        "channel.raid",
        "channel.hype_train.begin",
        "channel.channel_points_custom_reward_redemption.add",
    }
)


class ChatItem(Protocol):
    """What the chat bot's inbox takes (chatbot.ports.Incoming, restated: wings of one layer
    never import each other)."""

    @property
    def channel_id(self) -> str: ...

    @property
    def kind(self) -> str: ...


Offer = Callable[[ChatItem], bool]


@dataclass(frozen=True)
class ChatMessage:
    """One channel.chat.message, as the chat bot reads it (chatbot.ports.ChatLine)."""

    channel_id: str
    user_id: str
    user_login: str
    user_name: str
    text: str
    badges: frozenset[str]
    kind: str = CHAT_TYPE


@dataclass(frozen=True)
class SupportEvent:
    """A support event (chatbot.ports.Support): its EventSub type and event."""

    channel_id: str
    kind: str
    event: dict[str, Any]


@dataclass(frozen=True)
class SendResult:
    """What Twitch answered a send (chatbot.ports.SendResult)."""

    sent: bool
    reason: str | None = None
    retry_after_s: float | None = None


def incoming(frame: Frame) -> ChatMessage | SupportEvent | None:
    """The chat message or support event a notification carries, if it is one the bot reads."""
    kind = frame.subscription_type
    if kind != CHAT_TYPE and kind not in SUPPORT_TYPES:
        return None
    event = frame.payload.get("event")
    condition = frame.subscription.get("condition")
    if not isinstance(event, dict) or not isinstance(condition, dict):
        return None
    channel = str(
        condition.get("broadcaster_user_id")
        or condition.get("to_broadcaster_user_id")
        or condition.get("from_broadcaster_user_id")
        or ""
    )
    if kind != CHAT_TYPE:
        return SupportEvent(channel, kind or "", event)
    message = event.get("message")
    text = message.get("text") if isinstance(message, dict) else None
    badges = event.get("badges")
    return ChatMessage(
        channel_id=channel,
        user_id=str(event.get("chatter_user_id") or ""),
        user_login=str(event.get("chatter_user_login") or ""),
        user_name=str(event.get("chatter_user_name") or ""),
        text=str(text or ""),
        badges=frozenset(
            str(b.get("set_id")) for b in badges or [] if isinstance(b, dict) and b.get("set_id")
        ),
    )


class ChatTap(BotStore, BackfillSink):
    """The event store as the bot sees it, plus a non-blocking copy to the chat bot."""

    def __init__(self, store: BotStore) -> None:
        self.store = store
        self.offer: Offer | None = None  # set by app.py once the chat bot runs

    def submit(self, item: Any) -> None:
        self.store.submit(item)
        offer = self.offer
        if offer is not None and isinstance(item, Frame):
            found = incoming(item)
            if found is not None:
                offer(found)

    def dead_letter(self, source: str, reason: str, raw_text: str) -> None:
        self.store.dead_letter(source, reason, raw_text)

    def record_gap_start(
        self, channel_id: str, reason: str, at: dt.datetime | None = None
    ) -> dt.datetime:
        return self.store.record_gap_start(channel_id, reason, at)

    def record_gap_end(self, channel_id: str, at: dt.datetime | None = None) -> None:
        self.store.record_gap_end(channel_id, at)

    def submit_backfill(
        self,
        message_id: str,
        subscription_type: str,
        version: str,
        occurred_at: str,
        payload: dict[str, Any],
    ) -> None:
        # Backfilled events are history: the chat bot never thanks anyone for them.
        self.store.submit_backfill(message_id, subscription_type, version, occurred_at, payload)

    async def drain(self) -> None:
        await self.store.drain()


class Runners:
    """Read access to the bot's running channels (TwitchBot.runners), looked up per call."""

    def __init__(self, bot: Callable[[], TwitchBot | None]) -> None:
        self.bot = bot

    def helix(self, channel_id: str) -> Helix | None:
        bot = self.bot()
        runner = bot.runners.get(channel_id) if bot is not None else None
        if runner is None or runner.helix is None or runner.state is not ChannelState.RUNNING:
            return None
        return runner.helix

    def running(self) -> list[str]:
        """The channels this daemon captures now (another daemon sharing the database may run
        the others: their timers are its business)."""
        bot = self.bot()
        return [c for c in (bot.runners if bot is not None else {}) if self.helix(c) is not None]

    def scopes(self, channel_id: str) -> frozenset[str]:
        bot = self.bot()
        token = bot.live_token(channel_id) if bot is not None else None
        return frozenset(token.scopes) if token is not None else frozenset()

    def login(self, channel_id: str) -> str:
        bot = self.bot()
        token = bot.live_token(channel_id) if bot is not None else None
        return token.login if token is not None else channel_id


OWN_ACCOUNT = "the channel's own account (user token)"
BOT_ACCOUNT = "the bot account (app token: Twitch shows the Chat Bot badge)"


class BotChatSender:
    """chatbot.ports.ChatSender: POST /chat/messages as the bot account (app token) when one
    is chosen, else with the channel's own user token."""

    def __init__(self, runners: Runners, account: TwitchBotAccount | None = None) -> None:
        self.runners, self.account = runners, account

    def sender_id(self, channel_id: str) -> str | None:
        token = self.account.speaking() if self.account is not None else None
        return token.channel_id if token is not None else channel_id

    def sender_role(self, channel_id: str) -> str:
        # Whether the bot is a moderator there is not known: Twitch's lower limit is the safe one.
        return "broadcaster" if self.sender_id(channel_id) == channel_id else "viewer"

    async def send(self, channel_id: str, text: str) -> SendResult:
        helix = self.runners.helix(channel_id)
        if helix is None:
            return SendResult(False, "the channel is not connected in this daemon")
        account = self.account
        if account is not None and account.chosen is not None:
            return await self._send_as_bot(account, helix, channel_id, text)
        if WRITE_SCOPE not in self.runners.scopes(channel_id):
            return SendResult(
                False, f"the channel's token lacks {WRITE_SCOPE}: connect the channel again"
            )
        return await _post(helix, helix.token, channel_id, channel_id, text)

    async def _send_as_bot(
        self, account: TwitchBotAccount, helix: Helix, channel_id: str, text: str
    ) -> SendResult:
        token = account.speaking()
        if token is None:  # never the channel's own account instead: the owner chose the bot
            return SendResult(False, account.problems(channel_id, frozenset())[0])
        if not account.settings.twitch.client_secret or account.app_token is None:
            return SendResult(False, account.problems(channel_id, frozenset())[0])
        try:
            await account.app_token.ensure()
        except TokenError as exc:
            return SendResult(False, f"the app token was refused: {exc}")
        return await _post(helix, account.app_token, channel_id, token.channel_id, text)

    def speaker(self, channel_id: str) -> Speaker:
        """Who speaks in the channel, how, and what is missing (for the page)."""
        scopes = self.runners.scopes(channel_id)
        offline = () if self.runners.helix(channel_id) else ("the channel is not running here",)
        account = self.account
        if account is not None and account.chosen is not None:
            missing = account.problems(channel_id, scopes)
            return Speaker(channel_id, account.chosen, BOT_ACCOUNT, (*offline, *missing))
        lacking = () if WRITE_SCOPE in scopes or offline else (_lacking(),)
        return Speaker(channel_id, self.runners.login(channel_id), OWN_ACCOUNT, offline + lacking)


def _lacking() -> str:
    return f"{WRITE_SCOPE} from the channel: connect the channel again on Settings"


async def _post(
    helix: Helix, token: TokenSource, channel_id: str, sender_id: str, text: str
) -> SendResult:
    body = {"broadcaster_id": channel_id, "sender_id": sender_id, "message": text}
    # One retry at most: the outbox must not stall ~15 s on a 5xx, and a retried POST that
    # Twitch had applied would say the same thing twice.
    once = Helix(helix.session, helix.api_url, helix.client_id, token, retries=SEND_RETRIES)
    try:
        answer = await once.request("POST", "/chat/messages", json=body)
    except HelixError as exc:
        return SendResult(False, f"Twitch answered {exc.status}: {exc.message}")
    data = (answer.get("data") or [{}])[0]
    if data.get("is_sent"):
        return SendResult(True)
    drop = data.get("drop_reason") or {}
    return SendResult(False, f"Twitch dropped it: {drop.get('code')}: {drop.get('message')}")


class BotChannelFacts:
    """chatbot.ports.ChannelFacts over Helix with each channel's own token."""

    def __init__(self, runners: Runners) -> None:
        self.runners = runners

    def _helix(self, channel_id: str) -> Helix:
        helix = self.runners.helix(channel_id)
        if helix is None:
            raise HelixError(503, "the channel is not connected in this daemon", "")
        return helix

    async def channels(self) -> list[str]:
        return self.runners.running()

    async def title_and_game(self, channel_id: str) -> tuple[str, str]:
        info = await self._helix(channel_id).channel_info(channel_id) or {}
        return str(info.get("title") or ""), str(info.get("game_name") or "")

    async def live_since(self, channel_id: str) -> dt.datetime | None:
        stream = await self._helix(channel_id).stream(channel_id)
        started = stream.get("started_at") if stream else None
        return _parse(started) if started else None

    async def followed_at(self, channel_id: str, user_id: str) -> dt.datetime | None:
        params = {"broadcaster_id": channel_id, "user_id": user_id}
        body = await self._helix(channel_id).request("GET", "/channels/followers", params=params)
        data = body.get("data") or []
        return _parse(data[0]["followed_at"]) if data else None


def _parse(stamp: str) -> dt.datetime:
    # Twitch writes RFC 3339, sometimes with nanoseconds fromisoformat cannot read.
    head, _, rest = stamp.rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(head).replace(tzinfo=dt.timezone.utc)
