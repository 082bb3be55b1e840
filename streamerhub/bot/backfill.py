"""After every transport gap: fetch from Helix what EventSub could not replay.

EventSub never replays a gap. Helix still keeps:
- the follower list with `followed_at`: follows inside the gap;
- polls and predictions of the last 90 days: each begin / lock / end that fell inside the gap;
- past broadcasts in `/videos` (archives with `stream_id`, `created_at`, `duration`): streams that
  started and ended inside the gap, and when a stream we saw go live ended;
- whether the channel is live now, and its current title and category (one synthetic
  `channel.update` when they differ from the last one stored);
- the Bits leaderboard (`bits:read`): per user, the Bits of each Pacific-time day the gap touches.
  Single cheers are gone, so what was missed is stored as one aggregate per user and day
  (`streamerhub.bits.aggregate`: the day's total at Twitch minus the cheers and aggregates already
  stored for that user and day), never as made-up cheers. Its key is (user, day start, Twitch's
  total), so a repeated backfill stores nothing, and a later gap the same day stores only what
  the total grew by beyond what was heard live. The top 100 of a day only; anonymous cheers have
  no line on the leaderboard.
Every event rebuilt here is marked backfilled and has a message id derived from what it is, so a
second backfill stores nothing new; the store's event keys (a follow's user and second, a stream's,
poll's or prediction's own id per phase) dedupe it against the live event. Subs, cheers, raids,
redemptions, hype trains and goals missed in a gap are gone (cheers but for the Bits
aggregates); the gap row says so by existing.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from streamerhub.bot.eventsub import Gap
from streamerhub.bot.helix import Helix, HelixError
from streamerhub.bot.subscriptions import allowed
from streamerhub.events.text import BITS_AGGREGATE
from streamerhub.log import get_logger

log = get_logger(__name__)

FOLLOW_SCOPE = "moderator:read:followers"
POLL_SCOPE = "channel:read:polls"
PREDICTION_SCOPE = "channel:read:predictions"
BITS_SCOPE = "bits:read"
PACIFIC = zoneinfo.ZoneInfo("America/Los_Angeles")  # Twitch's leaderboard days begin at 00:00 PT
MAX_BITS_DAYS = 7  # a longer gap gets its last week of days
MAX_FOLLOW_PAGES = 50  # 5,000 follows in one gap is already a raid of followers; stop there
MAX_HISTORY_ITEMS = 100  # polls, predictions, archives looked at per gap (newest first)
ARCHIVE_LOOKBACK = dt.timedelta(days=2)  # a stream seen live may have begun this long before


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

    async def drain(self) -> None:
        """Until everything submitted so far is in the database."""


class StreamHistory(Protocol):
    async def last_stream(self, channel_id: str) -> tuple[str, str | None] | None:
        """(kind 'online'/'offline', stream id) of the newest stored stream event, if any."""

    async def last_channel_update(self, channel_id: str) -> tuple[str, str | None] | None:
        """(title, category id) of the newest stored channel.update, if any."""

    async def bits_stored(
        self, channel_id: str, started_at: dt.datetime, ended_at: dt.datetime
    ) -> dict[str, int]:
        """Bits per user already stored for [started_at, ended_at): cheers and aggregates."""


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
    """Backfill one closed gap; returns the message ids handed to the store. One part failing
    (Helix down, a scope gone) does not keep the others from running."""
    # Each step's coroutine is made only when it runs: a stop (cancellation) in the middle
    # leaves no coroutine behind that was never awaited.
    steps: list[tuple[str, Callable[[], Awaitable[list[str]]]]] = []
    if FOLLOW_SCOPE in scopes:
        steps.append(("follows", lambda: backfill_follows(gap, channel, helix, sink)))
    if allowed(POLL_SCOPE, scopes):
        steps.append(("polls", lambda: backfill_polls(gap, channel, helix, sink)))
    if allowed(PREDICTION_SCOPE, scopes):
        steps.append(("predictions", lambda: backfill_predictions(gap, channel, helix, sink)))
    if allowed(BITS_SCOPE, scopes):
        steps.append(("bits", lambda: backfill_bits(gap, channel, helix, sink, history)))
    steps.append(("streams", lambda: reconcile_stream(gap, channel, helix, sink, history)))
    steps.append(("channel", lambda: reconcile_channel(channel, helix, sink, history)))
    ids: list[str] = []
    for what, step in steps:
        try:
            ids += await step()
        except HelixError as exc:
            log.warning("backfill_step_failed", channel_id=channel.id, step=what, error=str(exc))
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
    """Stream transitions during the gap: the stored stream ending (stamped with its archive's
    end when Twitch kept one, else the gap's end), whole streams inside the gap (from their
    archives), and a stream live now that we never saw start."""
    live = await helix.stream(channel.id)
    last = await history.last_stream(channel.id)
    live_id = str(live["id"]) if live is not None else None
    archives = await _archives(gap, channel, helix)
    ids: list[str] = []
    if last is not None and last[0] == "online" and last[1] != live_id:
        kept = archives.get(last[1] or "")
        stamp = _clamp(_archive_end(kept) if kept else None, gap)
        ids += _submit(sink, *offline_event(channel, last[1], stamp))
    for stream_id, video in sorted(archives.items(), key=lambda kv: str(kv[1]["created_at"])):
        begun, ended = _parse(video.get("created_at")), _archive_end(video)
        if stream_id in (live_id, last[1] if last else None) or begun is None or ended is None:
            continue
        if _within(begun, gap) and _within(ended, gap):
            started = str(video["created_at"])
            stream = {"id": stream_id, "type": "live", "started_at": started}
            ids += _submit(sink, *online_event(channel, stream))
            ids += _submit(sink, *offline_event(channel, stream_id, ended))
    if live is not None and (last is None or last[0] == "offline" or last[1] != live_id):
        ids += _submit(sink, *online_event(channel, live))
    return ids


def offline_event(
    channel: Channel, stream_id: str | None, ended: dt.datetime
) -> tuple[str, str, str, str, dict[str, Any]]:
    """A stream.offline notification stamped at `ended`."""
    when = ended.isoformat()
    return (
        f"backfill:stream.offline:{channel.id}:{stream_id or when}",
        "stream.offline",
        "1",
        when,
        _payload("stream.offline", "1", {"broadcaster_user_id": channel.id}, channel.broadcaster()),
    )


async def _archives(gap: Gap, channel: Channel, helix: Helix) -> dict[str, dict[str, Any]]:
    """Archives by stream id, back to ARCHIVE_LOOKBACK before the gap."""
    found: dict[str, dict[str, Any]] = {}
    oldest = gap.started_at - ARCHIVE_LOOKBACK
    async for video in helix.archives(channel.id):
        begun = _parse(video.get("created_at"))
        if begun is None or begun < oldest or len(found) >= MAX_HISTORY_ITEMS:
            break
        if video.get("stream_id"):
            found[str(video["stream_id"])] = video
    return found


def _archive_end(video: dict[str, Any] | None) -> dt.datetime | None:
    """created_at + duration ("3h8m33s") of an archive."""
    begun = _parse((video or {}).get("created_at"))
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", str((video or {}).get("duration")))
    if begun is None or match is None or not any(match.groups()):
        return None
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return begun + dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _clamp(at: dt.datetime | None, gap: Gap) -> dt.datetime:
    """Within the gap: nothing was missed before it, and it ended by its end."""
    end = gap.ended_at or dt.datetime.now(dt.timezone.utc)
    if at is None:
        return end
    return min(end, max(gap.started_at, at))


def _within(at: dt.datetime | None, gap: Gap) -> bool:
    # Helix writes times to the second: widen the start to the whole second it falls in.
    end = gap.ended_at or dt.datetime.now(dt.timezone.utc)
    return at is not None and gap.started_at.replace(microsecond=0) <= at <= end


async def reconcile_channel(
    channel: Channel, helix: Helix, sink: BackfillSink, history: StreamHistory
) -> list[str]:
    """One synthetic channel.update when the title or category now differs from the last one
    stored (a change during the gap; when exactly is unknown, so it is stamped now)."""
    info = await helix.channel_info(channel.id)
    stored = await history.last_channel_update(channel.id)
    if info is None or stored is None:
        return []
    title, category = str(info.get("title") or ""), str(info.get("game_id") or "") or None
    if (title, category) == (stored[0], stored[1]):
        return []
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    event = {
        **channel.broadcaster(),
        "title": title,
        "language": info.get("broadcaster_language"),
        "category_id": category,
        "category_name": info.get("game_name"),
        "content_classification_labels": list(info.get("content_classification_labels") or []),
    }
    condition = {"broadcaster_user_id": channel.id}
    return _submit(
        sink,
        f"backfill:channel.update:{channel.id}:{title}:{category}:{now}",
        "channel.update",
        "2",
        now,
        _payload("channel.update", "2", condition, event),
    )


Rebuilt = tuple[str, str, str, str, dict[str, Any]]  # what _submit takes after the sink
POLL_END = {"COMPLETED": "completed", "TERMINATED": "terminated", "ARCHIVED": "archived"}
PREDICTION_END = {"RESOLVED": "resolved", "CANCELED": "canceled"}


async def backfill_polls(gap: Gap, channel: Channel, helix: Helix, sink: BackfillSink) -> list[str]:
    """channel.poll.begin / end for polls that began or ended inside the gap."""
    return await _replay(helix.polls(channel.id), poll_events, gap, channel, sink)


def poll_events(channel: Channel, poll: dict[str, Any], gap: Gap) -> list[Rebuilt]:
    """The poll's begin and end notifications that fall inside the gap, rebuilt from Helix."""
    started, ended = _parse(poll.get("started_at")), _parse(poll.get("ended_at"))
    base = {
        "id": str(poll.get("id")),
        **channel.broadcaster(),
        "title": poll.get("title"),
        "choices": [
            {
                "id": c.get("id"),
                "title": c.get("title"),
                "votes": c.get("votes", 0),
                "channel_points_votes": c.get("channel_points_votes", 0),
                "bits_votes": c.get("bits_votes", 0),
            }
            for c in poll.get("choices") or []
        ],
        "bits_voting": {
            "is_enabled": bool(poll.get("bits_voting_enabled")),
            "amount_per_vote": poll.get("bits_per_vote") or 0,
        },
        "channel_points_voting": {
            "is_enabled": bool(poll.get("channel_points_voting_enabled")),
            "amount_per_vote": poll.get("channel_points_per_vote") or 0,
        },
        "started_at": poll.get("started_at"),
    }
    out = []
    if started is not None and _within(started, gap):
        ends_at = started + dt.timedelta(seconds=int(poll.get("duration") or 0))
        out.append(
            _history_event(
                channel, "channel.poll.begin", base | {"ends_at": ends_at.isoformat()}, started
            )
        )
    status = POLL_END.get(str(poll.get("status")))
    if status and ended is not None and _within(ended, gap):
        event = base | {"status": status, "ended_at": poll.get("ended_at")}
        out.append(_history_event(channel, "channel.poll.end", event, ended))
    return out


async def backfill_predictions(
    gap: Gap, channel: Channel, helix: Helix, sink: BackfillSink
) -> list[str]:
    """channel.prediction.begin / lock / end for phases that fell inside the gap."""
    return await _replay(helix.predictions(channel.id), prediction_events, gap, channel, sink)


async def _replay(
    history: AsyncIterator[dict[str, Any]],
    events_of: Callable[[Channel, dict[str, Any], Gap], list[Rebuilt]],
    gap: Gap,
    channel: Channel,
    sink: BackfillSink,
) -> list[str]:
    """Submit the notifications rebuilt from the newest MAX_HISTORY_ITEMS items Helix keeps."""
    ids: list[str] = []
    seen = 0
    async for item in history:
        seen += 1
        if seen > MAX_HISTORY_ITEMS:
            break
        for event in events_of(channel, item, gap):
            ids += _submit(sink, *event)
    return ids


def prediction_events(channel: Channel, prediction: dict[str, Any], gap: Gap) -> list[Rebuilt]:
    """The prediction's begin, lock and end notifications inside the gap, rebuilt from Helix."""
    created = _parse(prediction.get("created_at"))
    locked, ended = _parse(prediction.get("locked_at")), _parse(prediction.get("ended_at"))
    base = {
        "id": str(prediction.get("id")),
        **channel.broadcaster(),
        "title": prediction.get("title"),
        "outcomes": list(prediction.get("outcomes") or []),
        "started_at": prediction.get("created_at"),
    }
    out = []
    if created is not None and _within(created, gap):
        window = dt.timedelta(seconds=int(prediction.get("prediction_window") or 0))
        begin = base | {"locks_at": (created + window).isoformat()}
        out.append(_history_event(channel, "channel.prediction.begin", begin, created))
    if locked is not None and _within(locked, gap):
        lock = base | {"locked_at": prediction.get("locked_at")}
        out.append(_history_event(channel, "channel.prediction.lock", lock, locked))
    status = PREDICTION_END.get(str(prediction.get("status")))
    if status and ended is not None and _within(ended, gap):
        end = base | {
            "status": status,
            "winning_outcome_id": prediction.get("winning_outcome_id"),
            "ended_at": prediction.get("ended_at"),
        }
        out.append(_history_event(channel, "channel.prediction.end", end, ended))
    return out


def _history_event(
    channel: Channel, type_: str, event: dict[str, Any], at: dt.datetime
) -> tuple[str, str, str, str, dict[str, Any]]:
    """A poll/prediction phase; its message id names the phase and the occurrence's id."""
    condition = {"broadcaster_user_id": channel.id}
    return (
        f"backfill:{type_}:{channel.id}:{event['id']}",
        type_,
        "1",
        at.isoformat(),
        _payload(type_, "1", condition, event),
    )


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


async def backfill_bits(
    gap: Gap, channel: Channel, helix: Helix, sink: BackfillSink, history: StreamHistory
) -> list[str]:
    """One aggregate per user and Pacific day of the gap: what Twitch's total has beyond what
    is stored. The leaderboard is read first and what was heard is counted after, so a cheer
    arriving meanwhile is counted as heard (an aggregate may miss it, never doubles it)."""
    end = gap.ended_at or dt.datetime.now(dt.timezone.utc)
    ids: list[str] = []
    for day in pacific_days(gap.started_at, end)[-MAX_BITS_DAYS:]:
        board = await helix.bits_leaderboard("day", _z(day))
        lines = [line for line in board.get("data") or [] if line.get("user_id")]
        if not lines:
            continue
        started, ended = _date_range(board, day)
        await sink.drain()
        stored = await history.bits_stored(channel.id, started, ended)
        at = _z(max(gap.started_at, min(end, ended - dt.timedelta(seconds=1))))
        for line in lines:
            missed = int(line.get("score") or 0) - stored.get(str(line["user_id"]), 0)
            if missed > 0:
                ids += _submit(sink, *bits_event(channel, line, started, ended, missed, at))
    return ids


def pacific_days(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The Pacific-time midnights (as UTC instants) of every day [start, end] touches."""
    days: list[dt.datetime] = []
    day = start.astimezone(PACIFIC).date()
    while True:
        midnight = dt.datetime.combine(day, dt.time(), PACIFIC).astimezone(dt.timezone.utc)
        if midnight > end:
            return days
        days.append(midnight)
        day += dt.timedelta(days=1)


def _date_range(board: dict[str, Any], day: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """Twitch's own bounds of the period, or the Pacific day we asked for."""
    span = board.get("date_range") or {}
    started, ended = _parse(span.get("started_at")), _parse(span.get("ended_at"))
    if started is None or ended is None or ended <= started:
        local = day.astimezone(PACIFIC).date() + dt.timedelta(days=1)
        return day, dt.datetime.combine(local, dt.time(), PACIFIC).astimezone(dt.timezone.utc)
    return started, ended


def bits_event(
    channel: Channel,
    line: dict[str, Any],
    started: dt.datetime,
    ended: dt.datetime,
    missed: int,
    at: str,
) -> Rebuilt:
    """The aggregate of one user's Bits missed in a day: not a cheer, a total."""
    user_id, score = str(line["user_id"]), int(line.get("score") or 0)
    event = {
        **channel.broadcaster(),
        "user_id": user_id,
        "user_login": line.get("user_login"),
        "user_name": line.get("user_name"),
        "bits": missed,
        "period": "day",
        "period_started_at": _z(started),
        "period_ended_at": _z(ended),
        "leaderboard_score": score,
    }
    message_id = f"backfill:bits:{channel.id}:{user_id}:{_z(started)}:{score}"
    condition = {"broadcaster_user_id": channel.id}
    return message_id, BITS_AGGREGATE, "1", at, _payload(BITS_AGGREGATE, "1", condition, event)


def _z(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
