"""EventSub WebSocket frames, built as JSON text ready to send."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Compact JSON, the way Twitch writes it."""
    return _dumps(value)


def rfc3339_ns(ns: int | None = None) -> str:
    """An RFC3339 UTC timestamp with nanoseconds, like Twitch's message_timestamp."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def new_id() -> str:
    """A fresh UUID string, the shape of Twitch's message and subscription ids."""
    return str(uuid.uuid4())


class Stamper:
    """Message ids and timestamps for a burst of frames, cheaper than one uuid4+strftime each.

    Ids share a random 96-bit head per burst and count in the tail, so they stay unique and
    UUID-shaped; the timestamp's seconds part is formatted once per second.
    """

    def __init__(self) -> None:
        self._head = new_id()[:24]
        self._count = 0
        self._second = -1
        self._prefix = ""

    def message_id(self) -> str:
        """The next id of the burst."""
        self._count += 1
        return f"{self._head}{self._count:012x}"

    def now(self) -> str:
        """rfc3339_ns() for the current instant."""
        seconds, fraction = divmod(time.time_ns(), 1_000_000_000)
        if seconds != self._second:
            self._second = seconds
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
        return f"{self._prefix}{fraction:09d}Z"


def _frame(message_type: str, payload: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    metadata = {
        "message_id": new_id(),
        "message_type": message_type,
        "message_timestamp": rfc3339_ns(),
    }
    metadata.update(extra or {})
    return dumps({"metadata": metadata, "payload": payload})


def session_payload(
    session_id: str,
    status: str,
    connected_at: str,
    keepalive: float | None,
    reconnect_url: str | None,
) -> dict[str, Any]:
    """The payload.session object shared by welcome and reconnect frames."""
    if isinstance(keepalive, float) and keepalive.is_integer():
        keepalive = int(keepalive)
    return {
        "session": {
            "id": session_id,
            "status": status,
            "connected_at": connected_at,
            "keepalive_timeout_seconds": keepalive,
            "reconnect_url": reconnect_url,
        }
    }


def welcome(session_id: str, connected_at: str, keepalive: float) -> str:
    """A session_welcome frame."""
    return _frame(
        "session_welcome", session_payload(session_id, "connected", connected_at, keepalive, None)
    )


def keepalive() -> str:
    """A session_keepalive frame (empty payload)."""
    return _frame("session_keepalive", {})


def reconnect(session_id: str, connected_at: str, url: str) -> str:
    """A session_reconnect frame; keepalive_timeout_seconds is null there, as on Twitch."""
    return _frame(
        "session_reconnect", session_payload(session_id, "reconnecting", connected_at, None, url)
    )


def revocation(subscription: dict[str, Any]) -> str:
    """A revocation frame for one subscription (its status already set to the reason)."""
    extra = {
        "subscription_type": subscription["type"],
        "subscription_version": subscription["version"],
    }
    return _frame("revocation", {"subscription": subscription}, extra)


# Notifications are the hot path of a flood: one format string, the subscription and event
# serialised once per batch, only the message id and timestamp made per frame.
_NOTIFICATION = (
    '{"metadata":{"message_id":%s,"message_type":"notification","message_timestamp":"%s",'
    '"subscription_type":%s,"subscription_version":%s},'
    '"payload":{"subscription":%s,"event":%s}}'
)


def notification(
    message_id_json: str,
    timestamp: str,
    subscription_json: str,
    type_json: str,
    version_json: str,
    event_json: str,
) -> str:
    """A notification frame from parts that are already JSON text."""
    return _NOTIFICATION % (
        message_id_json,
        timestamp,
        type_json,
        version_json,
        subscription_json,
        event_json,
    )
