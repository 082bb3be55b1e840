"""The Multistream page: its shell (tables filled and kept live from /api/v1) and the job form's
Twitch category suggestions."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from streamerhub.errors import StreamerHubError
from streamerhub.web.auth import require
from streamerhub.web.channel_picker import channels
from streamerhub.web.context import services


@require("owner")
async def multistream_page(request: web.Request) -> web.StreamResponse:
    """The shell of the multistream page; its tables are filled and kept live from /api/v1."""
    svc = services(request)
    return aiohttp_jinja2.render_template(
        "multistream.html",
        request,
        {
            "channels": await channels(request),
            "available": svc.multistream,
            "max_upload": svc.settings.ffmpeg.max_upload_bytes,
        },
    )


@require("owner")
async def category_search(request: web.Request) -> web.StreamResponse:
    """GET /multistream/categories?q=…: the job form's category suggestions (JSON)."""
    query = request.query.get("q", "").strip()
    link = services(request).channel_link
    if len(query) < 2 or link is None:
        return web.json_response([])
    try:
        found = await link.search_categories(query[:100])
    except StreamerHubError as exc:
        return web.json_response({"error": f"Twitch category search failed: {exc}"}, status=502)
    return web.json_response(found[:10])
