"""Twitch accounts for multistream targets: ffmpeg/linked.py's TwitchAccounts over Helix.

Public data (users, follower totals, live streams) is read with the app's own token when a
client secret is set (the bot's one `oauth.AppToken`, the conduit's too), else with any
connected channel's token; the stream key only with the account's own grant, and only if it
included channel:read:stream_key (asked for when the streamer chooses "fill the key for me").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from streamerhub.bot.helix import Helix, HelixError
from streamerhub.bot.oauth import STREAM_KEY_SCOPE
from streamerhub.bot.registry import connected_channels
from streamerhub.bot.service import TwitchBot, TwitchError
from streamerhub.db import Database
from streamerhub.errors import StreamerHubError
from streamerhub.log import register_secret


class StreamKeyRefused(StreamerHubError):
    """Twitch will not give this account's stream key to us (grant or scope missing)."""


@dataclass(frozen=True)
class HelixUser:
    user_id: str
    login: str
    display_name: str
    avatar_url: str


@dataclass(frozen=True)
class HelixStream:
    user_id: str
    viewers: int
    title: str
    category: str


def _user(item: dict[str, object]) -> HelixUser:
    return HelixUser(
        str(item.get("id", "")),
        str(item.get("login", "")),
        str(item.get("display_name") or item.get("login", "")),
        str(item.get("profile_image_url") or ""),
    )


class BotTwitchAccounts:
    """ffmpeg/linked.py's TwitchAccounts through the running bot (app.py wires it)."""

    def __init__(
        self,
        bot: Callable[[], TwitchBot | None],
        db: Callable[[], Database],
        key_refused: type[StreamerHubError] = StreamKeyRefused,
    ) -> None:
        self.bot, self.db = bot, db
        # ffmpeg/ names its own exception for "no key"; app.py passes it in.
        self.key_refused = key_refused
        self._app: tuple[object, Helix] | None = None

    def _running(self) -> TwitchBot:
        bot = self.bot()
        if bot is None or not bot.running:
            raise TwitchError("the Twitch client is not running in this daemon")
        return bot

    async def _public(self) -> Helix:
        """The app token's Helix (client secret set), else any connected channel's."""
        bot = self._running()
        if bot.app_token is not None:
            if self._app is None or self._app[0] is not bot.app_token:
                helix = Helix(bot.http, bot.api_url, bot.client_id, bot.app_token)
                self._app = (bot.app_token, helix)
            await bot.app_token.ensure()
            return self._app[1]
        for runner in bot.runners.values():
            if runner.helix is not None:
                return runner.helix
        raise TwitchError(
            "to read a Twitch account give StreamerHub the application's Client secret "
            "(Settings → Twitch application; the app's own token reads public data), or "
            "connect a channel first"
        )

    async def connected_ids(self) -> list[str]:
        return [c.channel_id for c in await connected_channels(self.db())]

    async def user_by_login(self, login: str) -> HelixUser | None:
        body = await (await self._public()).request("GET", "/users", params={"login": login})
        data = body.get("data") or []
        return _user(data[0]) if data else None

    async def users_by_id(self, user_ids: Sequence[str]) -> list[HelixUser]:
        helix, users = await self._public(), []
        for i in range(0, len(user_ids), 100):
            params = [("id", uid) for uid in user_ids[i : i + 100]]
            users += [
                _user(u) for u in (await helix.request("GET", "/users", params)).get("data") or []
            ]
        return users

    async def follower_total(self, user_id: str) -> int:
        return await (await self._public()).follower_total(user_id)

    async def live_streams(self, user_ids: Sequence[str]) -> list[HelixStream]:
        streams = await (await self._public()).streams(list(user_ids))
        return [
            HelixStream(
                str(s.get("user_id", "")),
                int(s.get("viewer_count") or 0),
                str(s.get("title") or ""),
                str(s.get("game_name") or ""),
            )
            for s in streams
        ]

    async def stream_key(self, user_id: str) -> str:
        """The account's stream key, with its own grant; key_refused says what to do."""
        runner = self._running().runners.get(user_id)
        if runner is None or runner.helix is None or runner.token is None:
            raise self.key_refused(
                f"channel {user_id} is not connected in this daemon: connect it first"
            )
        if STREAM_KEY_SCOPE not in runner.token.scopes:
            raise self.key_refused(_scope_missing(runner.token.login))
        try:
            body = await runner.helix.request(
                "GET", "/streams/key", params={"broadcaster_id": user_id}
            )
        except HelixError as exc:
            if exc.status == 401:
                raise self.key_refused(_scope_missing(runner.token.login)) from None
            raise
        key = str(((body.get("data") or [{}])[0]).get("stream_key") or "")
        if not key:
            raise self.key_refused("Twitch answered without a stream key")
        register_secret(key)
        return key


def _scope_missing(login: str) -> str:
    return (
        f"{login} did not grant {STREAM_KEY_SCOPE}, so Twitch will not tell StreamerHub its "
        "stream key: connect the channel again with `streamerhub twitch login --fill-key`, or "
        "paste the key yourself (the key test then checks it)"
    )
