"""`streamerhub run --demo`: a living dashboard in one command, without Twitch credentials.

The fake Twitch runs in-process with a stream that stays live (follows, subs, cheers, a raid, a
gift bomb now and then…) and the daemon is pointed at it. The first start also seeds four weeks
of past streams, and makes a sample clip, a target on the local RTMP server ([demo] ingest_url)
and a job that runs when something listens there. Demo data lives in its own embedded
PostgreSQL under DATA_DIR/demo — a configured [database] url is ignored — so it never mixes with
real data; every page carries a banner saying it is a demo.

The visitor is the owner, signed in on the first page without a password: the demo listens on
127.0.0.1 only (whatever [web] host says), so only someone on this machine reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web

from streamerhub.analytics.seed import store_follower_totals, store_viewer_samples
from streamerhub.app import CHANNEL_LINK, DB, DEMO_MODE, EVENTS, MULTISTREAM, SETTINGS
from streamerhub.bot.oauth import Grant, Identity
from streamerhub.bot.registry import has_channels
from streamerhub.config import Settings
from streamerhub.errors import StreamerHubError
from streamerhub.events.normalise import normalise
from streamerhub.fake_twitch import FakeTwitch
from streamerhub.fake_twitch.seed import History, seed_history
from streamerhub.fake_twitch.simulate import CHANNEL, stay_live
from streamerhub.log import get_logger
from streamerhub.web.auth import auth_middleware, sign_in
from streamerhub.web.context import SERVICES
from streamerhub.web.users import User, UserError, UserStore

log = get_logger(__name__)

DEMO_DIR = "demo"
DEMO_HOST = "127.0.0.1"  # the visitor is signed in as the owner: never reachable from elsewhere
OWNER = "owner"
HISTORY_FILE = "demo-history"  # when the seeded history ends: made once, kept in step after
SAMPLE_DIR = "sample"  # the sample clip, made with FFmpeg on the first start
MULTISTREAM_FILE = "demo-multistream"  # the sample target and job exist (made once)
DEMO_KEY = "demo-stream-key"
SPEED = 2.0  # the simulated show runs twice as fast as life: something happens every second
LISTEN_WAIT = 30.0  # the show starts once the daemon subscribed (or after this long anyway)


@dataclass
class Demo:
    """The in-process fake Twitch the demo daemon talks to."""

    port: int
    speed: float = SPEED
    fake: FakeTwitch | None = field(default=None, repr=False)


DEMO = web.AppKey("web_demo", Demo)


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def demo_settings(settings: Settings) -> tuple[Settings, Demo]:
    """The same settings pointed at a fake Twitch and a separate embedded database."""
    demo = Demo(_free_port())
    base = f"http://127.0.0.1:{demo.port}"
    values = {
        **settings.values,
        ("database", "url"): "",
        ("web", "host"): DEMO_HOST,
        ("web", "allowed_hosts"): [],
        ("web", "public_url"): "",
        ("library", "import_dirs"): [str(settings.data_dir / DEMO_DIR / SAMPLE_DIR)],
        ("twitch", "client_id"): "streamerhub-demo",
        ("twitch", "client_secret"): "",
        ("twitch", "api_url"): f"{base}/helix",
        ("twitch", "auth_url"): f"{base}/oauth2",
        ("twitch", "eventsub_url"): f"ws://127.0.0.1:{demo.port}/ws",
    }
    return Settings(MappingProxyType(values), settings.source, settings.data_dir / DEMO_DIR), demo


def add_demo(app: web.Application, demo: Demo) -> None:
    """Start the fake before every other part, and connect its channel once the web part is up."""
    app[DEMO] = demo
    app[DEMO_MODE] = True
    app.cleanup_ctx.insert(0, fake_twitch_ctx)
    # The owner exists before the web part would print a setup link asking for a password.
    names = [getattr(ctx, "__name__", "") for ctx in app.cleanup_ctx]
    at = names.index("services_ctx") + 1 if "services_ctx" in names else len(names)
    app.cleanup_ctx.insert(at, demo_owner_ctx)
    app.cleanup_ctx.append(connect_channel_ctx)
    app.cleanup_ctx.append(history_ctx)
    app.cleanup_ctx.append(multistream_ctx)
    # Inside the session middleware, before the one that resolves who is signed in.
    app.middlewares.insert(app.middlewares.index(auth_middleware), sign_in_visitor)


async def fake_twitch_ctx(app: web.Application) -> AsyncIterator[None]:
    demo = app[DEMO]
    demo.fake = FakeTwitch(port=demo.port, speed=demo.speed)
    await demo.fake.start()
    log.info("demo_fake_twitch_started", url=demo.fake.url, speed=demo.speed)
    show = asyncio.create_task(_show_when_listened(demo.fake), name="demo_show")
    try:
        yield
    finally:
        show.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await show
        await demo.fake.stop()


async def _show_when_listened(fake: FakeTwitch) -> None:
    """Today's simulated stream (it stays live), started once the daemon's EventSub client
    listens: a show played to nobody would lose its first follows while the daemon starts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LISTEN_WAIT
    while not fake.state.subscriptions and loop.time() < deadline:
        await asyncio.sleep(0.2)
    log.info("demo_show_started", subscriptions=len(fake.state.subscriptions))
    await stay_live(fake.state)


async def connect_channel_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connect the fake's channel (user 1000, "streamer") with a token it issued, once."""
    link, demo = app[CHANNEL_LINK], app[DEMO]
    if not await has_channels(link.db) and demo.fake is not None:
        token = demo.fake.state.issue_token("1000", client_id="streamerhub-demo")
        await link.connect_grant(Grant.from_json(token.grant_json()), Identity("1000", "streamer"))
        log.info("demo_channel_connected", channel_id="1000")
    yield


DEMO_OWNER = web.AppKey("demo_owner", User)


async def demo_owner_ctx(app: web.Application) -> AsyncIterator[None]:
    """The demo's owner account, made once (its password is random and never needed)."""
    store = UserStore(app[SERVICES].db)
    found = await store.by_login(OWNER)
    if found is None:
        try:
            owner = await store.create(OWNER, "owner", secrets.token_urlsafe(24))
        except UserError:  # another owner login exists in an older demo database
            owner = next(u for u in await store.list() if u.is_owner)
    else:
        owner = found[0]
    app[DEMO_OWNER] = owner
    yield


@web.middleware
async def sign_in_visitor(request: web.Request, handler: Any) -> web.StreamResponse:
    """A page visit without a live session signs the visitor in as the demo owner."""
    if request.method == "GET" and _is_page(request) and not await _signed_in(request):
        await sign_in(request, request.app[DEMO_OWNER], "setup")  # the one method with no secret
    response: web.StreamResponse = await handler(request)
    return response


def _is_page(request: web.Request) -> bool:
    return "Authorization" not in request.headers and not request.path.startswith(
        ("/api/", "/static/", "/healthz")
    )


async def _signed_in(request: web.Request) -> bool:
    from aiohttp_session import get_session

    sid = (await get_session(request)).get("sid")
    return (
        isinstance(sid, str)
        and await UserStore(request.app[SERVICES].db).session_user(sid) is not None
    )


async def history_ctx(app: web.Application) -> AsyncIterator[None]:
    """Weeks of past streams on the first demo start, so every chart has something to show.

    The history is made from the time saved in DATA_DIR/demo-history, so a later start makes the
    same one again: the fake Twitch's follower list (held in memory) then matches what is stored.
    """
    demo, settings = app[DEMO], app[SETTINGS]
    assert demo.fake is not None
    marker = settings.data_dir / HISTORY_FILE
    first = not marker.exists()
    now = datetime.now(timezone.utc) if first else datetime.fromisoformat(marker.read_text())
    history = seed_history(demo.fake.state, now)
    if first:
        await _store_history(app, history)
        marker.write_text(now.isoformat())
        log.info(
            "demo_history_seeded",
            streams=len(history.streams),
            follows=history.follows,
            followers=history.followers_before + history.follows,
        )
    yield


async def _store_history(app: web.Application, history: History) -> None:
    """Events through the event store (the real write path), then what the pollers would have
    written: a viewer count a minute and a follower total a day."""
    store, pool = app[EVENTS], app[DB].pool
    for stream in history.streams:
        for event in stream.events:
            store.submit(
                normalise(
                    str(uuid.uuid4()),
                    event.subscription_type,
                    event.version,
                    event.occurred_at.isoformat().replace("+00:00", "Z"),
                    event.payload(),
                )
            )
    await store.flush()
    for stream in history.streams:
        category = (stream.category_id, stream.category_name)
        await store_viewer_samples(
            pool, CHANNEL, stream.stream_id, stream.viewers, stream.title, category
        )
    await store_follower_totals(pool, CHANNEL, history.totals)


async def multistream_ctx(app: web.Application) -> AsyncIterator[None]:
    """A sample clip, a target on the local RTMP server and a job, made in the background on the
    first start (the clip takes FFmpeg a few seconds); the job runs when an RTMP server listens."""
    marker = app[SETTINGS].data_dir / MULTISTREAM_FILE
    task = None
    if not marker.exists():
        task = asyncio.create_task(_sample_job(app, marker), name="demo_sample_job")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _sample_job(app: web.Application, marker: Path) -> None:
    ms, settings = app[MULTISTREAM], app[SETTINGS]
    if ms.ffmpeg is None:
        log.warning("demo_multistream_skipped", reason="FFmpeg was not found: no sample clip")
        return
    try:
        clip = await _make_clip(ms.ffmpeg.path, settings.data_dir / SAMPLE_DIR)
        video = await ms.library.import_path({"path": str(clip)})
        url = settings.demo.ingest_url
        target = await ms.targets.create(
            {"name": "Local RTMP server", "url": url, "stream_key": DEMO_KEY}
        )
        job = await ms.create_job(
            {
                "name": "Sample rerun",
                "videos": [video.id],
                "targets": [target.id],
                "loop": "forever",
            }
        )
        marker.write_text(str(job.id))
        if not _listening(url):
            log.info(
                "demo_multistream_idle",
                job=job.id,
                reason=f"nothing listens on {url}: run an RTMP server there (Debian: nginx "
                "with libnginx-mod-rtmp) and press Start on the job",
            )
            return
        await _when_ready(ms, video.id)
        await ms.start_job(job.id)
        log.info("demo_multistream_live", job=job.id, url=url)
    except (StreamerHubError, OSError, asyncio.TimeoutError) as exc:
        log.warning("demo_multistream_skipped", reason=str(exc))


async def _make_clip(ffmpeg: str, folder: Path) -> Path:
    """15 s of test pattern with a tone, small and quick to encode."""
    folder.mkdir(parents=True, exist_ok=True)
    clip = folder / "sample-clip.mp4"
    if clip.exists():
        return clip
    partial = folder / "sample-clip.part.mp4"
    proc = await asyncio.create_subprocess_exec(
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "15",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "60",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        str(partial),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    if proc.returncode != 0:
        raise StreamerHubError(f"FFmpeg could not make the sample clip: {err.decode()[-300:]}")
    partial.replace(clip)
    return clip


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 1935), 1):
            return True
    except OSError:
        return False


async def _when_ready(ms: Any, video_id: int, timeout: float = 120) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (video := await ms.library.get(video_id)).status != "ready":
        if video.status == "rejected" or loop.time() > deadline:
            raise StreamerHubError(f"the sample clip is {video.status}: {video.reason or ''}")
        await asyncio.sleep(0.5)
