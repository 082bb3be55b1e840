"""EventSub WebSocket frames: one text frame → a classified Frame, or BadFrame saying why.

Pure functions, no I/O; runs for every frame on the reader's loop, so it builds one object.
"""

from __future__ import annotations

import enum
import json
from typing import Any, NamedTuple

from streamerhub.errors import StreamerHubError

MAX_FRAME_BYTES = 1024 * 1024


class BadFrame(StreamerHubError):
    """A WebSocket frame that is not an EventSub message; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameKind(enum.Enum):
    WELCOME = "session_welcome"
    KEEPALIVE = "session_keepalive"
    NOTIFICATION = "notification"
    RECONNECT = "session_reconnect"
    REVOCATION = "revocation"
    UNKNOWN = "unknown"


_KINDS = {kind.value: kind for kind in FrameKind if kind is not FrameKind.UNKNOWN}
_WITH_SUBSCRIPTION = (FrameKind.NOTIFICATION, FrameKind.REVOCATION)


class Frame(NamedTuple):
    """One classified EventSub frame; `text` is kept for dead letters and stored as sent."""

    kind: FrameKind
    message_id: str
    message_type: str
    message_timestamp: str | None
    payload: dict[str, Any]
    text: str
    subscription_type: str | None = None
    subscription_version: str | None = None

    @property
    def session(self) -> dict[str, Any]:
        """payload.session of a welcome/reconnect frame ({} otherwise)."""
        session = self.payload.get("session")
        return session if isinstance(session, dict) else {}

    @property
    def subscription(self) -> dict[str, Any]:
        """payload.subscription of a notification/revocation frame ({} otherwise)."""
        sub = self.payload.get("subscription")
        return sub if isinstance(sub, dict) else {}


def parse_frame(text: str) -> Frame:
    """Classify one WebSocket text frame, or raise BadFrame saying what is wrong with it."""
    _check_size(text)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadFrame(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadFrame("not a JSON object")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise BadFrame("no metadata object")
    message_id, message_type = meta.get("message_id"), meta.get("message_type")
    if not isinstance(message_id, str) or not message_id:
        raise BadFrame("metadata.message_id missing")
    if not isinstance(message_type, str) or not message_type:
        raise BadFrame("metadata.message_type missing")
    payload = doc.get("payload", {})
    if not isinstance(payload, dict):
        raise BadFrame("payload is not an object")
    stamp = meta.get("message_timestamp")
    kind = _KINDS.get(message_type, FrameKind.UNKNOWN)
    sub_type = version = None
    if kind in _WITH_SUBSCRIPTION:
        sub_type, version = _subscription_of(message_type, meta, payload)
    return Frame(
        kind,
        message_id,
        message_type,
        stamp if isinstance(stamp, str) else None,
        payload,
        text,
        sub_type,
        version,
    )


def _check_size(text: str) -> None:
    # Characters are at most 4 UTF-8 bytes: encode only when the length alone cannot decide.
    size = (
        len(text)
        if len(text) > MAX_FRAME_BYTES or len(text) * 4 <= MAX_FRAME_BYTES
        else len(text.encode("utf-8", "surrogatepass"))
    )
    if size > MAX_FRAME_BYTES:
        raise BadFrame(f"frame too large: {size} bytes > {MAX_FRAME_BYTES}")


def _subscription_of(
    message_type: str, meta: dict[str, Any], payload: dict[str, Any]
) -> tuple[str, str]:
    sub = payload.get("subscription")
    sub = sub if isinstance(sub, dict) else {}
    sub_type = meta.get("subscription_type") or sub.get("type")
    version = meta.get("subscription_version") or sub.get("version")
    if not isinstance(sub_type, str) or not sub_type:
        raise BadFrame(f"{message_type} without subscription_type")
    if not isinstance(version, str) or not version:
        raise BadFrame(f"{message_type} without subscription_version")
    return sub_type, version
