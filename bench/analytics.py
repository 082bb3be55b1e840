#!/usr/bin/env python3
"""Analytics figures on a realistic history: dashboard query p95s, all-time charts against the
naive GROUP BY date_trunc over raw rows, and what the rollup triggers cost the event store.

Generates (generate_series in SQL, triggers off, then `analytics_rebuild()` and
`analytics_activity_rebuild()`) N events over 3 years for one channel — chat messages
(`--chat-share`, 80 % by default), Bits uses, ad breaks, shoutouts, and follows, subs, resubs,
gifts, cheers, raids — 1,000 stream sessions with a
viewer sample each minute, title changes, totals snapshots every 15 min and a few EventSub gaps,
in a fresh embedded PostgreSQL (temp dir, stopped at the end even on error). Then it times every
dashboard query (cards and chart for day/week/month/all, the sessions list and one session):
after 6 warm-up rounds, 100 rounds in which the queries take turns (a daemon's steady state, and
a passing disturbance spreads over all queries), then the naive all-time chart in the same run,
and measures ingest through the
store's statement shapes (raw + one INSERT per typed table per batch) with the triggers on and
off, alternating. Prints one JSON object. Targets: every query p95 ≤ 50 ms, all-time charts
≥ 20× faster than naive, ingest slowed by ≤ 20 %.

    .venv/bin/python bench/analytics.py --events 3000000
    .venv/bin/python bench/analytics.py --events 30000000 --skip-ingest --baseline 3m.json

The issue-13 target: at 30M events (chat ≥ 80 %) every query p95 ≤ 50 ms and
p95(30M) / p95(3M) ≤ 1.5 (run both; `--baseline` adds the ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncpg

from streamerhub.analytics.periods import Calendar
from streamerhub.analytics.queries import load_period, stat_cards, time_series
from streamerhub.analytics.sessions import get_session, list_sessions
from streamerhub.db import Database, EmbeddedPostgres, create_pool
from streamerhub.log import setup_logging

CHANNEL = "1000"
TZ = "Europe/Paris"
UTC = timezone.utc
YEARS = 3
LONG = 6 * 3600  # seconds: a pool's command_timeout (60 s) is far too short for 10M rows
TRIGGERS = [  # the rollup triggers an INSERT of the store fires
    ("twitch_follows", "analytics_follows_ins"),
    ("twitch_subscriptions", "analytics_subscriptions_ins"),
    ("twitch_subscriptions", "analytics_subscription_supporters_ins"),
    ("twitch_cheers", "analytics_cheers_ins"),
    ("twitch_cheers", "analytics_cheer_supporters_ins"),
    ("twitch_raids", "analytics_raids_ins"),
    ("twitch_events", "analytics_events_ins"),
]

SESSION_CHATTER_TRIGGERS = (
    "analytics_session_chatters_ins",
    "analytics_session_chatters_upd",
    "analytics_session_chatters_del",
)

# Share of each kind of event: (kind, subscription type, version, share).
MIX = [
    ("follow", "channel.follow", "2", 0.35),
    ("sub", "channel.subscribe", "1", 0.08),
    ("gifted", "channel.subscribe", "1", 0.05),
    ("resub", "channel.subscription.message", "1", 0.07),
    ("gift", "channel.subscription.gift", "1", 0.01),
    ("end", "channel.subscription.end", "1", 0.03),
    ("cheer", "channel.cheer", "1", 0.405),
    ("raid_in", "channel.raid", "1", 0.004),
    ("raid_out", "channel.raid", "1", 0.001),
]


def _kind_case() -> str:
    """SQL CASE turning the uniform x.rk into an event kind index following MIX."""
    edges, total = [], 0.0
    for i, (*_, share) in enumerate(MIX):
        total += share
        edges.append(f"WHEN x.rk < {total:.6f} THEN {i}")
    return "CASE " + " ".join(edges) + f" ELSE {len(MIX) - 1} END"


GENERATE = [
    "SELECT setseed(0.4242)",
    "INSERT INTO twitch_channels (channel_id, login, display_name) VALUES ('{ch}', 'streamer', 'Streamer')",
    # Sessions: one every ~26 h, starting in the evening, 2-8 h long; the last one is live now.
    """CREATE UNLOGGED TABLE bench_sessions AS
       SELECT i, 'stream-' || i AS stream_id,
              date_trunc('second', {start} + (i * {span_s}::float8 / {sessions}) * interval '1 second'
                                   + (random() * 4 * 3600) * interval '1 second') AS started_at,
              (2 * 3600 + random() * 6 * 3600)::int AS dur_s
         FROM generate_series(0, {sessions} - 2) i
       UNION ALL
       SELECT {sessions} - 1, 'stream-live', date_trunc('second', {now} - interval '80 minutes'),
              NULL""",
    """INSERT INTO twitch_events (message_id, subscription_type, subscription_version, channel_id,
                                  occurred_at, received_at, payload)
       SELECT 'on-' || i, 'stream.online', '1', '{ch}', started_at, started_at,
              jsonb_build_object('event', jsonb_build_object('id', stream_id, 'type', 'live'))
         FROM bench_sessions
       UNION ALL
       SELECT 'off-' || i, 'stream.offline', '1', '{ch}', started_at + dur_s * interval '1 second',
              started_at + dur_s * interval '1 second', '{{"event": {{}}}}'
         FROM bench_sessions WHERE dur_s IS NOT NULL
       UNION ALL
       SELECT 'up-' || i || '-' || k, 'channel.update', '2', '{ch}',
              started_at + (k * 30 - 10) * interval '1 minute', now(),
              jsonb_build_object('event', jsonb_build_object('title', 'Stream ' || i || ' part ' || k))
         FROM bench_sessions, generate_series(0, 1) k""",
    """INSERT INTO twitch_streams (message_id, channel_id, kind, stream_id, stream_type, started_at, occurred_at)
       SELECT 'on-' || i, '{ch}', 'online', stream_id, 'live', started_at, started_at FROM bench_sessions
       UNION ALL
       SELECT 'off-' || i, '{ch}', 'offline', NULL, NULL, NULL, started_at + dur_s * interval '1 second'
         FROM bench_sessions WHERE dur_s IS NOT NULL""",
    """INSERT INTO twitch_channel_updates (message_id, channel_id, title, language, category_name, occurred_at)
       SELECT 'up-' || i || '-' || k, '{ch}', 'Stream ' || i || ' part ' || k, 'en',
              CASE WHEN k = 0 THEN 'Just Chatting' ELSE 'Elden Ring' END,
              started_at + (k * 30 - 10) * interval '1 minute'
         FROM bench_sessions, generate_series(0, 1) k""",
    # A viewer sample each minute while live (0.5 % of polls missed), audience growing over the years.
    """INSERT INTO viewer_samples (channel_id, stream_id, sampled_at, viewer_count, max_span_s, title,
                                   category_name)
       SELECT '{ch}', s.stream_id, t,
              greatest(0, (200 + 1800 * s.i / {sessions}.0)
                          * (0.6 + 0.4 * sin(pi() * extract(epoch FROM t - s.started_at)
                                               / coalesce(s.dur_s, 14400)))
                          * (0.9 + 0.2 * random()))::int,
              90, 'Stream ' || s.i, 'Just Chatting'
         FROM bench_sessions s,
              generate_series(s.started_at + interval '1 minute',
                              coalesce(s.started_at + s.dur_s * interval '1 second', {now}),
                              interval '1 minute') t
        WHERE random() > 0.005""",
    # The events: 85 % during streams, the rest any time.
    f"""CREATE UNLOGGED TABLE bench_events AS
       SELECT x.g, {_kind_case()} AS kind,
              CASE WHEN x.in_stream THEN s.started_at + coalesce(s.dur_s, 4800) * x.f * interval '1 second'
                   ELSE {{start}} + {{span_s}} * x.f * interval '1 second' END AS at,
              x.u, x.amount
         FROM (SELECT g, random() < 0.85 AS in_stream, floor(random() * {{sessions}})::int AS si,
                      random() AS f, random() AS rk, (random() * 500000)::int AS u,
                      (1 + random() * 999)::int AS amount
                 FROM generate_series(1, {{events}}) g) x
         JOIN bench_sessions s ON s.i = x.si""",
    # Raw rows, as the store writes them.
    """INSERT INTO twitch_events (message_id, subscription_type, subscription_version, channel_id,
                                  occurred_at, received_at, payload)
       SELECT 'ev' || e.g, m.type, m.version, '{ch}', e.at, e.at,
              jsonb_build_object('event', jsonb_build_object(
                  'user_id', 'u' || e.u, 'user_login', 'user' || e.u, 'user_name', 'User' || e.u,
                  'broadcaster_user_id', '{ch}', 'bits', CASE WHEN m.kind = 'cheer' THEN e.amount END))
         FROM bench_events e JOIN bench_mix m ON m.i = e.kind""",
    """INSERT INTO twitch_follows (message_id, channel_id, user_id, user_login, user_name, followed_at)
       SELECT 'ev' || g, '{ch}', 'u' || u, 'user' || u, 'User' || u, at FROM bench_events WHERE kind = 0""",
    """INSERT INTO twitch_subscriptions (message_id, channel_id, kind, user_id, user_login, user_name, tier,
                                         is_gift, gift_total, cumulative_months, occurred_at)
       SELECT 'ev' || g, '{ch}', CASE kind WHEN 1 THEN 'sub' WHEN 2 THEN 'sub' WHEN 3 THEN 'resub'
                                           WHEN 4 THEN 'gift' ELSE 'end' END,
              'u' || u, 'user' || u, 'User' || u, '1000', kind = 2,
              CASE WHEN kind = 4 THEN (ARRAY[1, 1, 5, 5, 10, 20, 50, 100])[1 + amount % 8] END,
              CASE WHEN kind = 3 THEN 1 + amount % 40 END, at
         FROM bench_events WHERE kind BETWEEN 1 AND 5""",
    """INSERT INTO twitch_cheers (message_id, channel_id, user_id, user_login, user_name, bits, occurred_at)
       SELECT 'ev' || g, '{ch}', 'u' || u, 'user' || u, 'User' || u, amount, at FROM bench_events
        WHERE kind = 6""",
    """INSERT INTO twitch_raids (message_id, channel_id, from_user_id, from_user_login, from_user_name,
                                 to_user_id, to_user_login, to_user_name, viewers, occurred_at)
       SELECT 'ev' || g, '{ch}', CASE WHEN kind = 7 THEN 'u' || u ELSE '{ch}' END, 'x', 'x',
              CASE WHEN kind = 7 THEN '{ch}' ELSE 'u' || u END, 'y', 'y', amount, at
         FROM bench_events WHERE kind IN (7, 8)""",
    # Chat ({chat} messages, raw rows only: analytics reads them by type), a few heavy chatters
    # writing most (random()^3 over 200,000 people), spread over the streams.
    """INSERT INTO twitch_events (message_id, subscription_type, subscription_version, channel_id,
                                  occurred_at, received_at, payload)
       SELECT 'chat' || x.g, 'channel.chat.message', '1', '{ch}', x.at, x.at,
              jsonb_build_object('event', jsonb_build_object(
                  'broadcaster_user_id', '{ch}', 'chatter_user_id', 'u' || x.u,
                  'chatter_user_login', 'user' || x.u, 'chatter_user_name', 'User' || x.u,
                  'message_id', 'cm' || x.g, 'message_type', 'text',
                  'message', jsonb_build_object('text', 'message number ' || x.g)))
         FROM (SELECT g, floor(200000 * power(random(), 3))::int AS u,
                      date_trunc('second', s.started_at
                                 + coalesce(s.dur_s, 4800) * random() * interval '1 second') AS at
                 FROM generate_series(1, {chat}) g
                 JOIN bench_sessions s ON s.i = g % {sessions}) x""",
    # Power-ups and combos (1 % of the events), 6 ad breaks and a third of a shoutout per stream.
    """INSERT INTO twitch_events (message_id, subscription_type, subscription_version, channel_id,
                                  occurred_at, received_at, payload)
       SELECT 'bu' || g, 'channel.bits.use', '1', '{ch}', at, at,
              jsonb_build_object('event', jsonb_build_object(
                  'broadcaster_user_id', '{ch}', 'user_id', 'u' || g % 5000,
                  'user_login', 'user' || g % 5000, 'bits', 10 + g % 490,
                  'type', CASE WHEN g % 3 = 0 THEN 'combo' ELSE 'power_up' END))
         FROM (SELECT g, s.started_at + coalesce(s.dur_s, 4800) * random() * interval '1 second' AS at
                 FROM generate_series(1, {bits_uses}) g
                 JOIN bench_sessions s ON s.i = g % {sessions}) x
       UNION ALL
       SELECT 'ad' || s.i || '-' || k, 'channel.ad_break.begin', '1', '{ch}',
              s.started_at + k * interval '30 minutes', s.started_at + k * interval '30 minutes',
              jsonb_build_object('event', jsonb_build_object(
                  'broadcaster_user_id', '{ch}', 'duration_seconds', 90, 'is_automatic', true))
         FROM bench_sessions s, generate_series(1, 6) k
        WHERE s.started_at + k * interval '30 minutes' < {now}
       UNION ALL
       SELECT 'so' || s.i, 'channel.shoutout.receive', '1', '{ch}',
              s.started_at + interval '10 minutes', s.started_at + interval '10 minutes',
              jsonb_build_object('event', jsonb_build_object(
                  'broadcaster_user_id', '{ch}', 'from_broadcaster_user_id', 'pal' || s.i,
                  'viewer_count', 50 + s.i % 400))
         FROM bench_sessions s WHERE s.i % 3 = 0""",
    # Twitch totals every 15 min, and a dozen EventSub outages.
    """INSERT INTO twitch_totals (channel_id, taken_at, followers, subscribers, subscriber_points)
       SELECT '{ch}', t, (1000 + {follows} * extract(epoch FROM t - {start}) / {span_s})::int,
              (400 + 200 * sin(extract(epoch FROM t - {start}) / 5e6))::int,
              (500 + 250 * sin(extract(epoch FROM t - {start}) / 5e6))::int
         FROM generate_series({start}, {now}, interval '15 minutes') t""",
    """INSERT INTO eventsub_gaps (channel_id, started_at, ended_at, reason, backfilled_at, backfilled)
       SELECT '{ch}', t, t + interval '7 minutes', 'connection_lost', t + interval '8 minutes', 0
         FROM generate_series({start} + interval '11 days', {now} - interval '2 days', interval '97 days') t""",
]


async def generate(
    conn: asyncpg.Connection, total: int, chat_share: float, sessions: int, now: datetime
) -> dict[str, float]:
    """Load the history with triggers and FK checks off, then rebuild every rollup."""
    start = now - timedelta(days=365 * YEARS)
    chat = int(total * chat_share)
    bits_uses = total // 100
    ads = sessions * 6 + sessions // 3
    events = max(0, total - chat - bits_uses - ads)
    params = {
        "ch": CHANNEL,
        "start": f"timestamptz '{start.isoformat()}'",
        "now": f"timestamptz '{now.isoformat()}'",
        "span_s": int((now - start).total_seconds()),
        "sessions": sessions,
        "events": events,
        "chat": chat,
        "bits_uses": bits_uses,
        "follows": int(events * MIX[0][3]),
    }
    await conn.execute(
        "CREATE UNLOGGED TABLE bench_mix (i int, kind text, type text, version text)"
    )
    await conn.executemany(
        "INSERT INTO bench_mix VALUES ($1, $2, $3, $4)",
        [(i, kind, t, v) for i, (kind, t, v, _) in enumerate(MIX)],
    )
    secondary = [
        r["indexdef"]
        for r in await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'twitch_events' "
            "AND indexname <> 'twitch_events_pkey'"
        )
    ]
    await conn.execute("SET session_replication_role = replica")  # triggers and FK checks off
    for name in [
        r["indexname"]
        for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'twitch_events' "
            "AND indexname <> 'twitch_events_pkey'"
        )
    ]:
        await conn.execute(f'DROP INDEX "{name}"')
    started = time.perf_counter()
    for sql in GENERATE:
        try:
            await conn.execute(sql.format(**params), timeout=LONG)
        except asyncpg.PostgresError as exc:
            raise RuntimeError(f"{exc} in:\n{sql.format(**params)[:400]}") from exc
    for indexdef in secondary:
        await conn.execute(indexdef, timeout=LONG)
    await conn.execute("DROP TABLE bench_events, bench_mix, bench_sessions")
    await conn.execute("SET session_replication_role = origin")
    loaded = time.perf_counter()
    # The streams' chatters are counted once, by the activity rebuild below: not for each
    # session analytics_rebuild creates and settles (their triggers, off meanwhile).
    for trigger in SESSION_CHATTER_TRIGGERS:
        await conn.execute(f"ALTER TABLE stream_sessions DISABLE TRIGGER {trigger}")
    await conn.execute("SELECT analytics_rebuild()", timeout=LONG)
    for trigger in SESSION_CHATTER_TRIGGERS:
        await conn.execute(f"ALTER TABLE stream_sessions ENABLE TRIGGER {trigger}")
    await conn.execute("SELECT analytics_activity_rebuild()", timeout=LONG)
    rebuilt = time.perf_counter()
    await conn.execute("VACUUM ANALYZE", timeout=LONG)
    return {
        "load_s": round(loaded - started, 1),
        "rebuild_s": round(rebuilt - loaded, 1),
        "vacuum_s": round(time.perf_counter() - rebuilt, 1),
    }


# ----------------------------------------------------------------------------- timing


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def summary(times: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(percentile(times, 95), 2),
        "max_ms": round(max(times), 2),
        "runs": len(times),
    }


async def timed(
    action: Callable[[], Awaitable[Any]], runs: int, warmup: int = 2
) -> dict[str, float]:
    for _ in range(warmup):
        await action()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await action()
        times.append((time.perf_counter() - began) * 1000)
    return summary(times)


# A daemon serves its dashboard for days: what counts is the steady state, after PostgreSQL has
# settled each prepared statement's plan (custom plans for its first five runs). The queries
# take turns, round after round, so a passing disturbance on this shared machine (a checkpoint,
# another process) spreads over all of them instead of landing on one query's runs.
WARMUP_ROUNDS = 6


async def timed_in_turns(
    actions: dict[str, Callable[[], Awaitable[Any]]], runs: int
) -> dict[str, dict[str, float]]:
    for _ in range(WARMUP_ROUNDS):
        for action in actions.values():
            await action()
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            began = time.perf_counter()
            await action()
            times[name].append((time.perf_counter() - began) * 1000)
    return {name: summary(t) for name, t in times.items()}


NAIVE_ALL_TIME = """
WITH ev AS (
    SELECT date_trunc('month', followed_at AT TIME ZONE $2) AS m, count(*) AS follows,
           0::bigint AS subs_new, 0::bigint AS subs_resub, 0::bigint AS subs_gifted,
           0::bigint AS bits, 0::bigint AS raids_in
      FROM twitch_follows WHERE channel_id = $1 GROUP BY 1
    UNION ALL
    SELECT date_trunc('month', occurred_at AT TIME ZONE $2), 0,
           count(*) FILTER (WHERE kind = 'sub' AND NOT is_gift), count(*) FILTER (WHERE kind = 'resub'),
           coalesce(sum(coalesce(gift_total, 1)) FILTER (WHERE kind = 'gift'), 0), 0, 0
      FROM twitch_subscriptions WHERE channel_id = $1 GROUP BY 1
    UNION ALL
    SELECT date_trunc('month', occurred_at AT TIME ZONE $2), 0, 0, 0, 0, sum(bits), 0
      FROM twitch_cheers WHERE channel_id = $1 GROUP BY 1
    UNION ALL
    SELECT date_trunc('month', occurred_at AT TIME ZONE $2), 0, 0, 0, 0,
           sum((payload #>> '{event,bits}')::bigint), 0
      FROM twitch_events
     WHERE subscription_type = 'channel.bits.use' AND channel_id = $1
       AND payload #>> '{event,type}' IN ('power_up', 'combo')
     GROUP BY 1
    UNION ALL
    SELECT date_trunc('month', occurred_at AT TIME ZONE $2), 0, 0, 0, 0, 0,
           count(*) FILTER (WHERE to_user_id = channel_id)
      FROM twitch_raids WHERE channel_id = $1 GROUP BY 1),
spans AS (
    SELECT sampled_at, viewer_count,
           greatest(0, least(max_span_s, coalesce(floor(extract(epoch FROM
               lead(sampled_at) OVER (PARTITION BY stream_id ORDER BY sampled_at) - sampled_at)), 0))) AS span
      FROM viewer_samples WHERE channel_id = $1),
vw AS (
    SELECT date_trunc('month', sampled_at AT TIME ZONE $2) AS m, sum(viewer_count * span) AS viewer_s,
           sum(span) AS live_s, max(viewer_count) AS peak
      FROM spans GROUP BY 1)
SELECT coalesce(e.m, v.m) AS m, e.follows, e.subs_new, e.subs_resub, e.subs_gifted, e.bits,
       e.raids_in, v.viewer_s, v.live_s, v.peak
  FROM (SELECT m, sum(follows) AS follows, sum(subs_new) AS subs_new, sum(subs_resub) AS subs_resub,
               sum(subs_gifted) AS subs_gifted, sum(bits) AS bits, sum(raids_in) AS raids_in
          FROM ev GROUP BY m) e
  FULL JOIN vw v ON v.m = e.m
 ORDER BY 1"""


async def measure_queries(pool: Any, now: datetime, runs: int, naive_runs: int) -> dict[str, Any]:
    cal = Calendar(TZ)
    queries: dict[str, Any] = {}

    def dashboard(kind: str, fetch: Callable[..., Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def action() -> Any:
            async with pool.acquire() as conn:
                period = await load_period(conn, cal, CHANNEL, kind, now)
                return await fetch(conn, CHANNEL, period, now)

        return action

    actions: dict[str, Callable[[], Awaitable[Any]]] = {}
    for kind in ("day", "week", "month", "all"):
        actions[f"cards_{kind}"] = dashboard(kind, stat_cards)
        actions[f"series_{kind}"] = dashboard(kind, time_series)
    latest = await pool.fetchval(
        "SELECT stream_id FROM stream_sessions WHERE ended_at IS NOT NULL "
        "ORDER BY started_at DESC LIMIT 1"
    )

    async def sessions_page() -> Any:
        async with pool.acquire() as conn:
            return await list_sessions(conn, CHANNEL, limit=50, now=now)

    async def one_session() -> Any:
        async with pool.acquire() as conn:
            return await get_session(conn, CHANNEL, latest, now)

    actions["sessions_list"] = sessions_page
    actions["session_detail"] = one_session
    queries.update(await timed_in_turns(actions, runs))

    async def naive() -> Any:
        return await pool.fetch(NAIVE_ALL_TIME, CHANNEL, TZ, timeout=LONG)

    naive_times = await timed(naive, naive_runs, warmup=1)
    fast = queries["series_all"]
    series = await dashboard("all", time_series)()
    naive_rows = {r["m"].date(): r for r in await naive()}
    matches = all(
        (p.follows, p.bits, p.subs_new, p.subs_gifted)
        == (
            int(naive_rows[p.label.date()]["follows"] or 0),
            int(naive_rows[p.label.date()]["bits"] or 0),
            int(naive_rows[p.label.date()]["subs_new"] or 0),
            int(naive_rows[p.label.date()]["subs_gifted"] or 0),
        )
        for p in series.points
        if p.label.date() in naive_rows
    )
    return {
        "queries": queries,
        "naive_all_time": naive_times,
        "all_time_speedup": round(naive_times["p50_ms"] / fast["p50_ms"], 1),
        "all_time_speedup_p95": round(naive_times["p95_ms"] / fast["p95_ms"], 1),
        "all_time_matches_naive": matches,
        "all_time_buckets": len(series.points),
    }


# ----------------------------------------------------------------------------- ingest

INSERT_RAW = """
INSERT INTO twitch_events (message_id, subscription_type, subscription_version, channel_id,
                           occurred_at, received_at, payload)
SELECT message_id, subscription_type, subscription_version, channel_id, occurred_at, received_at,
       payload
  FROM jsonb_populate_recordset(NULL::twitch_events, $1::jsonb)
    ON CONFLICT DO NOTHING RETURNING message_id"""


def typed_insert(table: str) -> str:
    return f"INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb)"


# Ingest writes a live stream's events, decades after the history: half of them go in with the
# triggers off, and a kept history (--data-dir) must still match the naive all-time chart.
AFTER_HISTORY = timedelta(days=365 * 70)


class Ingest:
    """Batches shaped like the event store's: raw rows, then one INSERT per typed table."""

    def __init__(self) -> None:
        self.n = 0
        self.rng = random.Random(1)
        self.token = uuid.uuid4().hex[:8]  # a reused history keeps earlier runs' rows

    def chat_batch(self, size: int) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """Chat messages only (raw rows), from the history's chatters (a few heavy ones)."""
        now = datetime.now(UTC) + AFTER_HISTORY
        raw = []
        for _ in range(size):
            self.n += 1
            at = (now - timedelta(seconds=self.rng.random() * 60)).isoformat()
            user = int(200000 * self.rng.random() ** 3)
            event = {
                "broadcaster_user_id": CHANNEL,
                "chatter_user_id": f"u{user}",
                "chatter_user_login": f"user{user}",
                "message": {"text": "hi"},
            }
            raw.append(
                {
                    "message_id": f"live-{self.token}-{self.n}",
                    "subscription_type": "channel.chat.message",
                    "subscription_version": "1",
                    "channel_id": CHANNEL,
                    "occurred_at": at,
                    "received_at": at,
                    "payload": {"event": event},
                }
            )
        return raw, {}

    def batch(self, size: int) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        raw, typed = [], {"twitch_follows": [], "twitch_subscriptions": [], "twitch_cheers": []}
        now = datetime.now(UTC) + AFTER_HISTORY
        for _ in range(size):
            self.n += 1
            mid, at = (
                f"live-{self.token}-{self.n}",
                (now - timedelta(seconds=self.rng.random() * 60)).isoformat(),
            )
            kind = self.rng.choice(["follow", "follow", "sub", "cheer", "cheer"])
            user = {
                "user_id": f"lu{self.n}",
                "user_login": f"luser{self.n}",
                "user_name": f"LUser{self.n}",
            }
            sub_type = {
                "follow": "channel.follow",
                "sub": "channel.subscribe",
                "cheer": "channel.cheer",
            }[kind]
            raw.append(
                {
                    "message_id": mid,
                    "subscription_type": sub_type,
                    "subscription_version": "1",
                    "channel_id": CHANNEL,
                    "occurred_at": at,
                    "received_at": at,
                    "payload": {"subscription": {"type": sub_type}, "event": {**user, "bits": 100}},
                }
            )
            if kind == "follow":
                typed["twitch_follows"].append(
                    {
                        "message_id": mid,
                        "channel_id": CHANNEL,
                        **user,
                        "followed_at": at,
                        "backfilled": False,
                    }
                )
            elif kind == "sub":
                typed["twitch_subscriptions"].append(
                    {
                        "message_id": mid,
                        "channel_id": CHANNEL,
                        "kind": "sub",
                        **user,
                        "tier": "1000",
                        "is_gift": False,
                        "is_anonymous": False,
                        "occurred_at": at,
                    }
                )
            else:
                typed["twitch_cheers"].append(
                    {
                        "message_id": mid,
                        "channel_id": CHANNEL,
                        **user,
                        "is_anonymous": False,
                        "bits": 100,
                        "occurred_at": at,
                    }
                )
        return raw, typed

    async def run(self, conn: Any, batches: int, size: int, chat: bool = False) -> list[float]:
        """Write the batches; returns each batch's seconds (transaction included)."""
        prepared = [(self.chat_batch if chat else self.batch)(size) for _ in range(batches)]
        times = []
        for raw, typed in prepared:
            began = time.perf_counter()
            async with conn.transaction():
                await conn.fetch(INSERT_RAW, raw)
                for table, rows in typed.items():
                    if rows:
                        await conn.execute(typed_insert(table), rows)
            times.append(time.perf_counter() - began)
        return times


TRIGGER_TIME = """
SELECT coalesce(sum(total_time), 0) / 1000 FROM pg_stat_user_functions
 WHERE funcname IN ('analytics_follows_changed', 'analytics_subscriptions_changed',
                    'analytics_cheers_changed', 'analytics_raids_changed',
                    'analytics_events_inserted', 'analytics_subscription_supporters_changed',
                    'analytics_cheer_supporters_changed')"""


async def trigger_seconds(conn: Any) -> float:
    """Seconds spent so far inside the rollup triggers (track_functions), flushed first."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT 1")
    return float(await conn.fetchval(TRIGGER_TIME))


async def set_triggers(pool: Any, enabled: bool) -> None:
    for table, trigger in TRIGGERS:
        await pool.execute(
            f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER {trigger}"
        )


async def measure_ingest(pool: Any, rounds: int) -> dict[str, Any]:
    """What the rollup triggers cost the store's batches, two ways, on the same database:

    - throughput with and without the triggers, alternating ABBA rounds, compared on the median
      batch time (other load on the machine makes this noisy);
    - the share of the batch time PostgreSQL spent inside the trigger functions
      (track_functions), measured in the same batches, which such noise barely moves.
    """
    ingest = Ingest()
    out = {}
    async with pool.acquire() as conn:
        await conn.execute("SET track_functions = 'pl'")
        # The store's batches of typed events, and batches of chat messages only.
        for name, size, batches, chat in (
            ("batch_500", 500, 10, False),
            ("batch_50", 50, 40, False),
            ("chat_batch_500", 500, 10, True),
        ):
            times: dict[bool, list[float]] = {True: [], False: []}
            in_triggers = 0.0
            await ingest.run(conn, 4, size, chat)  # warm up
            for i in range(rounds * 2):
                enabled = (i % 4) in (0, 3)  # on off off on …
                await set_triggers(pool, enabled)
                before = await trigger_seconds(conn)
                times[enabled] += await ingest.run(conn, batches, size, chat)
                in_triggers += await trigger_seconds(conn) - before
            await set_triggers(pool, True)
            med = {k: statistics.median(v) for k, v in times.items()}
            out[name] = {
                "events_per_s_without_triggers": round(size / med[False]),
                "events_per_s_with_triggers": round(size / med[True]),
                "throughput_slowdown_pct": round(100 * (1 - med[False] / med[True]), 1),
                "time_in_triggers_pct": round(100 * in_triggers / sum(times[True]), 1),
                "trigger_ms_per_batch": round(1000 * in_triggers / len(times[True]), 3),
                "batches_per_side": len(times[True]),
            }
    return out


# ----------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = (
        Path(args.data_dir)
        if args.data_dir
        else Path(tempfile.mkdtemp(prefix="sh-bench-analytics-"))
    )
    data_dir.mkdir(parents=True, exist_ok=True)  # a new --data-dir is made, as the daemon does
    cluster = EmbeddedPostgres(data_dir)
    try:
        await cluster.start()
        await cluster.create_database()
        result: dict[str, Any] = {
            "events": args.events,
            "chat_share": args.chat_share,
            "sessions": args.sessions,
        }
        pool = await create_pool(cluster.url, 4)
        try:
            fresh = not await pool.fetchval("SELECT to_regclass('bench_meta') IS NOT NULL")
            # A kept history is brought up to date too (its migrations backfill the rollups: no
            # command timeout for those).
            upgrading = await asyncpg.create_pool(cluster.url, min_size=1, max_size=1)
            try:
                began = time.perf_counter()
                applied = await Database(upgrading, cluster.url).upgrade()
                if applied and not fresh:
                    result["upgrade"] = {
                        "migrations": [m.version for m in applied],
                        "seconds": round(time.perf_counter() - began, 1),
                    }
            finally:
                await upgrading.close()
            if fresh:
                now = datetime.now(UTC).replace(microsecond=0)
                async with pool.acquire() as conn:
                    result.update(
                        await generate(conn, args.events, args.chat_share, args.sessions, now)
                    )
                    await conn.execute(
                        "CREATE TABLE bench_meta AS SELECT $1::timestamptz AS now", now
                    )
            now = await pool.fetchval("SELECT now FROM bench_meta")
            result["rows"] = {
                t: await pool.fetchval(f"SELECT count(*) FROM {t}")
                for t in (
                    "twitch_events",
                    "viewer_samples",
                    "stream_sessions",
                    "analytics_event_rollup",
                    "analytics_viewer_rollup",
                    "analytics_activity_rollup",
                    "analytics_chatters",
                    "analytics_chatter_sets",
                    "analytics_session_chatters",
                    "analytics_session_supporters",
                )
            }
            result.update(await measure_queries(pool, now, args.runs, args.naive_runs))
            if not args.skip_ingest:
                ingest = await measure_ingest(pool, args.ingest_rounds)
                result["ingest"] = ingest
                # The store's batch size under load (throughput only matters under load).
                result["ingest_slowdown_pct"] = ingest["batch_500"]["time_in_triggers_pct"]
                result["ingest_throughput_slowdown_pct"] = ingest["batch_500"][
                    "throughput_slowdown_pct"
                ]
            worst = max(q["p95_ms"] for q in result["queries"].values())
            result["worst_query_p95_ms"] = worst
            if args.baseline:
                # issue 13: each query's p95 against a smaller history's (e.g. 30M vs 3M)
                base = json.loads(Path(args.baseline).read_text())
                result["p95_ratio_to_baseline"] = {
                    "baseline_events": base["events"],
                    **{
                        name: round(q["p95_ms"] / base["queries"][name]["p95_ms"], 2)
                        for name, q in result["queries"].items()
                        if name in base["queries"]
                    },
                }
            result["targets_met"] = {
                "query_p95_le_50ms": worst <= 50,
                "all_time_speedup_ge_20": result["all_time_speedup"] >= 20,
                "ingest_slowdown_le_20pct": result.get("ingest_slowdown_pct", 0) <= 20,
            }
        finally:
            await pool.close()
        return result
    finally:
        await cluster.stop()
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument(
        "--chat-share", type=float, default=0.8, help="share of the events that are chat messages"
    )
    parser.add_argument(
        "--runs", type=int, default=100, help="timed runs per dashboard query (taking turns)"
    )
    parser.add_argument("--naive-runs", type=int, default=5)
    parser.add_argument(
        "--ingest-rounds", type=int, default=6, help="rounds per side and batch size"
    )
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument(
        "--baseline", help="a smaller history's JSON output: adds each query's p95 ratio to it"
    )
    parser.add_argument(
        "--data-dir", help="keep the cluster here (and reuse a history generated there)"
    )
    args = parser.parse_args()
    setup_logging("warning", "json")  # stdout carries the one JSON object only
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
