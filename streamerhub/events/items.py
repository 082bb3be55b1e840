"""The write path's queue items — events, dead letters, gap marks — and their JSON form on disk.

The store queues them, batches commit them, the spool keeps them through an outage: one definition
for all three, whether or not anything is ever spooled.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, NamedTuple

from streamerhub.events.frames import MAX_FRAME_BYTES
from streamerhub.events.normalise import BadEvent, Normalised, normalise, slim


@dataclass(frozen=True)
class DeadLetter:
    """Something we received but could not understand, kept with its raw text."""

    source: str
    reason: str
    raw: str
    key: str  # unique per letter: a spool replay stores it once


@dataclass(frozen=True)
class GapMark:
    """An EventSub transport gap opening (reason set) or closing (reason None) on a channel."""

    channel_id: str
    at: datetime
    reason: str | None


class Entry(NamedTuple):
    """One queued item and when it was received (time.time())."""

    item: Normalised | DeadLetter | GapMark
    at: float


def make_letter(source: str, reason: str, raw: str, key: str | None = None) -> DeadLetter:
    """A dead letter PostgreSQL will accept: no NUL characters, at most 1 MiB of raw text."""
    if len(raw) > MAX_FRAME_BYTES:
        reason = f"{reason} (raw text truncated from {len(raw)} characters)"
        raw = raw[:MAX_FRAME_BYTES]
    return DeadLetter(
        source, reason.replace("\x00", ""), raw.replace("\x00", "\\u0000"), key or uuid.uuid4().hex
    )


def rejected(entry: Entry, exc: BaseException) -> Entry:
    """The dead letter standing for an item the database (or JSON) refused."""
    raw = json.dumps(encode(entry), ensure_ascii=True, default=str)
    # Deterministic key: rejecting the same spooled event again on a later replay is a no-op.
    key = f"rejected:{entry.item.raw.message_id}" if isinstance(entry.item, Normalised) else None
    return Entry(make_letter("store", f"database rejected the row: {exc}", raw, key), entry.at)


def encode(entry: Entry) -> dict[str, Any]:
    """The JSON form of a queue entry (events keep their raw row: typed rows are rebuilt)."""
    item = entry.item
    if isinstance(item, Normalised):
        raw = item.raw
        body = {"doc": item.text} if item.text is not None else {"payload": raw.payload}
        return {
            "k": "event",
            "at": entry.at,
            "id": raw.message_id,
            "type": raw.subscription_type,
            "version": raw.subscription_version,
            "ts": raw.occurred_at,
            "backfilled": raw.backfilled,
            **body,  # the frame's text as received ("doc"), or a payload built by hand
        }
    if isinstance(item, DeadLetter):
        return {"k": "letter", "at": entry.at, **asdict(item)}
    return {
        "k": "gap",
        "at": entry.at,
        "channel_id": item.channel_id,
        "gap_at": item.at.isoformat(),
        "reason": item.reason,
    }


def encodable(batch: list[Entry]) -> list[dict[str, Any]]:
    """encode() for a batch; an item JSON cannot carry (a Python object in a payload built by
    hand) becomes a dead letter instead of blocking the batch."""
    out = []
    for entry in batch:
        encoded = encode(entry)
        try:
            json.dumps(encoded)
        except (TypeError, ValueError) as exc:
            encoded = encode(rejected(entry, exc))
        out.append(encoded)
    return out


def decode(data: dict[str, Any]) -> Entry:
    """A spooled item back into a queue entry; one we cannot read becomes a dead letter."""
    try:
        kind, at = data["k"], float(data["at"])
        if kind == "event":
            doc = data.get("doc")
            payload = json.loads(doc)["payload"] if isinstance(doc, str) else data["payload"]
            item = normalise(
                data["id"],
                data["type"],
                data["version"],
                data["ts"],
                payload,
                backfilled=bool(data["backfilled"]),
                text=doc if isinstance(doc, str) else None,
            )
            return Entry(slim(item), at)
        if kind == "letter":
            return Entry(DeadLetter(data["source"], data["reason"], data["raw"], data["key"]), at)
        return Entry(
            GapMark(data["channel_id"], datetime.fromisoformat(data["gap_at"]), data["reason"]), at
        )
    except (BadEvent, KeyError, TypeError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, BadEvent) else f"unreadable spool item: {exc!r}"
        return Entry(make_letter("spool", reason, json.dumps(data, default=str)), time.time())
