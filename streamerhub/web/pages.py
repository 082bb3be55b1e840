"""The dashboard's pages and their routes: Overview (overview.py), Events (events_page.py),
Streams (streams_page.py), Multistream (multistream_page.py) and Settings (settings_page.py).

Every page is server-rendered; the little JavaScript in static/ adds live updates (the feed,
multistream states) and the upload progress bar.
"""

from __future__ import annotations

from aiohttp import web

from streamerhub.web import (
    chatbot_page,
    events_page,
    multistream_page,
    overview,
    settings_page,
    streams_page,
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview.overview_page, name="overview")
    app.router.add_get("/overview/data", overview.overview_data)
    app.router.add_get("/events", events_page.events_page, name="events")
    app.router.add_get("/events/export", events_page.events_export)
    app.router.add_get("/streams", streams_page.streams_page, name="streams")
    app.router.add_get("/streams/{channel_id}/{stream_id}", streams_page.stream_page, name="stream")
    app.router.add_get("/multistream", multistream_page.multistream_page, name="multistream")
    app.router.add_get("/multistream/categories", multistream_page.category_search)
    settings_page.add_routes(app)
    chatbot_page.add_routes(app)
