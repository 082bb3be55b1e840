"""The chat bot's tables (chatbot_*): configuration, usage counts and the message log."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from streamerhub.chatbot.rules import DEFAULT_EVENTS, Command, Config, EventMessage, Timer
from streamerhub.db import Database
from streamerhub.errors import Conflict, NotFound

LOG_KEEP = 5000  # rows of chatbot_log kept; older ones are trimmed as new ones come


@dataclass(frozen=True)
class LogEntry:
    at: dt.datetime
    channel_id: str
    source: str
    text: str
    outcome: str
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "channel_id": self.channel_id,
            "source": self.source,
            "text": self.text,
            "outcome": self.outcome,
            "reason": self.reason,
        }


def _command(row: Any) -> Command:
    return Command(
        row["name"],
        row["response"],
        row["permission"],
        row["cooldown_s"],
        row["user_cooldown_s"],
        tuple(row["aliases"]),
        row["enabled"],
        row["uses"],
    )


class ChatbotStore:
    """Typed reads and writes of chatbot_*; nothing else names these tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # on/off per channel: off until the owner turns it on --------------------------------
    async def enabled_channels(self) -> set[str]:
        rows = await self.db.pool.fetch("SELECT channel_id FROM chatbot_settings WHERE enabled")
        return {r["channel_id"] for r in rows}

    async def set_enabled(self, channel_id: str, enabled: bool) -> None:
        await self.db.pool.execute(
            "INSERT INTO chatbot_settings (channel_id, enabled) VALUES ($1, $2) "
            "ON CONFLICT (channel_id) DO UPDATE SET enabled = $2, updated_at = now()",
            channel_id,
            enabled,
        )

    # commands ----------------------------------------------------------------------------
    async def commands(self) -> list[Command]:
        rows = await self.db.pool.fetch("SELECT * FROM chatbot_commands ORDER BY name")
        return [_command(r) for r in rows]

    async def save_command(self, command: Command, replace: bool = False) -> Command:
        """Create (or with replace, update) a command; a name or alias in use is a Conflict."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            taken = await conn.fetchval(
                "SELECT name FROM chatbot_commands WHERE name <> $1 "
                "AND (name = ANY($2::text[]) OR aliases && $2::text[])",
                command.name,
                [command.name, *command.aliases],
            )
            if taken:
                raise Conflict(f"!{taken} already uses one of the names of !{command.name}")
            exists = await conn.fetchval(
                "SELECT 1 FROM chatbot_commands WHERE name = $1", command.name
            )
            if exists and not replace:
                raise Conflict(f"!{command.name} exists already: edit it instead")
            row = await conn.fetchrow(
                "INSERT INTO chatbot_commands (name, response, permission, cooldown_s, "
                "user_cooldown_s, aliases, enabled) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (name) DO UPDATE SET response = $2, permission = $3, "
                "cooldown_s = $4, user_cooldown_s = $5, aliases = $6, enabled = $7 RETURNING *",
                command.name,
                command.response,
                command.permission,
                command.cooldown_s,
                command.user_cooldown_s,
                list(command.aliases),
                command.enabled,
            )
        return _command(row)

    async def delete_command(self, name: str) -> None:
        done = await self.db.pool.execute("DELETE FROM chatbot_commands WHERE name = $1", name)
        if done.endswith(" 0"):
            raise NotFound(f"there is no command !{name}")

    async def count_use(self, name: str) -> int:
        """One more use of a command; its new count (the {count} variable)."""
        value = await self.db.pool.fetchval(
            "UPDATE chatbot_commands SET uses = uses + 1 WHERE name = $1 RETURNING uses", name
        )
        return int(value or 0)

    # timers ------------------------------------------------------------------------------
    async def timers(self) -> list[Timer]:
        rows = await self.db.pool.fetch(
            "SELECT name, message, interval_min, min_chat_messages, enabled "
            "FROM chatbot_timers ORDER BY name"
        )
        return [Timer(*r) for r in rows]

    async def save_timer(self, timer: Timer) -> Timer:
        await self.db.pool.execute(
            "INSERT INTO chatbot_timers (name, message, interval_min, min_chat_messages, enabled)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET message = $2, "
            "interval_min = $3, min_chat_messages = $4, enabled = $5",
            timer.name,
            timer.message,
            timer.interval_min,
            timer.min_chat_messages,
            timer.enabled,
        )
        return timer

    async def delete_timer(self, name: str) -> None:
        done = await self.db.pool.execute("DELETE FROM chatbot_timers WHERE name = $1", name)
        if done.endswith(" 0"):
            raise NotFound(f"there is no timer {name!r}")

    # event messages ----------------------------------------------------------------------
    async def event_messages(self) -> list[EventMessage]:
        """Every kind: the stored one, else its default."""
        rows = await self.db.pool.fetch(
            "SELECT kind, template, enabled, minimum, per_minute FROM chatbot_event_messages"
        )
        stored = {r["kind"]: EventMessage(*r) for r in rows}
        return [stored.get(d.kind, d) for d in DEFAULT_EVENTS]

    async def save_event_message(self, message: EventMessage) -> EventMessage:
        await self.db.pool.execute(
            "INSERT INTO chatbot_event_messages (kind, template, enabled, minimum, per_minute) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind) DO UPDATE SET template = $2, "
            "enabled = $3, minimum = $4, per_minute = $5",
            message.kind,
            message.template,
            message.enabled,
            message.minimum,
            message.per_minute,
        )
        return message

    # export / import ---------------------------------------------------------------------
    async def export(self) -> Config:
        return Config(await self.commands(), await self.timers(), await self.event_messages())

    async def import_config(self, config: Config) -> dict[str, int]:
        """Add or replace what the import names (by name/kind); leave everything else."""
        for command in config.commands:
            await self.save_command(command, replace=True)
        for timer in config.timers:
            await self.save_timer(timer)
        for message in config.events:
            await self.save_event_message(message)
        return {
            "commands": len(config.commands),
            "timers": len(config.timers),
            "events": len(config.events),
        }

    # the log -----------------------------------------------------------------------------
    async def write_log(self, entries: list[tuple[str, str, str, str, str | None]]) -> None:
        """(channel_id, source, text, outcome, reason) rows, then trim to LOG_KEEP."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO chatbot_log (channel_id, source, text, outcome, reason) "
                "VALUES ($1, $2, $3, $4, $5)",
                entries,
            )
            await conn.execute(
                "DELETE FROM chatbot_log WHERE id < (SELECT min(id) FROM "
                "(SELECT id FROM chatbot_log ORDER BY id DESC LIMIT $1) AS kept)",
                LOG_KEEP,
            )

    async def log(self, limit: int = 100) -> list[LogEntry]:
        rows = await self.db.pool.fetch(
            "SELECT at, channel_id, source, text, outcome, reason FROM chatbot_log "
            "ORDER BY id DESC LIMIT $1",
            limit,
        )
        return [LogEntry(*r) for r in rows]
