"""Setting a job's title, category and tags on the Twitch channels its targets belong to."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Collection, Protocol, runtime_checkable

from streamerhub.ffmpeg.jobs import Job
from streamerhub.ffmpeg.jobstore import JobStore
from streamerhub.log import get_logger, redact

log = get_logger(__name__)

# app.py passes the bot's Helix "modify channel information" here: (channel id, {"title",
# "category" (a name or id, as the user typed it), "tags"}) → a short description of what was
# done; raise with a readable message when Twitch refused. ffmpeg/ must not import bot/.
ChannelUpdater = Callable[[str, dict[str, Any]], Awaitable[str]]
HELIX_TIMEOUT = 15.0


@runtime_checkable
class ConnectedChannels(Protocol):
    """An updater that also knows which channels are connected (app.py wires the bot's
    BotChannelUpdater): linked channels that are not connected are skipped, not failed."""

    async def connected_channel_ids(self) -> Collection[str]: ...


def channel_info(job: Job) -> dict[str, Any]:
    """The channel information a job sets: only what the user filled in."""
    return {
        k: v
        for k, v in (
            ("title", job.title),
            ("category", job.category),
            ("tags", list(job.tags) or None),
        )
        if v
    }


async def update_channels(jobs: JobStore, updater: ChannelUpdater | None, job: Job) -> None:
    """Set the job's info on every connected channel linked to its targets; record each."""
    wanted = channel_info(job)
    if not wanted:
        return
    linked = await jobs.linked_channels([t for t, _ in job.targets])
    knows: object = updater  # a ChannelUpdater may also be ConnectedChannels
    if isinstance(knows, ConnectedChannels):
        connected = set(await knows.connected_channel_ids())
        linked = [(t, c) for t, c in linked if c in connected]
    for _target_id, channel_id in linked:
        ok, detail = await call_updater(updater, channel_id, wanted)
        await jobs.record_channel_update(job.id, channel_id, wanted, ok, detail)
        if ok:
            log.info("channel_info_set", job=job.id, channel=channel_id, detail=detail)
        else:  # the stream runs, but under the wrong title: someone must act
            log.warning("channel_info_failed", job=job.id, channel=channel_id, detail=detail)


async def call_updater(
    updater: ChannelUpdater | None, channel_id: str, wanted: dict[str, Any]
) -> tuple[bool, str]:
    """(ok, what happened): the updater's failure is recorded, never fatal to the job."""
    if updater is None:
        return False, "no Twitch client in this daemon: title and category not set"
    try:
        return True, str(await asyncio.wait_for(updater(channel_id, wanted), HELIX_TIMEOUT))
    except asyncio.TimeoutError:
        return False, f"Twitch did not answer within {HELIX_TIMEOUT:g} s"
    except Exception as exc:  # noqa: BLE001 - whatever Twitch or the client said, the job keeps running
        return False, redact(str(exc)) or type(exc).__name__
