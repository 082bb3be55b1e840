"""What the chat bot needs from the rest of the daemon, as Protocols bot/chat.py implements.

The chat bot never imports bot/: app.py hands it a `ChatSender` (Helix Send Chat Message) and
`ChannelFacts` (title, game, uptime, followage), and hands the bot the chat bot's `offer`, the
non-blocking inbox for chat messages and support events.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

MAX_MESSAGE = 500  # Twitch's limit for one chat message, in characters
CHAT_KIND = "channel.chat.message"


class Incoming(Protocol):
    """A chat message (kind CHAT_KIND, see ChatLine) or a support event (its EventSub type)."""

    @property
    def channel_id(self) -> str: ...

    @property
    def kind(self) -> str: ...


class ChatLine(Incoming, Protocol):
    """One message in the channel's chat (channel.chat.message)."""

    @property
    def user_id(self) -> str: ...

    @property
    def user_login(self) -> str: ...

    @property
    def user_name(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def badges(self) -> frozenset[str]: ...


class Support(Incoming, Protocol):
    """A follow, sub, resub, gift, cheer, raid, hype train or redemption: its EventSub event."""

    @property
    def event(self) -> Mapping[str, Any]: ...


class SendResult(Protocol):
    """What Twitch answered: sent, or dropped/refused with a reason."""

    @property
    def sent(self) -> bool: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def retry_after_s(self) -> float | None:
        """After a 429: wait this long before the next send."""


@dataclass(frozen=True)
class ChatMessage:
    """A ChatLine (tests and benchmarks build these; bot/chat.py has its own)."""

    channel_id: str
    user_id: str
    user_login: str
    user_name: str
    text: str
    badges: frozenset[str] = field(default_factory=frozenset)
    kind: str = CHAT_KIND


@dataclass(frozen=True)
class SupportEvent:
    """A Support."""

    channel_id: str
    kind: str
    event: Mapping[str, Any]


@dataclass(frozen=True)
class Answer:
    """A SendResult."""

    sent: bool
    reason: str | None = None
    retry_after_s: float | None = None


class ChatSender(Protocol):
    """Posts one message to a channel's chat as the bot account."""

    async def send(self, channel_id: str, text: str) -> SendResult: ...

    def sender_id(self, channel_id: str) -> str | None:
        """The account the bot speaks as in that channel (None: it cannot speak there)."""

    def sender_role(self, channel_id: str) -> str:
        """'broadcaster', 'moderator' or 'viewer': which chat rate limit applies."""


class ChannelFacts(Protocol):
    """What the built-in commands, variables and timers read about the channels."""

    async def channels(self) -> list[str]:
        """The ids of the channels this daemon runs now."""

    async def title_and_game(self, channel_id: str) -> tuple[str, str]: ...

    async def live_since(self, channel_id: str) -> dt.datetime | None: ...

    async def followed_at(self, channel_id: str, user_id: str) -> dt.datetime | None: ...


class Speaker(Protocol):
    """Who speaks in one channel's chat, how, and what is missing for it, in words."""

    @property
    def channel_id(self) -> str: ...

    @property
    def login(self) -> str: ...

    @property
    def how(self) -> str: ...

    @property
    def missing(self) -> tuple[str, ...]: ...


class Speakers(Protocol):
    def speaker(self, channel_id: str) -> Speaker: ...


class AccountView(Protocol):
    """The separate bot account: its login, 'connected' or 'disconnected' (with the reason),
    its scopes; login None when there is none (the bot speaks as each channel)."""

    @property
    def login(self) -> str | None: ...

    @property
    def status(self) -> str | None: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def scopes(self) -> tuple[str, ...]: ...


class BotAccount(Protocol):
    """The separate bot account, connected in the browser (bot/botaccount.py)."""

    @property
    def scopes(self) -> tuple[str, ...]:
        """What the authorization asks of the bot account: exactly what it needs."""

    async def connect(self, code: str, redirect_uri: str) -> str:
        """Swap the browser's code for the bot's grant and keep it; the bot's login."""

    async def disconnect(self) -> None: ...

    async def describe(self) -> AccountView: ...
