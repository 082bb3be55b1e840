"""The reader's memory of recent message ids (events/seen.py): resends within the window are
recognised, older ids are forgotten, and remembering allocates nothing per id."""

from __future__ import annotations

import sys

from streamerhub.events.seen import RecentIds


def test_a_resend_within_the_window_is_recognised_and_a_new_id_is_not() -> None:
    recent = RecentIds(1000)
    assert recent.add("m-1")
    assert not recent.add("m-1")
    for i in range(1500):  # one rotation of the generations
        assert recent.add(f"n-{i}")
    assert not recent.add("n-1499") and not recent.add("n-600")
    assert recent.add("m-2")


def test_ids_older_than_twice_the_window_are_forgotten() -> None:
    recent = RecentIds(100)
    recent.add("old")
    for i in range(200):
        recent.add(f"x-{i}")
    assert "old" not in recent
    assert recent.add("old")  # a late resend is stored again: PostgreSQL dedupes it


def test_remembering_a_flood_of_ids_allocates_no_objects() -> None:
    recent = RecentIds(20_000)
    before = sys.getallocatedblocks()
    for i in range(60_000):  # each id made and dropped, as the reader's frames are
        recent.add(f"id-{i}")
    assert sys.getallocatedblocks() - before < 100


def test_the_loop_lag_probe_keeps_its_samples_without_an_object_each() -> None:
    from streamerhub.looplag import LoopLag

    lag = LoopLag(window=2400)
    before = sys.getallocatedblocks()
    for i in range(5000):  # the ring fills and wraps
        lag.record(1.0 + i * 1e-3, 0.5)
    assert sys.getallocatedblocks() - before < 100
    snap = lag.snapshot()
    assert snap["samples"] == 2400 and snap["max_ms"] == round(1.0 + 4999e-3, 1)
