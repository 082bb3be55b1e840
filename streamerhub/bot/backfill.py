"""After every transport gap: fetch from Helix what EventSub could not replay.

EventSub never replays a gap. Helix still knows two things: the follower list (with `followed_at`)
and whether the stream is live. Follows inside the gap are stored as backfilled events whose
message id is derived from the follow itself, so running a backfill twice stores nothing new, and
the store's event key (user + followed_at to the second) dedupes them against live ones. Stream
state is reconciled: a stream that went live or offline during the gap gets its event, marked
backfilled. Subs, cheers and raids missed in a gap are gone; the gap row says so by existing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from streamerhub.bot.eventsub import Gap
from streamerhub.bot.helix import Helix
from streamerhub.log import get_logger

log = get_logger(__name__)

FOLLOW_SCOPE = "moderator:read:followers"
MAX_FOLLOW_PAGES = 50  # 5,000 follows in one gap is already a raid of followers; stop there


class BackfillSink(Protocol):
    """The store (events/store.py): queues an event rebuilt from Helix, marked backfilled."""

    def submit_backfill(
        self,
        message_id: str,
        subscription_type: str,
        version: str,
        occurred_at: str,
        payload: dict[str, Any],
    ) -> None: ...


class StreamHistory(Protocol):
    async def last_stream(self, channel_id: str) -> tuple[str, str | None] | None:
        """(kind 'online'/'offline', stream id) of the newest stored stream event, if any."""


@dataclass(frozen=True)
class Channel:
    """Who the synthesised events are about."""

    id: str
    login: str
    name: str

    def broadcaster(self) -> dict[str, str]:
        return {
            "broadcaster_user_id": self.id,
            "broadcaster_user_login": self.login,
            "broadcaster_user_name": self.name,
        }


async def backfill_gap(
    gap: Gap,
    channel: Channel,
    helix: Helix,
    scopes: frozenset[str],
    sink: BackfillSink,
    history: StreamHistory,
) -> list[str]:
    """Backfill one closed gap; returns the message ids handed to the store."""
    ids: list[str] = []
    if FOLLOW_SCOPE in scopes:
        ids += await backfill_follows(gap, channel, helix, sink)
    ids += await reconcile_stream(gap, channel, helix, sink, history)
    return ids


async def backfill_follows(
    gap: Gap, channel: Channel, helix: Helix, sink: BackfillSink
) -> list[str]:
    """Follows with followed_at inside [gap start, gap end], newest first until older."""
    end = gap.ended_at or dt.datetime.now(dt.timezone.utc)
    # Helix gives followed_at to the second: widen the start to the whole second it falls in.
    start = gap.started_at.replace(microsecond=0)
    ids: list[str] = []
    seen = 0
    async for follow in helix.followers(channel.id):
        seen += 1
        at = _parse(follow.get("followed_at"))
        if at is None or at > end:
            continue
        if at < start or seen > MAX_FOLLOW_PAGES * 100:
            break
        ids += _submit(sink, *follow_event(channel, follow))
    return ids


def follow_event(
    channel: Channel, follow: dict[str, Any]
) -> tuple[str, str, str, str, dict[str, Any]]:
    """A channel.follow v2 notification rebuilt from a Helix follower entry."""
    followed_at = str(follow["followed_at"])
    message_id = f"backfill:follow:{channel.id}:{follow['user_id']}:{followed_at}"
    event = {
        "user_id": str(follow["user_id"]),
        "user_login": follow.get("user_login"),
        "user_name": follow.get("user_name"),
        **channel.broadcaster(),
        "followed_at": followed_at,
    }
    condition = {"broadcaster_user_id": channel.id, "moderator_user_id": channel.id}
    return (
        message_id,
        "channel.follow",
        "2",
        followed_at,
        _payload("channel.follow", "2", condition, event),
    )


async def reconcile_stream(
    gap: Gap, channel: Channel, helix: Helix, sink: BackfillSink, history: StreamHistory
) -> list[str]:
    """Store the online/offline transition that happened during the gap, if one did."""
    live = await helix.stream(channel.id)
    last = await history.last_stream(channel.id)
    if live is not None and (last is None or last[0] == "offline" or last[1] != str(live["id"])):
        return _submit(sink, *online_event(channel, live))
    if live is None and last is not None and last[0] == "online":
        when = (gap.ended_at or dt.datetime.now(dt.timezone.utc)).isoformat()
        message_id = f"backfill:stream.offline:{channel.id}:{last[1] or when}"
        return _submit(
            sink,
            message_id,
            "stream.offline",
            "1",
            when,
            _payload(
                "stream.offline", "1", {"broadcaster_user_id": channel.id}, channel.broadcaster()
            ),
        )
    return []


def online_event(
    channel: Channel, stream: dict[str, Any]
) -> tuple[str, str, str, str, dict[str, Any]]:
    """A stream.online notification rebuilt from GET /streams."""
    stream_id, started_at = str(stream["id"]), str(stream.get("started_at"))
    event = {
        "id": stream_id,
        **channel.broadcaster(),
        "type": stream.get("type") or "live",
        "started_at": started_at,
    }
    return (
        f"backfill:stream.online:{channel.id}:{stream_id}",
        "stream.online",
        "1",
        started_at,
        _payload("stream.online", "1", {"broadcaster_user_id": channel.id}, event),
    )


def _submit(
    sink: BackfillSink,
    message_id: str,
    type_: str,
    version: str,
    occurred_at: str,
    payload: dict[str, Any],
) -> list[str]:
    # An event Helix gave us in an unusable shape becomes a dead letter in the store.
    sink.submit_backfill(message_id, type_, version, occurred_at, payload)
    return [message_id]


def _payload(
    type_: str, version: str, condition: dict[str, str], event: dict[str, Any]
) -> dict[str, Any]:
    subscription = {
        "id": "backfill",
        "status": "enabled",
        "type": type_,
        "version": version,
        "cost": 0,
        "condition": condition,
        "transport": {"method": "backfill"},
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    return {"subscription": subscription, "event": event}


def _parse(value: Any) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
