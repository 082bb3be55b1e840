"""Linked Twitch accounts on push targets: linking both ways, the key read from Twitch, and
Twitch's own word on whether a push is live, against the fake Twitch and a real ingest.

The ingest is nginx-rtmp whose `on_publish` asks the fake Twitch (`/_fake/ingest/on_publish`),
so, as on Twitch, a key of no account is refused and a channel is live on /streams only while a
push with *its* key reaches the ingest.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from conftest import make_settings
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from media import MediaSet, media_set, no_leftover_ffmpeg
from nginx_rtmp import NginxRtmp, needs_nginx

from streamerhub.bot.accounts import BotTwitchAccounts
from streamerhub.bot.oauth import FILL_KEY_SCOPES, LOGIN_SCOPES, Grant
from streamerhub.bot.service import BotDeps, TwitchBot
from streamerhub.bot.tokens import TokenStore
from streamerhub.crypto import Keyring
from streamerhub.db import Database
from streamerhub.errors import InvalidInput
from streamerhub.events.store import EventStore
from streamerhub.fake_twitch import FakeTwitch
from streamerhub.fake_twitch.channel import Follower
from streamerhub.ffmpeg.linked import LinkedTarget, StreamKeyUnavailable
from streamerhub.ffmpeg.liveness import LivenessMonitor
from streamerhub.ffmpeg.policy import RestartPolicy
from streamerhub.ffmpeg.service import Multistream

__all__ = ["media_set", "no_leftover_ffmpeg"]  # fixtures used by name

SECRET = "fake-client-secret-0123"
UNREACHABLE = "rtmp://127.0.0.1:9/app"  # the discard port: nothing listens, a key test is quick


class TwitchIngest(NginxRtmp):
    """nginx-rtmp whose on_publish is the fake Twitch's: Twitch decides which keys it takes."""

    def __init__(self, folder: Path, fake: FakeTwitch) -> None:
        super().__init__(folder, set(), record=False)
        self.fake = fake

    async def _on_publish(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.fake.url}/_fake/ingest/on_publish", data=form) as answer,
        ):
            return web.Response(status=answer.status)


class Rig:
    def __init__(self, fake: FakeTwitch, db: Database, tmp: Path) -> None:
        self.fake, self.db, self.tmp = fake, db, tmp
        self.keyring = Keyring(AESGCM.generate_key(bit_length=256))
        self.bot: TwitchBot | None = None
        self.store: EventStore | None = None

    def settings_env(self) -> dict[str, str]:
        return {
            "STREAMERHUB_TWITCH_CLIENT_ID": self.fake.client_id,
            "STREAMERHUB_TWITCH_CLIENT_SECRET": SECRET,
            "STREAMERHUB_TWITCH_API_URL": self.fake.api_url,
            "STREAMERHUB_TWITCH_AUTH_URL": self.fake.auth_url,
            "STREAMERHUB_TWITCH_EVENTSUB_URL": self.fake.ws_url,
        }

    async def connect(self, user_id: str, login: str, scopes: tuple[str, ...]) -> None:
        """The streamer connected this channel (a grant with these scopes)."""
        state = self.fake.state
        if user_id not in state.users:
            state.add_user(user_id, login, login.title())
        token = state.issue_token(user_id, list(scopes), self.fake.client_id)
        await TokenStore(self.db, self.keyring).save_login(
            user_id,
            login,
            login.title(),
            Grant(token.access_token, token.refresh_token, 3600, tuple(scopes)),
        )

    def multistream(self, config: str = "") -> Multistream:
        settings = make_settings(self.tmp, config, **self.settings_env())
        ms = Multistream(settings, policy=RestartPolicy(backoff_initial=0.5, backoff_max=2.0))
        ms.accounts = BotTwitchAccounts(lambda: self.bot, lambda: self.db, StreamKeyUnavailable)
        return ms


@pytest.fixture
async def rig(db: Database, tmp_path: Path) -> AsyncIterator[Rig]:
    async with FakeTwitch(keepalive_default=3) as fake:
        rig = Rig(fake, db, tmp_path)
        (tmp_path / "spool").mkdir()
        store = rig.store = EventStore(db, tmp_path / "spool")
        await store.start()
        try:
            yield rig
        finally:
            if rig.bot is not None:
                await rig.bot.stop()
            await store.stop()


async def start_bot(rig: Rig) -> TwitchBot:
    settings = make_settings(rig.tmp, **rig.settings_env())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    assert rig.store is not None
    rig.bot = TwitchBot(BotDeps(settings, rig.db, rig.keyring, rig.store))
    await rig.bot.start()
    return rig.bot


async def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out: {what}")


# ----------------------------------------------------------------------------- linking


async def test_linking_by_login_or_connected_channel_and_the_key_read_from_twitch(
    rig: Rig,
) -> None:
    state = rig.fake.state
    state.add_user("3000", "someone_else", "SomeoneElse")
    for n in range(12):  # 12 people follow the account linked by login
        state.followers.setdefault("3000", {})[str(9000 + n)] = _follower(str(9000 + n))
    await rig.connect("2000", "alt_one", FILL_KEY_SCOPES)
    await rig.connect("2100", "no_key_grant", LOGIN_SCOPES)
    await start_bot(rig)
    ms = rig.multistream()
    async with ms.running(rig.db, rig.keyring):
        a = await ms.create_target({"name": "A", "url": UNREACHABLE, "stream_key": "k" * 16})
        b = await ms.create_target({"name": "B", "url": UNREACHABLE, "stream_key": "k" * 16})
        c = await ms.create_target({"name": "C", "url": UNREACHABLE, "stream_key": "k" * 16})

        # By login, an account nobody connected: public data with the app's own token; the
        # key cannot be read, so the key test runs (and says the ingest is unreachable).
        linked = await ms.link_target(a.id, {"login": "SomeOne_Else"})
        account = linked["target"]["account"]
        assert (account["user_id"], account["login"], account["display_name"]) == (
            "3000",
            "someone_else",
            "SomeoneElse",
        )
        assert account["followers"] == 12 and account["via"] == "login"
        assert account["avatar_url"].endswith("/3000.png")
        assert linked["key_test"]["result"] == "unreachable"
        assert (await ms.targets.get(a.id)).key_test["result"] == "unreachable"

        # A connected channel that granted channel:read:stream_key: the key comes from Twitch.
        filled = await ms.link_target(b.id, {"channel_id": "2000", "fill_key": True})
        assert filled["target"]["account"]["key_source"] == "helix"
        assert filled["target"]["channel_id"] == "2000"  # its title/category follow the job
        assert await ms.targets.open_key(b.id) == state.channel("2000").stream_key
        assert state.channel("2000").stream_key not in json.dumps(filled)

        # Scope missing: said plainly, with what to do; the target keeps its key.
        with pytest.raises(InvalidInput) as refused:
            await ms.link_target(c.id, {"channel_id": "2100", "fill_key": True})
        assert "channel:read:stream_key" in str(refused.value)
        assert "--fill-key" in str(refused.value)
        assert await ms.targets.open_key(c.id) == "k" * 16
        assert (await ms.targets.get(c.id)).account is None
        # An account linked by login has no grant at all: no key to read.
        with pytest.raises(InvalidInput, match="not a connected channel"):
            await ms.link_target(c.id, {"login": "someone_else", "fill_key": True})
        with pytest.raises(InvalidInput, match="Twitch has no account named 'nobody_here'"):
            await ms.link_target(c.id, {"login": "nobody_here"})
        with pytest.raises(InvalidInput, match="give either login"):
            await ms.link_target(c.id, {})

        await ms.unlink_target(a.id)
        assert (await ms.targets.get(a.id)).account is None


def _follower(user_id: str) -> Follower:
    return Follower(user_id, f"f{user_id}", f"F{user_id}", "2024-01-01T00:00:00Z")


# ----------------------------------------------------------------------------- liveness


@needs_nginx
@pytest.mark.ffmpeg
async def test_pushing_but_twitch_says_offline_is_raised_then_cleared_and_renames_follow(
    rig: Rig, media_set: MediaSet, tmp_path: Path, no_leftover_ffmpeg: None
) -> None:
    state = rig.fake.state
    await rig.connect("2000", "alt_one", FILL_KEY_SCOPES)
    main_key = state.channel("1000").stream_key  # the streamer's main account, not linked
    await start_bot(rig)
    config = (
        f'[library]\nimport_dirs = ["{media_set.folder}"]\n'
        "[ffmpeg]\ntwitch_check_interval = 1.0\ntwitch_offline_warning = 5.0\n"
        "twitch_refresh_interval = 10.0\n"
    )
    ingest = TwitchIngest(tmp_path / "ingest", rig.fake)
    await ingest.start()
    ms = rig.multistream(config)
    try:
        async with ms.running(rig.db, rig.keyring):
            video = await ms.library.import_path({"path": str(media_set.ready)})
            await wait_for(lambda: _ready(ms, video.id), 30, "the video was never prepared")
            # The key typed in is the main account's: FFmpeg is live, the ingest takes it...
            target = await ms.create_target(
                {"name": "Alt", "url": ingest.url, "stream_key": main_key}
            )
            linked = await ms.link_target(target.id, {"channel_id": "2000"})
            assert linked["key_test"]["result"] == "ok"  # ...so the key test cannot tell
            job = await ms.create_job(
                {"name": "alt", "videos": [video.id], "targets": [target.id], "loop": "forever"}
            )
            await ms.start_job(job.id)

            async def twitch_view() -> dict[str, Any]:
                body = await ms.job_json(await ms.jobs.get(job.id))
                return {"job": body, **body["targets"][0]["twitch"]}

            # ...but Twitch never lists alt_one: the warning comes, naming the likely causes.
            raised = await wait_for(
                lambda: _when(twitch_view(), lambda v: v["warning"]), 25, "no offline warning"
            )
            assert raised["ours"] == "live" and raised["twitch"] == "offline"
            assert "another account" in raised["warning"] and "alt_one" in raised["warning"]
            assert any("Twitch says alt_one is offline" in w for w in raised["job"]["warnings"])

            # Renamed on Twitch: the link follows the user id.
            state.users["2000"].update(login="alt_renamed", display_name="AltRenamed")
            await wait_for(
                lambda: _when(
                    ms.targets.get(target.id), lambda t: t.account["login"] == "alt_renamed"
                ),
                20,
                "the rename was not picked up",
            )

            # Fix it the way the warning says: fill the key from Twitch. The push restarts with
            # alt's key, Twitch lists the stream, and the warning is gone.
            state.channel("2000").viewer_count = 0
            await ms.link_target(target.id, {"channel_id": "2000", "fill_key": True})
            cleared = await wait_for(
                lambda: _when(twitch_view(), lambda v: v["twitch"] == "live"), 25, "never live"
            )
            assert cleared["warning"] is None and not cleared["job"]["warnings"]
            state.channel("2000").viewer_count = 7
            await wait_for(lambda: _when(twitch_view(), lambda v: v["viewers"] == 7), 15, "viewers")
            stats = await ms.account_stats(target.id)
            assert stats["streams_pushed"] >= 1 and stats["hours_on_air"] > 0
            assert stats["peak_viewers"] == 7 and stats["hours_confirmed_live"] > 0
            await ms.stop_job(job.id)
    finally:
        await ingest.stop()


async def _ready(ms: Multistream, video_id: int) -> bool:
    video = await ms.library.get(video_id)
    assert video.status != "rejected", video.reason
    return video.status == "ready"


async def _when(value: Any, check: Callable[[Any], Any]) -> Any:
    got = await value
    return got if check(got) else None


# ----------------------------------------------------------------------------- rate


class _Ten:
    """10 linked accounts over 3 running jobs, every push live on our side."""

    def __init__(self) -> None:
        self.linked = [LinkedTarget(1 + n % 3, 100 + n, str(5000 + n)) for n in range(10)]
        self.samples = 0

    async def of_running_jobs(self) -> list[LinkedTarget]:
        return self.linked

    async def record(self, *_args: Any) -> None:
        self.samples += 1

    async def refresh(self, *_args: Any) -> None:
        pass

    async def login_of(self, target_id: int) -> str:
        return f"target{target_id}"


async def test_helix_stays_far_within_the_rate_limit_with_10_accounts_and_3_jobs(
    rig: Rig,
) -> None:
    for n in range(10):
        rig.fake.state.add_user(str(5000 + n), f"acc{n}", f"Acc{n}")
    rig.fake.state.channel("5003").go_live()
    await start_bot(rig)  # no connected channel: no EventSub traffic, only the app token's
    accounts = BotTwitchAccounts(lambda: rig.bot, lambda: rig.db, StreamKeyUnavailable)
    settings = make_settings(rig.tmp, **rig.settings_env()).ffmpeg
    store = _Ten()
    monitor = LivenessMonitor(
        store,  # type: ignore[arg-type]  # the query side only
        lambda: accounts,
        lambda _job, _target: True,
        interval=settings.twitch_check_interval,
        warn_after=settings.twitch_offline_warning,
        refresh_every=settings.twitch_refresh_interval,
    )
    counters = rig.fake.state.counters
    before = counters["helix_requests"]
    await monitor.check_once()  # first check: a refresh (names, avatars, followers) too
    with_refresh = counters["helix_requests"] - before
    before = counters["helix_requests"]
    delays = [await monitor.check_once() for _ in range(5)]
    per_check = (counters["helix_requests"] - before) / 5
    assert per_check == 1  # one GET /streams for all 10 accounts, whatever the job count
    assert monitor.helix_calls == 5 + with_refresh
    assert with_refresh == 1 + 1 + 10  # + one GET /users, + a follower total per account
    assert store.samples == 6 * 10
    live = monitor.of(1, 103)  # account 5003, the one Twitch lists
    assert live is not None and live.twitch == "live"
    # At the default settings: unconfirmed pushes are asked about every 15 s, one refresh
    # every 5 minutes. Twitch allows 800 points a minute per client (and per user).
    per_minute = per_check * 60 / min(delays) + (with_refresh - 1) * 60 / 300
    limit = rig.fake.state.settings.ratelimit_limit
    print(json.dumps({"helix_per_minute": per_minute, "bucket_per_minute": limit}))
    assert per_minute < limit / 50
    assert counters["faults_injected"] == 0


# ----------------------------------------------------------------------------- the fake


async def test_the_fake_lists_a_channel_live_only_while_a_push_with_its_key_checks_in() -> None:
    async with FakeTwitch() as fake, aiohttp.ClientSession() as http:
        key = fake.state.channel("1000").stream_key
        headers = {"Authorization": f"Bearer {fake.token}", "Client-Id": fake.client_id}

        async def live() -> list[str]:
            url = f"{fake.api_url}/streams?user_id=1000"
            async with http.get(url, headers=headers) as resp:
                return [s["user_id"] for s in (await resp.json())["data"]]

        async def hook(name: str, key: str) -> int:
            async with http.post(f"{fake.url}/_fake/ingest/{name}", data={"name": key}) as r:
                return r.status

        assert await live() == []
        assert await hook("on_publish", "live_not_anyones_key") == 403
        assert fake.state.counters["ingest_rejected"] == 1 and await live() == []
        assert await hook("on_publish", key) == 200
        assert await live() == ["1000"]
        assert await hook("on_publish_done", key) == 200
        assert await live() == []
        knob = {"user_id": "1000", "publishing": True}
        async with http.post(f"{fake.url}/_fake/publishing", json=knob) as resp:
            assert (await resp.json())["live"] is True
        assert await live() == ["1000"]
        async with http.get(
            f"{fake.api_url}/streams/key?broadcaster_id=1000", headers=headers
        ) as r:
            assert (await r.json())["data"][0]["stream_key"] == key


# ----------------------------------------------------------------------------- the dashboard


async def test_a_streamer_links_an_account_by_login_on_the_multistream_page(
    daemon_factory: Any, db_url: str
) -> None:
    from test_browser import (
        PROBLEMS,
        become_owner,
        chromium,
        daemon_config,
        new_page,
        require_chromium,
        shot,
    )

    require_chromium()
    PROBLEMS.clear()
    async with FakeTwitch() as fake:
        fake.state.add_user("3000", "someone_else", "SomeoneElse")
        for n in range(3):
            fake.state.followers.setdefault("3000", {})[str(n)] = _follower(str(n))
        config = daemon_config(db_url, fake) + f'client_secret = "{SECRET}"\n'
        # Started off the loop: the fake Twitch on this loop must answer the daemon's start.
        daemon = await asyncio.to_thread(daemon_factory(config).start)
        async with chromium() as browser:
            page = await new_page(browser)
            await become_owner(page, daemon)
            await page.goto(f"{daemon.url}/multistream")
            await page.evaluate(
                """async (url) => {
                const h = {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content,
                           'Content-Type': 'application/json'};
                await fetch('/api/v1/targets', {method: 'POST', headers: h,
                    body: JSON.stringify({name: 'Alt', url, stream_key: 'live_0000_abcdefgh'})});
            }""",
                UNREACHABLE,
            )
            await page.reload()
            await page.wait_for_selector("#link-target option:has-text('Alt')", state="attached")
            await page.fill("#link-form input[name=login]", "someone_else")
            await page.click("#link-form button[type=submit]")
            await page.wait_for_selector("#linked-table td:has-text('SomeoneElse')", timeout=30_000)
            assert "null" not in await page.inner_text("#linked-table")
            row = await page.inner_text("#linked-table tbody tr")
            assert "someone_else, login" in row and "\t3\t" in row
            assert "could not be reached" in await page.inner_text("#link-result")
            await shot(page, "16-multistream-linked-account")
            await page.context.close()
    assert not PROBLEMS, PROBLEMS


def test_the_stream_key_scope_is_asked_for_only_with_fill_key() -> None:
    from streamerhub.commands.main import build_parser
    from streamerhub.commands.twitch import _scopes

    plain = build_parser().parse_args(["twitch", "login"])
    assert _scopes(plain) == LOGIN_SCOPES and "channel:read:stream_key" not in LOGIN_SCOPES
    filling = build_parser().parse_args(["twitch", "login", "--fill-key"])
    assert _scopes(filling) == (*LOGIN_SCOPES, "channel:read:stream_key")


class _Accounts:
    """A TwitchAccounts double: who is live on Twitch, and how often it was asked."""

    def __init__(self) -> None:
        self.live: dict[str, int] = {}
        self.asked: list[list[str]] = []

    async def connected_ids(self) -> list[str]:
        return []

    async def user_by_login(self, login: str) -> None:
        return None

    async def users_by_id(self, user_ids: Any) -> list[Any]:
        return []

    async def follower_total(self, user_id: str) -> int:
        return 0

    async def live_streams(self, user_ids: Any) -> list[Any]:
        from streamerhub.bot.accounts import HelixStream

        self.asked.append(list(user_ids))
        return [
            HelixStream(u, self.live[u], "Rerun", "Just Chatting")
            for u in user_ids
            if u in self.live
        ]

    async def stream_key(self, user_id: str) -> str:
        raise StreamKeyUnavailable("no")


async def test_twitch_is_asked_only_while_our_push_is_live_and_calmly_once_confirmed() -> None:
    store, accounts, ours = _Ten(), _Accounts(), {"live": False}
    store.linked = store.linked[:1]  # job 1, target 100, account 5000
    monitor = LivenessMonitor(
        store,  # type: ignore[arg-type]  # the query side only
        lambda: accounts,  # type: ignore[arg-type, return-value]
        lambda _job, _target: ours["live"],
        interval=2.0,
        warn_after=0.0,
        refresh_every=3600,
    )
    assert await monitor.check_once() == 2.0 and accounts.asked == []  # our push is down
    ours["live"] = True
    assert await monitor.check_once() == 2.0  # asked, Twitch says offline: ask again soon
    shown = monitor.of(1, 100)
    assert shown is not None and shown.twitch == "offline" and shown.warning
    assert "target100" in shown.warning and "another account" in shown.warning
    accounts.live["5000"] = 42
    assert await monitor.check_once() == 8.0  # confirmed: 4 times less often
    shown = monitor.of(1, 100)
    assert shown is not None and shown.warning is None and shown.viewers == 42
    assert shown.to_json()["title"] == "Rerun" and shown.to_json()["ours"] == "live"
    assert accounts.asked == [["5000"], ["5000"]]
