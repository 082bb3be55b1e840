"""The fake's aiohttp app and `FakeTwitch`, the async context manager tests start it with."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler

from . import bits, chat, conduits, control, helix, history, ingest, oauth
from .delivery import close_all
from .keys import STATE_KEY
from .replies import ApiError
from .simulate import simulation_ctx
from .state import Failure, Settings, State
from .websocket import eventsub_ws


def build_app(state: State) -> web.Application:
    """Assemble the fake: /ws, /helix, /oauth2 and the /_fake control API, sharing `state`."""
    # Bulk /_fake/events floods carry thousands of events in one body.
    app = web.Application(middlewares=[edge_middleware], client_max_size=512 * 1024**2)
    app[STATE_KEY] = state
    app.router.add_get("/ws", eventsub_ws)
    helix.add_routes(app)
    history.add_routes(app)
    oauth.add_routes(app)
    control.add_routes(app)
    conduits.add_routes(app)
    chat.add_routes(app)
    ingest.add_routes(app)
    bits.add_routes(app)
    app.cleanup_ctx.append(simulation_ctx)
    app.on_shutdown.append(_close_sockets)
    return app


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Injected faults, Helix rate limiting and Twitch-shaped errors, before any handler."""
    if request.path.startswith("/_fake/"):
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
    state = request.config_dict[STATE_KEY]
    is_helix, is_oauth = request.path.startswith("/helix/"), request.path.startswith("/oauth2/")
    exhausted = False
    bucket = state.bucket_for(request.headers.get("Authorization", ""))
    try:
        failure = state.take_failure(request.path, request.method)
        if failure is not None and failure.applied:
            # Twitch did the work but the answer never arrived (timeout or 5xx on the way back).
            await handler(request)
        if failure is not None:
            exhausted = failure.status == 429 and not failure.eventsub_limit
            raise await _fault(state, failure)
        if is_helix:
            state.counters["helix_requests"] += 1
            if not bucket.take():
                exhausted = True
                raise ApiError(429, "Too Many Requests")
        response = await handler(request)
    except ApiError as exc:
        response = exc.response(oauth=is_oauth)
    except web.HTTPException as exc:
        if exc.status < 400 or not (is_helix or is_oauth):
            raise
        response = ApiError(exc.status, exc.reason).response(oauth=is_oauth)
    if is_helix:
        response.headers.update(bucket.headers(exhausted))
    return response


async def _fault(state: State, failure: Failure) -> ApiError:
    state.counters["faults_injected"] += 1
    if failure.status == "timeout":
        try:  # hang, but let a stopping server go at once
            await asyncio.wait_for(state.stopping.wait(), state.settings.hang_seconds)
        except asyncio.TimeoutError:
            pass
        return ApiError(504, "Gateway Timeout")
    if failure.eventsub_limit:
        return ApiError(429, "total cost exceeded")
    return ApiError(int(failure.status), "Injected failure")


async def _close_sockets(app: web.Application) -> None:
    app[STATE_KEY].stopping.set()
    await close_all(app[STATE_KEY], WSCloseCode.GOING_AWAY, "server shutting down")


class FakeTwitch:
    """A running fake Twitch on 127.0.0.1: `async with FakeTwitch() as fake: fake.url …`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        simulate: bool = False,
        keepalive_default: float = 10,
        **knobs: Any,
    ) -> None:
        self.host, self.port = host, port
        self.state = State(
            Settings(keepalive_default=keepalive_default, simulate=simulate, **knobs)
        )
        self.app = build_app(self.state)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """http://host:port, the root every other URL hangs off."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The EventSub WebSocket endpoint."""
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def api_url(self) -> str:
        """The Helix base (no trailing slash)."""
        return f"{self.url}/helix"

    @property
    def auth_url(self) -> str:
        """The OAuth base (no trailing slash)."""
        return f"{self.url}/oauth2"

    @property
    def token(self) -> str:
        """An access token for user 1000 with every scope, ready to use."""
        return self.state.default_token.access_token

    @property
    def client_id(self) -> str:
        """The client id that goes with `token`."""
        return self.state.default_token.client_id

    async def start(self) -> FakeTwitch:
        """Bind and serve; with port 0 the chosen port is in `self.port` afterwards."""
        if self._runner is not None:
            return self
        # A short shutdown budget: a request held by a "timeout" fault must not stall stop().
        runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=2.0
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Close every socket and stop serving; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeTwitch:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
