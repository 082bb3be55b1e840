"""EventSub conduits: Helix /eventsub/conduits(+/shards), conduit subscriptions and their delivery.

What Twitch documents and this models (dev.twitch.tv/docs/eventsub/handling-conduit-events):
- conduits and shards are managed with app access tokens only, at most 5 conduits per client and
  20,000 shards per conduit; shard ids are "0".."n-1";
- a shard's transport here is a WebSocket session, assigned with PATCH /conduits/shards; a session
  must be assigned within its welcome's deadline (10 s) or it is closed 4003 like an unused one;
- subscriptions with `transport.method = conduit` take an app token, while the broadcaster's own
  grant of the scope (a user token of the same client) is what authorises them;
- each notification goes to one enabled shard (round-robin here); when that shard did not get it
  (its socket went), it is retried on one other enabled shard, and then dropped;
- a shard whose socket closes is disabled with the close's status and `conduit.shard.disabled` is
  sent to that subscription type on the conduit.
Fault knobs (POST /_fake/conduits/knobs): `assign_delay` holds every shard update that long, and
`kill` = {"shard_id": "0", "after": N} closes that shard's socket after N frames of the next
delivery, mid-burst.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from . import catalog, frames
from . import websocket as sockets
from .access import authenticate, page
from .frames import new_id, rfc3339_ns
from .keys import STATE_KEY
from .replies import ApiError, json_body, require
from .state import DISABLED_BY_CLOSE, Session, State, Subscription, Token

MAX_CONDUITS = 5
MAX_SHARDS = 20_000
SHARD_DISABLED = "conduit.shard.disabled"
KILL_CODE = 4006  # a killed shard socket looks like a network error to both sides


@dataclass(eq=False)
class Shard:
    """One shard of a conduit and its WebSocket transport."""

    id: str
    status: str = "websocket_disconnected"  # never assigned yet: nothing can be delivered
    session_id: str = ""
    connected_at: str | None = None
    disconnected_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        transport: dict[str, Any] = {"method": "websocket", "session_id": self.session_id}
        if self.connected_at:
            transport["connected_at"] = self.connected_at
        if self.disconnected_at:
            transport["disconnected_at"] = self.disconnected_at
        return {"id": self.id, "status": self.status, "transport": transport}


@dataclass(eq=False)
class Conduit:
    """A client's conduit: its shards and the round-robin cursor of its load balancing."""

    id: str
    client_id: str
    shards: list[Shard]
    cursor: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "shard_count": len(self.shards)}

    def resize(self, count: int) -> None:
        """Grow with fresh shards or drop those numbered count and above."""
        del self.shards[count:]
        self.shards.extend(Shard(str(i)) for i in range(len(self.shards), count))


@dataclass(eq=False)
class ConduitSubscription(Subscription):
    """A subscription whose transport is a conduit rather than one session."""

    conduit_id: str = ""

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["transport"] = {"method": "conduit", "conduit_id": self.conduit_id}
        return body


@dataclass
class Conduits:
    """The conduit side of one fake's state."""

    conduits: dict[str, Conduit] = field(default_factory=dict)
    assign_delay: float = 0.0
    kills: dict[str, int] = field(default_factory=dict)  # shard id -> frames before its kill
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def holding(self, session_id: str) -> tuple[Conduit, Shard] | None:
        """The conduit shard this session is the transport of, if any."""
        for conduit in self.conduits.values():
            for shard in conduit.shards:
                if shard.session_id == session_id and shard.status == "enabled":
                    return conduit, shard
        return None


_WORLDS: weakref.WeakKeyDictionary[State, Conduits] = weakref.WeakKeyDictionary()


def world(state: State) -> Conduits:
    """The conduits of this fake (kept beside State so state.py stays as it is)."""
    if state not in _WORLDS:
        _WORLDS[state] = Conduits()
    return _WORLDS[state]


# --------------------------------------------------------------------------- Helix
def _app_caller(request: web.Request) -> tuple[State, Token, Conduits]:
    state, token = authenticate(request)
    if token.user_id:
        raise ApiError(401, "Conduits require an app access token (client credentials)")
    return state, token, world(state)


def _owned(conduits: Conduits, token: Token, conduit_id: str) -> Conduit:
    conduit = conduits.conduits.get(conduit_id)
    if conduit is None or conduit.client_id != token.client_id:
        raise ApiError(404, "Conduit not found")
    return conduit


def _shard_count(body: dict[str, Any]) -> int:
    count = body.get("shard_count")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_SHARDS:
        raise ApiError(400, f"shard_count must be an integer from 1 to {MAX_SHARDS}")
    return count


async def list_conduits(request: web.Request) -> web.Response:
    _, token, conduits = _app_caller(request)
    mine = [c.to_json() for c in conduits.conduits.values() if c.client_id == token.client_id]
    return web.json_response({"data": mine})


async def create_conduit(request: web.Request) -> web.Response:
    _, token, conduits = _app_caller(request)
    count = _shard_count(await json_body(request))
    if sum(c.client_id == token.client_id for c in conduits.conduits.values()) >= MAX_CONDUITS:
        raise ApiError(429, f"A client may have at most {MAX_CONDUITS} conduits")
    conduit = Conduit(new_id(), token.client_id, [])
    conduit.resize(count)
    conduits.conduits[conduit.id] = conduit
    return web.json_response({"data": [conduit.to_json()]})


async def update_conduit(request: web.Request) -> web.Response:
    _, token, conduits = _app_caller(request)
    body = await json_body(request)
    conduit = _owned(conduits, token, str(body.get("id") or ""))
    conduit.resize(_shard_count(body))
    return web.json_response({"data": [conduit.to_json()]})


async def delete_conduit(request: web.Request) -> web.Response:
    state, token, conduits = _app_caller(request)
    conduit = _owned(conduits, token, require(request.query, "id"))
    del conduits.conduits[conduit.id]
    for sub in list(state.subscriptions.values()):
        if isinstance(sub, ConduitSubscription) and sub.conduit_id == conduit.id:
            del state.subscriptions[sub.id]
    return web.Response(status=204)


async def list_shards(request: web.Request) -> web.Response:
    _, token, conduits = _app_caller(request)
    conduit = _owned(conduits, token, require(request.query, "conduit_id"))
    wanted = request.query.get("status")
    shards = [s for s in conduit.shards if wanted in (None, s.status)]
    chunk, pagination = page(request, shards)
    return web.json_response({"data": [s.to_json() for s in chunk], "pagination": pagination})


async def update_shards(request: web.Request) -> web.Response:
    """PATCH: 202 with the shards updated and an error per shard that was not."""
    state, token, conduits = _app_caller(request)
    body = await json_body(request)
    conduit = _owned(conduits, token, str(body.get("conduit_id") or ""))
    if not isinstance(body.get("shards"), list):
        raise ApiError(400, "shards must be a list")
    if conduits.assign_delay:
        await asyncio.sleep(conduits.assign_delay)
    done, errors = [], []
    for item in body["shards"]:
        shard_id = str(item.get("id")) if isinstance(item, dict) else ""
        problem = _assign(state, conduits, conduit, shard_id, item)
        if problem is None:
            done.append(conduit.shards[int(shard_id)].to_json())
        else:
            errors.append({"id": shard_id, "message": problem, "code": ""})
    return web.json_response({"data": done, "errors": errors}, status=202)


def _assign(
    state: State, conduits: Conduits, conduit: Conduit, shard_id: str, item: Any
) -> str | None:
    if not shard_id.isdigit() or int(shard_id) >= len(conduit.shards):
        return "shard not found"
    transport = item.get("transport") if isinstance(item, dict) else None
    if not isinstance(transport, dict) or transport.get("method") != "websocket":
        return "the fake's shards take websocket transports only"
    session = state.sessions.get(str(transport.get("session_id")))
    if session is None or session.ws.closed or session.close_code is not None:
        return "websocket session not found or already disconnected"
    if state.session_subscriptions(session.id) or conduits.holding(session.id):
        return "websocket session is already in use"
    shard = conduit.shards[int(shard_id)]
    shard.status, shard.session_id = "enabled", session.id
    shard.connected_at, shard.disconnected_at = session.connected_at, None
    session.used = True
    return None


# --------------------------------------------------------------------------- subscriptions
def subscribe(
    state: State,
    token: Token,
    body: dict[str, Any],
    validate: Callable[[catalog.SubscriptionType, object], dict[str, str]],
) -> web.Response:
    """POST /eventsub/subscriptions with transport.method = conduit: eventsub_api hands it on,
    with its condition validator."""
    if token.user_id:
        raise ApiError(400, "The conduit transport requires an app access token")
    conduit = world(state).conduits.get(str((body.get("transport") or {}).get("conduit_id")))
    if conduit is None or conduit.client_id != token.client_id:
        raise ApiError(400, "The conduit does not exist")
    type_, version = str(body.get("type")), str(body.get("version"))
    if type_ == SHARD_DISABLED and version == "1":
        condition = _shard_condition(body.get("condition"), token)
        row = catalog.SubscriptionType(type_, version, None, ("client_id",))
    else:
        found = catalog.lookup(type_, version)
        if found is None:
            raise ApiError(400, "The combination of type and version is not valid")
        row, condition = found, validate(found, body.get("condition"))
        _authorized_by_user(state, row, condition, token)
    for sub in state.subscriptions.values():
        if (
            isinstance(sub, ConduitSubscription)
            and sub.conduit_id == conduit.id
            and (sub.type, sub.version, sub.condition) == (row.type, row.version, condition)
        ):
            raise ApiError(409, "subscription already exists")
    sub = ConduitSubscription(
        new_id(),
        row.type,
        row.version,
        condition,
        "",
        "",
        token.client_id,
        0,
        conduit_id=conduit.id,
    )
    state.subscriptions[sub.id] = sub
    owned = [s for s in state.subscriptions.values() if s.client_id == token.client_id]
    totals = {"total": len(owned), "total_cost": 0, "max_total_cost": 10_000}
    return web.json_response({"data": [sub.to_json()], **totals}, status=202)


def _shard_condition(raw: object, token: Token) -> dict[str, str]:
    if not isinstance(raw, dict) or raw.get("client_id") != token.client_id:
        raise ApiError(400, "condition.client_id must be the app token's client id")
    return {k: str(v) for k, v in raw.items() if k in ("client_id", "conduit_id") and v}


def _authorized_by_user(
    state: State, row: catalog.SubscriptionType, condition: dict[str, str], token: Token
) -> None:
    """The acting user must have granted this client the type's scope (any live user token)."""
    if row.scope is None:
        return
    acting = (
        condition.get("moderator_user_id")
        or condition.get("broadcaster_user_id")
        or condition.get("broadcaster_id")  # channel.ad_break.begin
    )
    for user_token in state.tokens.values():
        if (
            user_token.user_id == acting
            and user_token.client_id == token.client_id
            and user_token.valid()
            and catalog.scope_granted(row.scope, user_token.scopes)
        ):
            return
    raise ApiError(403, "subscription missing proper authorization")


# --------------------------------------------------------------------------- delivery
@dataclass
class _Pending:
    """Frames bound for one shard's session, each with the conduit to retry it on."""

    session: Session
    texts: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    conduits: list[Conduit] = field(default_factory=list)


def _live(state: State, shard: Shard) -> Session | None:
    if shard.status != "enabled":
        return None
    session = state.sessions.get(shard.session_id)
    if session is None or session.ws.closed or session.close_code is not None:
        return None
    return session


def _pick(state: State, conduit: Conduit, avoid: Session | None = None) -> Session | None:
    """The next enabled shard's session, round-robin; for a retry (`avoid` set), any other one."""
    if avoid is not None:
        others = [
            s for sh in conduit.shards if (s := _live(state, sh)) is not None and s is not avoid
        ]
        return state.chaos.choice(others) if others else None
    count = len(conduit.shards)
    for step in range(count):
        shard = conduit.shards[(conduit.cursor + step) % count]
        session = _live(state, shard)
        if session is not None and session is not avoid:
            conduit.cursor = (conduit.cursor + step + 1) % count
            return session
    return None


async def deliver(
    state: State, parsed: list[tuple[str, str, dict[str, Any], str | None]]
) -> tuple[int, list[str]]:
    """Send each event once per matching conduit subscription: one shard, retried on one other."""
    conduits = world(state)
    if not conduits.conduits:
        return 0, []
    stamper = frames.Stamper()
    batches: dict[Session, _Pending] = {}
    for type_, version, event, message_id in parsed:
        for sub in _matching(state, type_, version, event):
            conduit = conduits.conduits.get(sub.conduit_id)
            session = _pick(state, conduit) if conduit is not None else None
            if conduit is None or session is None:
                state.counters["conduit_dropped"] += 1
                continue
            mid = message_id or stamper.message_id()
            text = frames.notification(
                frames.dumps(mid),
                stamper.now(),
                frames.dumps(sub.to_json()),
                frames.dumps(type_),
                frames.dumps(version),
                frames.dumps(event),
            )
            pending = batches.setdefault(session, _Pending(session))
            pending.texts.append(text)
            pending.ids.append(mid)
            pending.conduits.append(conduit)
    return await _send(state, conduits, list(batches.values()), retry=True)


def _matching(
    state: State, type_: str, version: str, event: dict[str, Any]
) -> list[ConduitSubscription]:
    return [
        s
        for s in state.subscriptions.values()
        if isinstance(s, ConduitSubscription)
        and s.type == type_
        and s.version == version
        and s.status == "enabled"
        and s.matches(event)
    ]


async def _send(
    state: State, conduits: Conduits, batches: list[_Pending], retry: bool
) -> tuple[int, list[str]]:
    delivered, ids = 0, []
    retries: dict[Session, _Pending] = {}
    for pending in batches:
        sent = await _send_one(state, conduits, pending)
        delivered += sent
        ids.extend(pending.ids[:sent])
        for text, mid, conduit in zip(
            pending.texts[sent:], pending.ids[sent:], pending.conduits[sent:], strict=True
        ):
            other = _pick(state, conduit, avoid=pending.session) if retry else None
            if other is None:
                state.counters["conduit_dropped"] += 1
                continue
            state.counters["conduit_retries"] += 1
            again = retries.setdefault(other, _Pending(other))
            again.texts.append(text)
            again.ids.append(mid)
            again.conduits.append(conduit)
    if retries:
        more, more_ids = await _send(state, conduits, list(retries.values()), retry=False)
        delivered, ids = delivered + more, ids + more_ids
    return delivered, ids


async def _send_one(state: State, conduits: Conduits, pending: _Pending) -> int:
    """send_many, honouring a pending kill of this shard's socket after N frames."""
    held = conduits.holding(pending.session.id)
    kill_after = conduits.kills.pop(held[1].id, None) if held is not None else None
    if kill_after is None:
        return await sockets.send_many(state, pending.session, pending.texts, "notification")
    sent = await sockets.send_many(
        state, pending.session, pending.texts[:kill_after], "notification"
    )
    state.counters["conduit_shards_killed"] += 1
    await sockets.close_session(pending.session, KILL_CODE, "shard killed by the fake")
    return sent


# --------------------------------------------------------------------------- socket life
def session_ended(state: State, session: Session, close_code: int | None) -> None:
    """A shard's socket closed: disable the shard and tell conduit.shard.disabled subscribers."""
    conduits = world(state)
    held = conduits.holding(session.id)
    if held is None:
        return
    conduit, shard = held
    shard.status = DISABLED_BY_CLOSE.get(close_code or 0, "websocket_disconnected")
    shard.disconnected_at = rfc3339_ns()
    event = {"conduit_id": conduit.id, "shard_id": shard.id, "status": shard.status}
    event["transport"] = shard.to_json()["transport"]
    task = asyncio.get_running_loop().create_task(_shard_disabled(state, conduit, event))
    conduits.tasks.add(task)
    task.add_done_callback(conduits.tasks.discard)


async def _shard_disabled(state: State, conduit: Conduit, event: dict[str, Any]) -> None:
    conduits = world(state)
    stamper = frames.Stamper()
    batches: dict[Session, _Pending] = {}
    for sub in state.subscriptions.values():
        if (
            not isinstance(sub, ConduitSubscription)
            or sub.type != SHARD_DISABLED
            or sub.status != "enabled"
            or sub.condition.get("client_id") != conduit.client_id
            or sub.condition.get("conduit_id", conduit.id) != conduit.id
        ):
            continue
        target = conduits.conduits.get(sub.conduit_id)
        session = _pick(state, target) if target is not None else None
        if target is None or session is None:
            continue
        mid = stamper.message_id()
        pending = batches.setdefault(session, _Pending(session))
        pending.texts.append(
            frames.notification(
                frames.dumps(mid),
                stamper.now(),
                frames.dumps(sub.to_json()),
                frames.dumps(SHARD_DISABLED),
                frames.dumps("1"),
                frames.dumps(event),
            )
        )
        pending.ids.append(mid)
        pending.conduits.append(target)
    state.counters["conduit_shard_disabled"] += 1
    await _send(state, conduits, list(batches.values()), retry=True)


def session_moved(state: State, old: Session, new: Session) -> None:
    """session_reconnect: the shard follows its session to the new socket."""
    held = world(state).holding(old.id)
    if held is not None:
        held[1].session_id, held[1].connected_at = new.id, new.connected_at
        new.used = True


# --------------------------------------------------------------------------- control
async def post_knobs(request: web.Request) -> web.Response:
    """{"assign_delay": s} and/or {"kill": {"shard_id": "0", "after": N}}."""
    conduits = world(request.config_dict[STATE_KEY])
    body = await json_body(request)
    if "assign_delay" in body:
        conduits.assign_delay = float(body["assign_delay"] or 0)
    kill = body.get("kill")
    if isinstance(kill, dict):
        conduits.kills[str(kill.get("shard_id", "0"))] = int(kill.get("after", 0))
    return web.json_response({"assign_delay": conduits.assign_delay, "kills": conduits.kills})


async def get_conduits(request: web.Request) -> web.Response:
    """Every conduit with its shards, for assertions."""
    conduits = world(request.config_dict[STATE_KEY])
    return web.json_response(
        {
            "conduits": [
                {**c.to_json(), "shards": [s.to_json() for s in c.shards]}
                for c in conduits.conduits.values()
            ]
        }
    )


sockets.ON_MOVED.append(session_moved)
sockets.ON_ENDED.append(session_ended)


def add_routes(app: web.Application) -> None:
    """Helix conduit endpoints and their /_fake controls."""
    app.router.add_get("/helix/eventsub/conduits", list_conduits)
    app.router.add_post("/helix/eventsub/conduits", create_conduit)
    app.router.add_patch("/helix/eventsub/conduits", update_conduit)
    app.router.add_delete("/helix/eventsub/conduits", delete_conduit)
    app.router.add_get("/helix/eventsub/conduits/shards", list_shards)
    app.router.add_patch("/helix/eventsub/conduits/shards", update_shards)
    app.router.add_post("/_fake/conduits/knobs", post_knobs)
    app.router.add_get("/_fake/conduits", get_conduits)
