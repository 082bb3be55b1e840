"""The chat bot's configuration as typed rows, and the checks a request body must pass.

Every check raises InvalidInput naming the field and what to write instead, so the API, the
import and the page all answer the same way.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from streamerhub.chatbot.ports import MAX_MESSAGE
from streamerhub.errors import InvalidInput

PERMISSIONS = ("everyone", "subscriber", "vip", "moderator", "broadcaster")
EVENT_KINDS = ("follow", "sub", "resub", "gift", "cheer", "raid", "hype_train", "redemption")
BUILT_INS = ("uptime", "followage", "title", "game", "socials", "commands")
NAME = re.compile(r"^[a-z0-9_]{1,32}$")


@dataclass(frozen=True)
class Command:
    name: str
    response: str
    permission: str = "everyone"
    cooldown_s: int = 5
    user_cooldown_s: int = 15
    aliases: tuple[str, ...] = ()
    enabled: bool = True
    uses: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "aliases": list(self.aliases)}


@dataclass(frozen=True)
class Timer:
    name: str
    message: str
    interval_min: int
    min_chat_messages: int = 5
    enabled: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EventMessage:
    kind: str
    template: str
    enabled: bool = True
    minimum: int = 0  # bits for cheer, viewers for raid, gifts for gift
    per_minute: int = 6  # at most this many of this kind a minute; the rest are skipped

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_EVENTS = (
    EventMessage("follow", "Thanks for the follow, {user}!"),
    EventMessage("sub", "{user} just subscribed, welcome!"),
    EventMessage("resub", "{user} resubscribed for {months} months!"),
    EventMessage("gift", "{user} gifted {count} subs, thank you!"),
    EventMessage("cheer", "{user} cheered {bits} bits!", minimum=1),
    EventMessage("raid", "{user} is raiding with {viewers} viewers, welcome!", minimum=1),
    EventMessage("hype_train", "A hype train started, all aboard!"),
    EventMessage("redemption", "{user} redeemed {reward}.", enabled=False),
)


@dataclass
class Config:
    """Everything the export holds and the import takes."""

    commands: list[Command] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    events: list[EventMessage] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "commands": [c.to_json() for c in self.commands],
            "timers": [t.to_json() for t in self.timers],
            "events": [e.to_json() for e in self.events],
        }


def _text(body: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: {key} must be a non-empty text")
    if len(value) > MAX_MESSAGE:
        raise InvalidInput(f"{where}: {key} is {len(value)} characters; Twitch allows 500")
    return value.strip()


def _int(body: Mapping[str, Any], key: str, where: str, default: int, low: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInput(f"{where}: {key} must be a whole number ≥ {low}, not {value!r}")
    return value


def _bool(body: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: {key} must be true or false, not {value!r}")
    return value


def _name(raw: Any, where: str) -> str:
    name = str(raw or "").strip().lower().removeprefix("!")
    if not NAME.match(name):
        raise InvalidInput(
            f"{where}: a command name is 1-32 letters, digits or _ (like !hello), not {raw!r}"
        )
    return name


def _object(body: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidInput(f"{where}: expected a JSON object")
    return body


def parse_command(body: Any, where: str = "command") -> Command:
    body = _object(body, where)
    name = _name(body.get("name"), where)
    where = f"command !{name}"
    permission = body.get("permission", "everyone")
    if permission not in PERMISSIONS:
        raise InvalidInput(f"{where}: permission must be one of {', '.join(PERMISSIONS)}")
    aliases = body.get("aliases", [])
    if not isinstance(aliases, list):
        raise InvalidInput(f"{where}: aliases must be a list of names")
    return Command(
        name=name,
        response=_text(body, "response", where),
        permission=permission,
        cooldown_s=_int(body, "cooldown_s", where, 5, 0),
        user_cooldown_s=_int(body, "user_cooldown_s", where, 15, 0),
        aliases=tuple(dict.fromkeys(_name(a, where) for a in aliases if _name(a, where) != name)),
        enabled=_bool(body, "enabled", where, True),
    )


def parse_timer(body: Any, where: str = "timer") -> Timer:
    body = _object(body, where)
    name = _text(body, "name", where)[:100]
    where = f"timer {name!r}"
    return Timer(
        name=name,
        message=_text(body, "message", where),
        interval_min=_int(body, "interval_min", where, 15, 1),
        min_chat_messages=_int(body, "min_chat_messages", where, 5, 0),
        enabled=_bool(body, "enabled", where, True),
    )


def parse_event(body: Any, where: str = "event message") -> EventMessage:
    body = _object(body, where)
    kind = body.get("kind")
    if kind not in EVENT_KINDS:
        raise InvalidInput(f"{where}: kind must be one of {', '.join(EVENT_KINDS)}")
    where = f"event message {kind}"
    return EventMessage(
        kind=kind,
        template=_text(body, "template", where),
        enabled=_bool(body, "enabled", where, True),
        minimum=_int(body, "minimum", where, 0, 0),
        per_minute=_int(body, "per_minute", where, 6, 1),
    )


def parse_config(body: Any) -> Config:
    """A whole export (or another bot's commands rewritten to this shape) → Config."""
    body = _object(body, "import")
    parts = {}
    for key in ("commands", "timers", "events"):
        items = body.get(key, [])
        if not isinstance(items, list):
            raise InvalidInput(f"import: {key} must be a list")
        parts[key] = items
    config = Config(
        commands=[
            parse_command(c, f"import commands[{i}]") for i, c in enumerate(parts["commands"])
        ],
        timers=[parse_timer(t, f"import timers[{i}]") for i, t in enumerate(parts["timers"])],
        events=[parse_event(e, f"import events[{i}]") for i, e in enumerate(parts["events"])],
    )
    names = [n for c in config.commands for n in (c.name, *c.aliases)]
    if len(names) != len(set(names)):
        raise InvalidInput("import: two commands share a name or alias")
    return config
