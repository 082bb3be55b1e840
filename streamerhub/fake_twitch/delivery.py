"""Pushing things down live sockets: notifications, revocations, reconnects, raw frames, closes."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

from . import catalog, conduits, frames
from .channel import apply_event
from .state import Session, State, route_key
from .websocket import close_session, send, send_many

REVOCATION_STATUSES = (
    "user_removed",
    "authorization_revoked",
    "version_removed",
    "moderator_removed",
)


class DeliveryError(ValueError):
    """A control request named something Twitch would never send."""


@dataclass
class Outcome:
    """What a delivery did: how many frames went out, with which message ids."""

    delivered: int
    message_ids: list[str]


def parse_item(item: Any) -> tuple[str, str, dict[str, Any], str | None]:
    """(type, version, event, message_id) from one control item, version defaulting."""
    if not isinstance(item, dict) or not isinstance(item.get("event"), dict):
        raise DeliveryError("each item needs subscription_type and an event object")
    subscription_type = str(item.get("subscription_type") or "")
    version = item.get("subscription_version")
    row = (
        catalog.lookup(subscription_type, str(version))
        if version is not None
        else catalog.current(subscription_type)
    )
    if row is None:
        raise DeliveryError(f"unknown subscription type/version: {subscription_type} v{version}")
    return row.type, row.version, item["event"], item.get("message_id")


async def deliver(state: State, items: list[Any], reflect: bool = True) -> Outcome:
    """Send each event to every enabled, matching subscription; mirror it into Helix state."""
    parsed = [parse_item(item) for item in items]  # validate all before sending any
    batch = _Batch(state)
    for subscription_type, version, event, message_id in parsed:
        batch.add(subscription_type, version, event, message_id)
        if reflect:
            apply_event(state, subscription_type, event)
    delivered, ids = 0, []
    for session, (texts, batch_ids) in batch.frames.items():
        texts, batch_ids = _chaos(state, texts, batch_ids)
        sent = await send_many(state, session, texts, "notification")
        delivered += sent
        ids.extend(batch_ids[:sent])
    through_conduits, conduit_ids = await conduits.deliver(state, parsed)
    return Outcome(delivered + through_conduits, ids + conduit_ids)


def _chaos(state: State, texts: list[str], ids: list[str]) -> tuple[list[str], list[str]]:
    """Resend a share of frames later (same message_id) and shuffle within small windows."""
    settings, rng = state.settings, state.chaos
    pairs = list(zip(texts, ids, strict=True))
    if settings.chaos_duplicates > 0:
        for pair in list(pairs):
            if rng.random() < settings.chaos_duplicates:
                pairs.insert(rng.randint(pairs.index(pair) + 1, len(pairs)), pair)
                state.counters["chaos_duplicates"] += 1
    window = settings.chaos_reorder
    if window > 1:
        for start in range(0, len(pairs), window):
            chunk = pairs[start : start + window]
            rng.shuffle(chunk)
            pairs[start : start + window] = chunk
    return [t for t, _ in pairs], [i for _, i in pairs]


STALE_BY_NS = 12 * 60 * 1_000_000_000  # older than Twitch's 10-minute replay window


class _Batch:
    """Frames for many events, built with everything reusable computed once."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.stamper = frames.Stamper()
        self.frames: dict[Session, tuple[list[str], list[str]]] = {}
        self._routes: dict[tuple[str, ...], list[tuple[Session, str]]] = {}
        self._heads: dict[tuple[str, str], tuple[str, str]] = {}

    def add(
        self, subscription_type: str, version: str, event: dict[str, Any], message_id: str | None
    ) -> None:
        """Queue one event's frames for every recipient."""
        recipients = self._recipients(subscription_type, version, event)
        if not recipients:
            return
        event_json = frames.dumps(event)
        type_json, version_json = self._head(subscription_type, version)
        timestamp = self.stamper.now()
        if self.state.settings.chaos_stale and self.state.chaos.random() < (
            self.state.settings.chaos_stale
        ):
            timestamp = frames.rfc3339_ns(time.time_ns() - STALE_BY_NS)
        for session, sub_json in recipients:
            mid = message_id or self.stamper.message_id()
            texts, ids = self.frames.setdefault(session, ([], []))
            texts.append(
                frames.notification(
                    frames.dumps(mid), timestamp, sub_json, type_json, version_json, event_json
                )
            )
            ids.append(mid)

    def _recipients(
        self, subscription_type: str, version: str, event: dict[str, Any]
    ) -> list[tuple[Session, str]]:
        key = (subscription_type, version, *route_key(event))
        if key not in self._routes:
            self._routes[key] = [
                (session, frames.dumps(sub.to_json()))
                for session, sub in self.state.recipients(subscription_type, version, event)
            ]
        return self._routes[key]

    def _head(self, subscription_type: str, version: str) -> tuple[str, str]:
        key = (subscription_type, version)
        if key not in self._heads:
            self._heads[key] = (frames.dumps(subscription_type), frames.dumps(version))
        return self._heads[key]


async def broadcast_raw(state: State, text: str, session_id: str | None = None) -> int:
    """Send a frame as-is to every session (or one)."""
    sent = 0
    for session in _targets(state, session_id):
        sent += await send(state, session, text, "raw")
    return sent


async def request_reconnect(
    state: State, ws_base: str, session_id: str | None = None
) -> dict[str, Any]:
    """Send session_reconnect; each reconnect_url opens a session that inherits subscriptions."""
    urls = {}
    for session in _targets(state, session_id):
        if session.reconnect_token:
            state.reconnects.pop(session.reconnect_token, None)
        session.reconnect_token = secrets.token_urlsafe(16)
        state.reconnects[session.reconnect_token] = session
        session.reconnect_at, session.status = time.monotonic(), "reconnecting"
        url = f"{ws_base}?reconnect={session.reconnect_token}"
        await send(
            state,
            session,
            frames.reconnect(session.id, session.connected_at, url),
            "session_reconnect",
        )
        urls[session.id] = url
    return urls


async def revoke(
    state: State, subscription_type: str, status: str, version: str | None = None
) -> list[str]:
    """Revoke every enabled subscription of a type: status set, one revocation frame each."""
    if status not in REVOCATION_STATUSES:
        raise DeliveryError(f"status must be one of {', '.join(REVOCATION_STATUSES)}")
    revoked = []
    for sub in list(state.subscriptions.values()):
        if sub.type != subscription_type or sub.status != "enabled":
            continue
        if version is not None and sub.version != str(version):
            continue
        sub.status = status
        session = state.sessions.get(sub.session_id)
        if session is not None:
            await send(state, session, frames.revocation(sub.to_json()), "revocation")
        revoked.append(sub.id)
    return revoked


async def revoke_grant(state: State, user_id: str, client_id: str) -> list[str]:
    """The user revoked the app (or one of its tokens): as on Twitch, every subscription of that
    user and client gets an `authorization_revoked` frame and nothing more is delivered to it."""
    revoked = []
    for sub in list(state.subscriptions.values()):
        if sub.owner_id != user_id or sub.client_id != client_id or sub.status != "enabled":
            continue
        sub.status = "authorization_revoked"
        session = state.sessions.get(sub.session_id)
        if session is not None:
            await send(state, session, frames.revocation(sub.to_json()), "revocation")
        revoked.append(sub.id)
    return revoked


async def close_all(
    state: State, code: int, reason: str = "", session_id: str | None = None
) -> int:
    """Close every session (or one) with the given code, concurrently."""
    targets = list(_targets(state, session_id))
    await asyncio.gather(*(close_session(s, code, reason) for s in targets))
    return len(targets)


def _targets(state: State, session_id: str | None) -> list[Session]:
    if session_id is None:
        return list(state.sessions.values())
    session = state.sessions.get(session_id)
    return [session] if session is not None else []
