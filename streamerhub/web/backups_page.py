"""The Backups block of the Settings page: list with sizes and ages, start one, download one.
Owners only: a backup holds every event and the sealed secrets."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamerhub.web.auth import flash, require
from streamerhub.web.context import services


def backups_facts(request: web.Request) -> dict[str, Any]:
    """What the Settings page's Backups block shows; empty when backups are not wired in."""
    backups = services(request).backups
    if backups is None:
        return {}
    listed = list(backups.backups())
    return {
        "folder": str(backups.folder),
        "running": backups.running,
        "list": listed,
        "last_good": next((b for b in listed if b.verified_at), None),
        "failure": backups.last_failure,
        "banner": backups.banner(),
    }


@require("owner")
async def start_backup(request: web.Request) -> web.StreamResponse:
    """POST /settings/backups: take one now, in the background."""
    backups = services(request).backups
    if backups is None:
        raise web.HTTPNotFound(text="Backups are not available in this daemon.")
    started = backups.start()
    await flash(
        request,
        "Backup started: it appears below once written and verified (reload in a moment)."
        if started
        else "A backup is already running.",
    )
    raise web.HTTPSeeOther("/settings#backups")


@require("owner")
async def download_backup(request: web.Request) -> web.StreamResponse:
    """GET /settings/backups/{name}: the .dump file (only names the folder lists)."""
    backups = services(request).backups
    path = backups.path_of(request.match_info["name"]) if backups else None
    if path is None:
        raise web.HTTPNotFound(text="No such backup: it may have been pruned.")
    return web.FileResponse(
        path,
        headers={
            "Content-Disposition": f'attachment; filename="{path.name}"',
            "Content-Type": "application/octet-stream",
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/settings/backups", start_backup)
    app.router.add_get("/settings/backups/{name}", download_backup)
