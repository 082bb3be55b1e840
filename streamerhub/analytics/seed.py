"""Past viewer samples and follower totals written in bulk: the demo's weeks of history, stored
the way the pollers would have stored them had they been running (same statements, same spans)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from streamerhub.analytics.pollers import INSERT_SAMPLES, INSERT_TOTALS, PollerConfig


async def store_viewer_samples(
    pool: Any,
    channel_id: str,
    stream_id: str,
    samples: Sequence[tuple[datetime, int]],
    title: str,
    category: tuple[str, str],
) -> None:
    """One stream's viewer count a minute, as the sampler writes it."""
    span = PollerConfig().max_span_s
    n = len(samples)
    await pool.execute(
        INSERT_SAMPLES,
        [channel_id] * n,
        [stream_id] * n,
        [at for at, _ in samples],
        [count for _, count in samples],
        [span] * n,
        [title] * n,
        [category[0]] * n,
        [category[1]] * n,
    )


async def store_follower_totals(
    pool: Any, channel_id: str, totals: Sequence[tuple[datetime, int]]
) -> None:
    """Follower totals as the snapshotter takes them (no subscriber figures in the past)."""
    await pool.executemany(
        INSERT_TOTALS, [(channel_id, at, followers, None, None) for at, followers in totals]
    )
