"""The EventSub subscriptions a channel wants: creating them on a session, and recording them.

Twitch closes an unused session (4003) when its keepalive window ends, so a fresh session's
subscriptions are created concurrently inside that window; what is not answered by then is given
up and retried in the background by the client. At start no session of ours exists yet, so every
WebSocket subscription of the token is stale and deleted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable, Collection, Sequence

from streamerhub.bot.helix import Helix, HelixError
from streamerhub.db import Database
from streamerhub.log import get_logger

log = get_logger(__name__)

SUBSCRIBE_CONCURRENCY = 8

# type, version, scope (None = public). Raids are subscribed twice: received and sent.
SUBSCRIPTIONS: tuple[tuple[str, str, str | None], ...] = (
    ("channel.follow", "2", "moderator:read:followers"),
    ("channel.subscribe", "1", "channel:read:subscriptions"),
    ("channel.subscription.gift", "1", "channel:read:subscriptions"),
    ("channel.subscription.message", "1", "channel:read:subscriptions"),
    ("channel.subscription.end", "1", "channel:read:subscriptions"),
    ("channel.cheer", "1", "bits:read"),
    ("stream.online", "1", None),
    ("stream.offline", "1", None),
    ("channel.raid", "1", None),
    ("channel.channel_points_custom_reward_redemption.add", "1", "channel:read:redemptions"),
    ("channel.channel_points_custom_reward_redemption.update", "1", "channel:read:redemptions"),
    ("channel.update", "2", None),
    *(
        (f"channel.hype_train.{p}", "2", "channel:read:hype_train")
        for p in ("begin", "progress", "end")
    ),
    *((f"channel.poll.{p}", "1", "channel:read:polls") for p in ("begin", "progress", "end")),
    *(
        (f"channel.prediction.{p}", "1", "channel:read:predictions")
        for p in ("begin", "progress", "lock", "end")
    ),
    *((f"channel.goal.{p}", "1", "channel:read:goals") for p in ("begin", "progress", "end")),
    ("channel.chat.message", "1", "user:read:chat"),
)
KNOWN_TYPES = frozenset(t for t, _, _ in SUBSCRIPTIONS)
WITHDRAWN = "revoked:version_removed"


def allowed(scope: str | None, granted: Collection[str]) -> bool:
    """Twitch accepts the read scope or its manage counterpart (channel:manage:polls serves
    channel.poll.* as well as channel:read:polls does)."""
    if scope is None or scope in granted:
        return True
    return ":read:" in scope and scope.replace(":read:", ":manage:", 1) in granted


@dataclass(frozen=True)
class Wanted:
    """One subscription to create: type, version, the scope it needs and its condition."""

    type: str
    version: str
    scope: str | None
    condition: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        """The type, plus the raid direction (two raid subscriptions share a type)."""
        keys = dict(self.condition)
        if "to_broadcaster_user_id" in keys:
            return f"{self.type} (received)"
        if "from_broadcaster_user_id" in keys:
            return f"{self.type} (sent)"
        return self.type


def build_plan(channel_id: str) -> list[Wanted]:
    """Every subscription a channel wants, conditions filled in."""
    plan = []
    for type_, version, scope in SUBSCRIPTIONS:
        if type_ == "channel.raid":
            for key in ("to_broadcaster_user_id", "from_broadcaster_user_id"):
                plan.append(Wanted(type_, version, scope, ((key, channel_id),)))
            continue
        condition = [("broadcaster_user_id", channel_id)]
        if type_ == "channel.follow":
            condition.append(("moderator_user_id", channel_id))
        if type_ == "channel.chat.message":
            condition.append(("user_id", channel_id))  # read as the streamer's own account
        plan.append(Wanted(type_, version, scope, tuple(condition)))
    return plan


@dataclass
class SubscriptionResult:
    """What Twitch answered for one wanted subscription."""

    wanted: Wanted
    status: str  # enabled, missing_scope, revoked:<reason>, error
    twitch_id: str | None = None
    detail: str | None = None


class Subscriber:
    """Creates one channel's subscriptions on a session and knows which ids are ours."""

    def __init__(self, channel_id: str, helix: Helix, scopes: Callable[[], frozenset[str]]) -> None:
        self.channel_id, self.helix, self.scopes = channel_id, helix, scopes
        self.plan = build_plan(channel_id)
        self.known: set[str] = set()  # subscription ids we created (carried over reconnects)
        self.subscribing: str | None = None  # session id being subscribed right now
        self.inflight: dict[Wanted, asyncio.Future[SubscriptionResult]] = {}  # sent, unanswered

    async def create_all(self, session_id: str, window: float) -> list[SubscriptionResult]:
        """The whole plan, concurrently; what is not answered within `window` s is an error.

        A POST already sent is never cancelled at the window's end: Twitch may have applied it,
        and a re-sent POST would then meet 409. Its answer is awaited by the retry instead
        (`create_each`); only the channel stopping cancels it."""
        scopes = self.scopes()
        self.known = set()
        self.cancel_inflight()
        self.subscribing = session_id
        limit = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)
        tasks = [
            asyncio.ensure_future(self._create(limit, w, session_id, scopes)) for w in self.plan
        ]
        try:
            _, pending = await asyncio.wait(tasks, timeout=window)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            self.subscribing = None
        for task, wanted in zip(tasks, self.plan, strict=True):
            if task in pending:
                self.inflight[wanted] = task
                task.add_done_callback(_retrieve)  # a late failure nobody awaits is not an error
        return _collect(tasks, self.plan, pending)

    def cancel_inflight(self) -> None:
        """The channel stops or its session is gone: late answers no longer matter."""
        for task in self.inflight.values():
            task.cancel()
        self.inflight = {}

    async def create_each(self, wanted: list[Wanted], session_id: str) -> list[SubscriptionResult]:
        """Create these subscriptions again (a retry of those that failed); one whose first POST
        is still under way gets that POST's answer rather than a second POST."""
        limit = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)
        return list(
            await asyncio.gather(*(self._create_once(limit, w, session_id) for w in wanted))
        )

    async def _create_once(
        self, limit: asyncio.Semaphore, wanted: Wanted, session_id: str
    ) -> SubscriptionResult:
        task = self.inflight.pop(wanted, None)
        if task is not None:
            try:
                return await task
            except HelixError as exc:
                return _failed(wanted, exc)
        return await self._create(limit, wanted, session_id, self.scopes())

    def racing(self, sub: dict[str, Any], session_id: str) -> bool:
        """A notification may beat our POST's answer (or the answer was lost): Twitch sends a
        socket only the subscriptions of its own session, so one naming the session it arrived
        on is ours, and is adopted."""
        transport = sub.get("transport") or {}
        if session_id and transport.get("session_id") == session_id and sub.get("id"):
            self.known.add(str(sub["id"]))
            return True
        return False

    async def _create(
        self, limit: asyncio.Semaphore, wanted: Wanted, session_id: str, scopes: frozenset[str]
    ) -> SubscriptionResult:
        if not allowed(wanted.scope, scopes):
            return SubscriptionResult(wanted, "missing_scope", detail=f"needs {wanted.scope}")
        async with limit:
            try:
                sub = await self.helix.create_subscription(
                    wanted.type, wanted.version, dict(wanted.condition), session_id
                )
            except HelixError as exc:
                if exc.status != 409:
                    return _failed(wanted, exc)
                found = await self._adopt(wanted, session_id)
                if found is None:
                    return _failed(wanted, exc)
                sub = found
        self.known.add(str(sub["id"]))
        return SubscriptionResult(wanted, "enabled", str(sub["id"]))

    async def _adopt(self, wanted: Wanted, session_id: str) -> dict[str, Any] | None:
        """409: an earlier POST of ours reached Twitch but its answer did not. The subscription
        exists on our session: find it so its notifications are known as ours."""
        try:
            subs = await self.helix.subscriptions(type=wanted.type)
        except HelixError as exc:
            log.warning("eventsub_adopt_list_failed", channel_id=self.channel_id, error=str(exc))
            return None
        condition = dict(wanted.condition)
        for sub in subs:
            transport = sub.get("transport") or {}
            if (
                transport.get("session_id") == session_id
                and sub.get("version") == wanted.version
                and sub.get("condition") == condition
            ):
                log.info(
                    "eventsub_subscription_adopted", channel_id=self.channel_id, type=wanted.type
                )
                return sub
        return None

    async def delete_stale(self) -> None:
        """At start no session of ours exists: every WebSocket subscription of the token is
        stale."""
        try:
            subs = await self.helix.subscriptions()
        except HelixError as exc:
            log.warning("eventsub_stale_list_failed", channel_id=self.channel_id, error=str(exc))
            return
        stale = [s["id"] for s in subs if (s.get("transport") or {}).get("method") == "websocket"]
        limit = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)
        await asyncio.gather(*(self._delete(limit, s) for s in stale))
        if stale:
            log.info("eventsub_stale_deleted", channel_id=self.channel_id, count=len(stale))

    async def _delete(self, limit: asyncio.Semaphore, sub_id: str) -> None:
        async with limit:
            try:
                await self.helix.delete_subscription(sub_id)
            except HelixError as exc:
                log.warning(
                    "eventsub_stale_delete_failed", channel_id=self.channel_id, error=str(exc)
                )


def _retrieve(task: asyncio.Future[SubscriptionResult]) -> None:
    if not task.cancelled():
        task.exception()


def _collect(
    tasks: Sequence[asyncio.Future[SubscriptionResult]],
    plan: list[Wanted],
    pending: Collection[asyncio.Future[SubscriptionResult]],
) -> list[SubscriptionResult]:
    """The answers in plan order: unanswered ones are errors, the first exception is raised."""
    results: list[SubscriptionResult] = []
    errors: list[BaseException] = []
    for task, wanted in zip(tasks, plan, strict=True):
        if task in pending:
            results.append(
                SubscriptionResult(wanted, "error", detail="no answer within the keepalive window")
            )
        elif (error := task.exception()) is not None:  # read every one: none left unretrieved
            errors.append(error)
        else:
            results.append(task.result())
    if errors:
        raise errors[0]
    return results


def _failed(wanted: Wanted, exc: HelixError) -> SubscriptionResult:
    if exc.status == 403:
        return SubscriptionResult(wanted, "missing_scope", detail=exc.message)
    if exc.status == 410:  # only a newer release can subscribe to what Twitch serves now
        detail = f"Twitch withdrew version {wanted.version}: update StreamerHub"
        return SubscriptionResult(wanted, WITHDRAWN, detail=detail)
    if exc.status == 409:  # exists, yet not found on our session: say so, never guess an id
        return SubscriptionResult(wanted, "error", detail=f"409: {exc.message}")
    return SubscriptionResult(wanted, "error", detail=f"{exc.status}: {exc.message}")


# ----------------------------------------------------------------------------- recording


def summarise_subscriptions(results: list[SubscriptionResult]) -> dict[str, Any]:
    """enabled count plus the labels that are missing a scope, revoked or failing."""
    out: dict[str, Any] = {"enabled": 0, "missing_scope": [], "revoked": [], "error": []}
    for result in results:
        if result.status == "enabled":
            out["enabled"] += 1
        elif result.status.startswith("revoked"):
            out["revoked"].append(result.wanted.label)
        elif result.status == "missing_scope":
            out["missing_scope"].append(result.wanted.label)
        else:
            out["error"].append(result.wanted.label)
    return out


async def save_subscriptions(
    db: Database, channel_id: str, results: list[SubscriptionResult]
) -> None:
    """Upsert eventsub_subscriptions; the two raid subscriptions share one (type, version) row."""
    rows: dict[tuple[str, str], list[SubscriptionResult]] = {}
    for result in results:
        rows.setdefault((result.wanted.type, result.wanted.version), []).append(result)
    args = [(channel_id, type_, version, *_row(group)) for (type_, version), group in rows.items()]
    async with db.pool.acquire() as conn:
        await conn.executemany(SAVE_SUBSCRIPTION, args)


def _row(group: list[SubscriptionResult]) -> tuple[str, str | None, str | None]:
    """status (the worst of the group), twitch ids and details of one stored row."""
    worst = next((r for r in group if r.status != "enabled"), group[0])
    ids = ",".join(r.twitch_id for r in group if r.twitch_id) or None
    details = (
        "; ".join(
            f"{r.wanted.label}: {r.detail}" if len(group) > 1 else r.detail
            for r in group
            if r.detail
        )
        or None
    )
    return worst.status, ids, details


SAVE_SUBSCRIPTION = """
INSERT INTO eventsub_subscriptions (channel_id, subscription_type, version, status, twitch_id,
                                    detail, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (channel_id, subscription_type, version) DO UPDATE SET
    status = EXCLUDED.status, twitch_id = EXCLUDED.twitch_id, detail = EXCLUDED.detail,
    updated_at = now()"""


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class StoredSubscription:
    """One row of eventsub_subscriptions."""

    channel_id: str
    subscription_type: str
    version: str
    status: str
    detail: str | None
    updated_at: dt.datetime


@dataclass(frozen=True)
class SubscriptionHealth:
    """A channel's stored subscriptions counted by status."""

    channel_id: str
    expected: int
    enabled: int
    missing_scope: int
    revoked: int
    failing: int


async def stored_subscriptions(
    db: Database, problems_only: bool = False
) -> list[StoredSubscription]:
    """Every stored subscription (or those not enabled), by channel and type."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(PROBLEMS if problems_only else STORED)
    return [
        StoredSubscription(
            r["channel_id"],
            r["subscription_type"],
            r["version"],
            r["status"],
            r["detail"],
            r["updated_at"],
        )
        for r in rows
    ]


async def subscription_health(db: Database) -> dict[str, SubscriptionHealth]:
    """Each channel's subscriptions counted by status, by channel id."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(HEALTH)
    return {
        r["channel_id"]: SubscriptionHealth(
            r["channel_id"],
            r["expected"],
            r["enabled"],
            r["missing_scope"],
            r["revoked"],
            r["failing"],
        )
        for r in rows
    }


STORED = """
SELECT channel_id, subscription_type, version, status, detail, updated_at
  FROM eventsub_subscriptions ORDER BY channel_id, subscription_type"""

PROBLEMS = """
SELECT channel_id, subscription_type, version, status, detail, updated_at
  FROM eventsub_subscriptions WHERE status <> 'enabled'
 ORDER BY channel_id, subscription_type"""

HEALTH = """
SELECT channel_id,
       count(*) AS expected,
       count(*) FILTER (WHERE status = 'enabled') AS enabled,
       count(*) FILTER (WHERE status = 'missing_scope') AS missing_scope,
       count(*) FILTER (WHERE status LIKE 'revoked%') AS revoked,
       count(*) FILTER (WHERE status NOT IN ('enabled', 'missing_scope')
                          AND status NOT LIKE 'revoked%') AS failing
  FROM eventsub_subscriptions GROUP BY channel_id"""
