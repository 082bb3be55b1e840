"""Dashboard: routes, templates, static files, auth, JSON API, live feed.

app.py calls `setup_web(app, settings, resolve)`; `resolve(app)` builds the `Services` the pages
use once the database is up (web/ never reaches into bot/ or ffmpeg/ itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Callable

from aiohttp import web

from streamerhub.clock import Clock
from streamerhub.config import Settings
from streamerhub.web.context import SERVICES, Services

STATIC = Path(__file__).parent / "static"


def setup_web(
    app: web.Application, settings: Settings, resolve: Callable[[web.Application], Services]
) -> None:
    """Add the dashboard to the daemon's app: guards, sessions, templates, pages, feed."""
    from streamerhub.web import (
        auth,
        feed,
        login,
        pages,
        preferences,
        render,
        security,
        twitch_oauth,
    )

    app.middlewares.extend(
        [
            security.headers_middleware,
            security.host_middleware(security.allowed_hosts(settings)),
            *auth.session_middlewares(settings, inner=[render.error_middleware]),
        ]
    )
    render.setup_templates(app)
    security.quiet_bad_requests()

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES] = resolve(app)

        def follow(clock: Clock) -> None:
            svc.settings = preferences.applied(svc.settings, clock)

        # The daemon's clock (app.py loaded the browser's choice into it: it wins over
        # config.toml's) is in [general] for every page; a change in Settings follows at once.
        follow(svc.clock.current)
        svc.clock.listeners.append(follow)
        yield
        svc.clock.listeners.remove(follow)

    async def setup_link_ctx(app: web.Application) -> AsyncIterator[None]:
        from streamerhub.web.users import UserStore

        await auth.announce_setup_link(settings, UserStore(app[SERVICES].db))
        yield

    app.cleanup_ctx.extend([services_ctx, feed.feed_ctx, setup_link_ctx])
    app.on_shutdown.append(feed.close_feeds)
    login.add_routes(app)
    twitch_oauth.add_routes(app)
    feed.add_routes(app)
    pages.add_routes(app)
    app.router.add_static("/static", STATIC, name="static", append_version=False)
