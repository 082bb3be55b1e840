"""What a flood leaves in memory: the reader's recent message ids (events/seen.py) and the
loop-lag samples allocate nothing per id or sample, and the store's queue holds no parsed
payloads; resends within the window are still recognised."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from streamerhub.events.frames import parse_frame
from streamerhub.events.items import decode, encode
from streamerhub.events.normalise import Normalised
from streamerhub.events.seen import RecentIds
from streamerhub.events.store import EventStore
from streamerhub.fake_twitch import sample_event


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


async def test_a_queued_chat_flood_holds_a_few_objects_per_message_not_its_parsed_payload(
    tmp_path: Path,
) -> None:
    """What the store holds per queued event during a flood: the frame's text and a few short
    strings; the parsed payload (dozens of objects a chat message) is dropped once checked, and
    an event spooled that way is stored with its payload intact."""
    texts = [_chat_frame(i) for i in range(2000)]
    store = EventStore(None, tmp_path, batch_size=10_000)  # type: ignore[arg-type]
    before = sys.getallocatedblocks()
    for text in texts:
        store.submit(parse_frame(text))
    per_event = (sys.getallocatedblocks() - before) / len(texts)
    assert per_event < 20, per_event  # 71 when the parsed payload was kept
    entry = decode(encode(store._queue[0]))
    assert isinstance(entry.item, Normalised)
    assert entry.item.payload()["event"]["message"]["text"].startswith("hello")
    assert json.loads(entry.item.document())["payload"] == json.loads(texts[0])["payload"]


def _chat_frame(i: int) -> str:
    _, event = sample_event("channel.chat.message", message_id=f"chat-{i}")
    body = {
        "subscription": {
            "id": "sub-1",
            "type": "channel.chat.message",
            "version": "1",
            "condition": {"broadcaster_user_id": "1000", "user_id": "1000"},
        },
        "event": {**event, "message": {"text": f"hello {i}", "fragments": [{"type": "text"}]}},
    }
    meta = {
        "message_id": f"m-{i}",
        "message_type": "notification",
        "message_timestamp": "2026-12-02T12:00:00.000000Z",
        "subscription_type": "channel.chat.message",
        "subscription_version": "1",
    }
    return json.dumps({"metadata": meta, "payload": body})
