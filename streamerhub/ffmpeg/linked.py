"""Twitch accounts linked to push targets: who the account is, and what Twitch said about it.

A link is matched by Twitch's user id: a rename on Twitch changes the login and display name
(refreshed while a job runs), never which account a target belongs to. ffmpeg/ must not import
bot/, so what it needs from Twitch is the `TwitchAccounts` Protocol below; app.py passes the
bot's implementation (bot/accounts.py).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Collection, Mapping, Protocol, Sequence

from streamerhub.db import Database
from streamerhub.errors import InvalidInput, StreamerHubError

LOGIN = re.compile(r"^[A-Za-z0-9_]{3,25}$")


class StreamKeyUnavailable(StreamerHubError):
    """Twitch would not give the account's stream key (scope not granted, not connected)."""


class TwitchUser(Protocol):
    """A Twitch account as GET /users describes it (bot/accounts.py's HelixUser)."""

    @property
    def user_id(self) -> str: ...
    @property
    def login(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def avatar_url(self) -> str: ...


class TwitchStream(Protocol):
    """One entry of Helix GET /streams: the account is live on Twitch (bot's HelixStream)."""

    @property
    def user_id(self) -> str: ...
    @property
    def viewers(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def category(self) -> str: ...


class TwitchAccounts(Protocol):
    """What multistream asks Twitch about linked accounts (the bot implements it).

    Public data (users, follower totals, streams) needs no grant of the account: it is read
    with the app's own token. Only the stream key needs the account connected with
    channel:read:stream_key.
    """

    async def connected_ids(self) -> Collection[str]: ...
    async def user_by_login(self, login: str) -> TwitchUser | None: ...
    async def users_by_id(self, user_ids: Sequence[str]) -> Sequence[TwitchUser]: ...
    async def follower_total(self, user_id: str) -> int: ...
    async def live_streams(self, user_ids: Sequence[str]) -> Sequence[TwitchStream]: ...
    async def stream_key(self, user_id: str) -> str: ...


@dataclass(frozen=True)
class LinkRequest:
    login: str | None
    channel_id: str | None
    fill_key: bool


def parse_link(body: Any) -> LinkRequest:
    """{"login"} or {"channel_id"} (a connected channel), and optionally "fill_key"."""
    if not isinstance(body, Mapping):
        raise InvalidInput("send a JSON object with login or channel_id (and fill_key)")
    unknown = sorted(set(body) - {"login", "channel_id", "fill_key"})
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r} (known: login, channel_id, fill_key)")
    login, channel_id = body.get("login"), body.get("channel_id")
    if (login is None) == (channel_id is None):
        raise InvalidInput(
            "give either login (any Twitch account, by its name) or channel_id (a connected "
            "channel)"
        )
    if login is not None and (not isinstance(login, str) or not LOGIN.match(login.strip())):
        raise InvalidInput("login: a Twitch login is 3 to 25 letters, digits or underscores")
    if channel_id is not None and (not isinstance(channel_id, str) or not channel_id.isdigit()):
        raise InvalidInput("channel_id: a Twitch user id is digits, as text")
    fill_key = body.get("fill_key", False)
    if not isinstance(fill_key, bool):
        raise InvalidInput("fill_key: must be true or false")
    return LinkRequest(login.strip().lower() if login else None, channel_id, fill_key)


@dataclass(frozen=True)
class LinkedTarget:
    """A target of a job whose account Twitch is asked about."""

    job_id: int
    target_id: int
    user_id: str


# Hours on air and stream counts come from the samples: a gap longer than this between two
# samples (daemon down, job stopped) ends a stream rather than counting as air time.
_STATS = """
WITH s AS (
    SELECT at, ours_live, twitch_live, viewers,
           coalesce(lead(at) OVER w - at, interval '0') AS till_next,  -- the last counts 0
           at - lag(at) OVER w AS since_prev,
           lag(ours_live) OVER w AS prev_live
      FROM stream_linked_samples
     WHERE target_id = $1 AND user_id = $2
    WINDOW w AS (PARTITION BY job_id ORDER BY at)
)
SELECT count(*) FILTER (WHERE ours_live AND (prev_live IS NOT TRUE OR since_prev > $3))
           AS streams_pushed,
       coalesce(sum(extract(epoch FROM least(till_next, $3))) FILTER (WHERE ours_live), 0)
           AS seconds_on_air,
       coalesce(sum(extract(epoch FROM least(till_next, $3)))
                FILTER (WHERE ours_live AND twitch_live), 0) AS seconds_confirmed,
       max(viewers) FILTER (WHERE ours_live AND twitch_live) AS peak_viewers,
       avg(viewers) FILTER (WHERE ours_live AND twitch_live) AS avg_viewers,
       count(*) AS samples
  FROM s"""

# The same figures one row per (target, account) pushed to, of one job's samples (what the
# job's export gives, next to its history) or of a time window's (the stream summary's). An
# account unlinked since keeps its rows (by user id). $2 is the longest gap.
_PER_ACCOUNT = """
WITH s AS (
    SELECT target_id, user_id, at, ours_live, twitch_live, viewers,
           coalesce(lead(at) OVER w - at, interval '0') AS till_next,
           at - lag(at) OVER w AS since_prev,
           lag(ours_live) OVER w AS prev_live
      FROM stream_linked_samples
     WHERE {where}
    WINDOW w AS (PARTITION BY job_id, target_id, user_id ORDER BY at)
)
SELECT s.target_id, t.name AS target_name, s.user_id,
       (SELECT a.login FROM stream_linked_accounts a WHERE a.user_id = s.user_id
         ORDER BY a.refreshed_at DESC LIMIT 1) AS login,
       (SELECT a.display_name FROM stream_linked_accounts a WHERE a.user_id = s.user_id
         ORDER BY a.refreshed_at DESC LIMIT 1) AS display_name,
       count(*) FILTER (WHERE ours_live AND (prev_live IS NOT TRUE OR since_prev > $2))
           AS streams_pushed,
       coalesce(sum(extract(epoch FROM least(till_next, $2))) FILTER (WHERE ours_live), 0)
           AS seconds_on_air,
       coalesce(sum(extract(epoch FROM least(till_next, $2)))
                FILTER (WHERE ours_live AND twitch_live), 0) AS seconds_confirmed,
       max(viewers) FILTER (WHERE ours_live AND twitch_live) AS peak_viewers,
       avg(viewers) FILTER (WHERE ours_live AND twitch_live) AS avg_viewers,
       count(*) AS samples,
       min(at) FILTER (WHERE ours_live) AS first_live_at,
       max(at) FILTER (WHERE ours_live) AS last_live_at
  FROM s LEFT JOIN stream_targets t ON t.id = s.target_id
 GROUP BY s.target_id, t.name, s.user_id
 ORDER BY s.target_id, s.user_id"""
_JOB_STATS = _PER_ACCOUNT.format(where="job_id = $1")
_WINDOW_STATS = _PER_ACCOUNT.format(where="at >= $1 AND at < $3")


class LinkedStore:
    """stream_linked_accounts and stream_linked_samples."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def link(
        self, target_id: int, user: TwitchUser, followers: int | None, via: str, key_source: str
    ) -> None:
        await self.db.pool.execute(
            """
            INSERT INTO stream_linked_accounts (target_id, user_id, login, display_name,
                                                avatar_url, followers, via, key_source)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (target_id) DO UPDATE SET
                user_id = EXCLUDED.user_id, login = EXCLUDED.login,
                display_name = EXCLUDED.display_name, avatar_url = EXCLUDED.avatar_url,
                followers = EXCLUDED.followers, via = EXCLUDED.via,
                key_source = EXCLUDED.key_source, linked_at = now(), refreshed_at = now()""",
            target_id,
            user.user_id,
            user.login,
            user.display_name,
            user.avatar_url,
            followers,
            via,
            key_source,
        )

    async def unlink(self, target_id: int) -> bool:
        done = await self.db.pool.execute(
            "DELETE FROM stream_linked_accounts WHERE target_id = $1", target_id
        )
        return not done.endswith(" 0")

    async def user_of(self, target_id: int) -> str | None:
        user_id: str | None = await self.db.pool.fetchval(
            "SELECT user_id FROM stream_linked_accounts WHERE target_id = $1", target_id
        )
        return user_id

    async def login_of(self, target_id: int) -> str | None:
        login: str | None = await self.db.pool.fetchval(
            "SELECT login FROM stream_linked_accounts WHERE target_id = $1", target_id
        )
        return login

    async def refresh(self, user: TwitchUser, followers: int | None) -> None:
        """What Twitch says now about an account (matched by id: renames follow)."""
        await self.db.pool.execute(
            """
            UPDATE stream_linked_accounts
               SET login = $2, display_name = $3, avatar_url = $4,
                   followers = coalesce($5, followers), refreshed_at = now()
             WHERE user_id = $1""",
            user.user_id,
            user.login,
            user.display_name,
            user.avatar_url,
            followers,
        )

    async def of_running_jobs(self) -> list[LinkedTarget]:
        """Linked targets of jobs that should be running (whatever FFmpeg is doing)."""
        rows = await self.db.pool.fetch(
            """
            SELECT t.job_id, t.target_id, a.user_id
              FROM stream_job_targets t
              JOIN stream_jobs j ON j.id = t.job_id
              JOIN stream_linked_accounts a ON a.target_id = t.target_id
             WHERE j.desired = 'running' AND t.desired = 'running'
             ORDER BY t.job_id, t.target_id"""
        )
        return [LinkedTarget(r["job_id"], r["target_id"], r["user_id"]) for r in rows]

    async def record(
        self, linked: LinkedTarget, ours_live: bool, stream: TwitchStream | None
    ) -> None:
        await self.db.pool.execute(
            """
            INSERT INTO stream_linked_samples (job_id, target_id, user_id, ours_live,
                                               twitch_live, viewers, title, category)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            linked.job_id,
            linked.target_id,
            linked.user_id,
            ours_live,
            stream is not None,
            stream.viewers if stream else None,
            stream.title if stream else None,
            stream.category if stream else None,
        )

    async def stats(self, target_id: int, max_gap_s: float) -> dict[str, Any] | None:
        """The linked account's figures over every job that pushed to it through this target,
        from Twitch's own answers: separate from the main channel's analytics."""
        user_id = await self.user_of(target_id)
        if user_id is None:
            return None
        row = await self.db.pool.fetchrow(
            _STATS, target_id, user_id, dt.timedelta(seconds=max_gap_s)
        )
        assert row is not None  # an aggregate always returns one row
        avg = row["avg_viewers"]
        return {
            "user_id": user_id,
            "streams_pushed": row["streams_pushed"],
            "hours_on_air": round(float(row["seconds_on_air"]) / 3600, 3),
            "hours_confirmed_live": round(float(row["seconds_confirmed"]) / 3600, 3),
            "peak_viewers": row["peak_viewers"],
            "avg_viewers": round(float(avg), 1) if avg is not None else None,
            "samples": row["samples"],
        }

    async def job_stats(self, job_id: int, max_gap_s: float) -> list[dict[str, Any]]:
        """Per linked account one job pushed to: the same figures as `stats`, for that job."""
        rows = await self.db.pool.fetch(_JOB_STATS, job_id, dt.timedelta(seconds=max_gap_s))
        return [{"job_id": job_id, **_account_figures(r)} for r in rows]

    async def window_stats(
        self, start: dt.datetime, end: dt.datetime, max_gap_s: float
    ) -> list[dict[str, Any]]:
        """Per linked account pushed to in [start, end), every job: the same figures as
        `job_stats`, from the samples inside the window only."""
        gap = dt.timedelta(seconds=max_gap_s)
        return [
            _account_figures(r) for r in await self.db.pool.fetch(_WINDOW_STATS, start, gap, end)
        ]


def _account_figures(r: Any) -> dict[str, Any]:
    return {
        "target_id": r["target_id"],
        "target_name": r["target_name"],
        "user_id": r["user_id"],
        "login": r["login"],
        "display_name": r["display_name"],
        "streams_pushed": r["streams_pushed"],
        "hours_on_air": round(float(r["seconds_on_air"]) / 3600, 3),
        "hours_confirmed_live": round(float(r["seconds_confirmed"]) / 3600, 3),
        "peak_viewers": r["peak_viewers"],
        "avg_viewers": None if r["avg_viewers"] is None else round(float(r["avg_viewers"]), 1),
        "samples": r["samples"],
        "first_live_at": r["first_live_at"],
        "last_live_at": r["last_live_at"],
    }
