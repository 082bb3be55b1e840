"""The demo's seeded history reads like a real month: streams of hours, viewer curves that rise
and fall, and follower totals that add up with the follows."""

from __future__ import annotations

import datetime as dt

from streamerhub.fake_twitch.seed import seed_history
from streamerhub.fake_twitch.simulate import CHANNEL
from streamerhub.fake_twitch.state import State

NOW = dt.datetime(2026, 12, 2, 14, 0, tzinfo=dt.timezone.utc)


def test_a_month_of_streams_of_hours_with_curves_not_dots() -> None:
    history = seed_history(State(), NOW)
    streams = history.streams
    assert 12 <= len(streams) <= 20  # four evenings a week for four weeks
    assert all(s.ended_at <= NOW for s in streams)
    for stream in streams:
        hours = (stream.ended_at - stream.started_at).total_seconds() / 3600
        assert 2 <= hours <= 4.5
        counts = [count for _, count in stream.viewers]
        assert len(counts) == round(hours * 60)  # one sample a minute, the whole stream
        peak = max(counts)
        assert counts[0] < peak / 3 and counts[-1] < peak / 2  # a climb and a tail
        assert sum(counts) / len(counts) > peak / 2  # a plateau between, not a spike
        kinds = [e.subscription_type for e in stream.events]
        assert kinds[0] == "channel.update" and kinds[1] == "stream.online"
        assert kinds[-1] == "stream.offline" and "channel.follow" in kinds
        assert all(
            stream.started_at - dt.timedelta(minutes=5) <= e.occurred_at <= stream.ended_at
            for e in stream.events
        )
    # The channel grows: the last week draws more viewers than the first.
    first, last = streams[0].viewers, streams[-1].viewers
    assert max(c for _, c in last) > max(c for _, c in first)


def test_follower_totals_add_up_with_the_follows() -> None:
    state = State()
    history = seed_history(state, NOW)
    follows = sorted(
        e.occurred_at
        for s in history.streams
        for e in s.events
        if e.subscription_type == "channel.follow"
    )
    # What Helix reports now is the followers before plus every follow of the history…
    assert len(state.followers[CHANNEL]) == history.followers_before + len(follows)
    # …and each day's total is that many plus the follows before that day.
    for taken_at, total in history.totals:
        assert total == history.followers_before + sum(1 for t in follows if t < taken_at)
    totals = [total for _, total in history.totals]
    assert totals == sorted(totals) and len(totals) >= 28


def test_the_same_start_time_makes_the_same_history() -> None:
    one, two = seed_history(State(), NOW), seed_history(State(), NOW)
    assert [(s.stream_id, s.started_at, s.viewers) for s in one.streams] == [
        (s.stream_id, s.started_at, s.viewers) for s in two.streams
    ]
