"""What the dashboard needs from the rest of the daemon, handed over by app.py (the only root).

web/ never imports bot/ or ffmpeg/: Twitch goes through the protocols below, which bot/link.py
implements over the bot's one OAuth client, token store and registry:
- `TwitchAuth`: the browser's authorization-code flow for signing in;
- `ChannelLink`: connecting and disconnecting a channel, and the category search;
- `TwitchOverview`: what the Settings page shows about channels, subscriptions and gaps.
Their failures are `StreamerHubError`s whose message is meant for the page.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from aiohttp import web

from streamerhub.clock import StreamerClock
from streamerhub.config import Settings
from streamerhub.db import Database
from streamerhub.pubsub import Hub
from streamerhub.web.services import MultistreamHistory


class TwitchGrant(Protocol):
    """A token the authorization-code flow got."""

    @property
    def access_token(self) -> str: ...


class TwitchIdentity(Protocol):
    """Whom a token belongs to."""

    @property
    def user_id(self) -> str: ...

    @property
    def login(self) -> str: ...


class LinkedChannel(Protocol):
    """A channel just connected."""

    @property
    def channel_id(self) -> str: ...

    @property
    def login(self) -> str: ...

    @property
    def display_name(self) -> str: ...


class TwitchAuth(Protocol):
    """Twitch's OAuth endpoints for signing in to the dashboard."""

    def authorize_url(
        self, redirect_uri: str, scopes: tuple[str, ...], state: str, force_verify: bool = False
    ) -> str:
        """Where to send the browser to authorise us."""

    async def exchange_code(self, code: str, redirect_uri: str) -> TwitchGrant:
        """The token for the code Twitch sent back."""

    async def validate(self, access_token: str) -> TwitchIdentity:
        """Whom the token belongs to (an error when Twitch does not validate it)."""

    async def revoke(self, access_token: str) -> None:
        """Give the token back; a failure is only logged (the token expires anyway)."""


class TwitchAppSetup(Protocol):
    """The Twitch application's credentials: which are in effect, and saving the owner's."""

    @property
    def source(self) -> str:
        """config (config.toml or the environment: they win), dashboard, or "" (none yet)."""

    @property
    def client_id(self) -> str: ...

    @property
    def secret_set(self) -> bool: ...

    async def save(self, client_id: str, client_secret: str) -> None:
        """Check them with Twitch, store the secret sealed, and use them now (no restart); a
        StreamerHubError says what is wrong. An empty secret keeps the stored one."""


class ChannelLink(Protocol):
    """Connect or disconnect a Twitch channel from the browser; search categories with it."""

    @property
    def scopes(self) -> tuple[str, ...]: ...

    async def connect(self, code: str, redirect_uri: str) -> LinkedChannel:
        """Swap the code for a token, store it sealed, and start capturing the channel."""

    async def disconnect(self, channel_id: str) -> None:
        """Revoke and forget the channel's tokens; its history stays."""

    async def is_channel_login(self, login: str) -> bool:
        """Whether `login` (lower case) is a connected (or once connected) channel's own."""

    async def search_categories(self, query: str) -> list[dict[str, str]]:
        """Twitch categories matching `query` ([{"id", "name"}]), asked with a connected
        channel's token; [] when no channel is connected."""


class ChannelSummary(LinkedChannel, Protocol):
    """A channel of the registry, connected or not."""

    @property
    def status(self) -> str: ...

    @property
    def status_reason(self) -> str | None: ...

    @property
    def connected_at(self) -> dt.datetime: ...

    @property
    def validated_at(self) -> dt.datetime | None: ...


class SubscriptionCounts(Protocol):
    @property
    def expected(self) -> int: ...

    @property
    def enabled(self) -> int: ...

    @property
    def missing_scope(self) -> int: ...

    @property
    def revoked(self) -> int: ...

    @property
    def failing(self) -> int: ...


class SubscriptionProblem(Protocol):
    @property
    def channel_id(self) -> str: ...

    @property
    def subscription_type(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def detail(self) -> str | None: ...

    @property
    def updated_at(self) -> dt.datetime: ...


class GapSummary(Protocol):
    @property
    def channel_id(self) -> str: ...

    @property
    def started_at(self) -> dt.datetime: ...

    @property
    def ended_at(self) -> dt.datetime | None: ...

    @property
    def reason(self) -> str: ...

    @property
    def backfilled(self) -> int: ...

    @property
    def backfilled_at(self) -> dt.datetime | None: ...


class TwitchOverview(Protocol):
    """The Settings page's Twitch facts."""

    async def channels(self) -> Sequence[ChannelSummary]:
        """Every channel, connected or not, oldest first."""

    async def subscription_health(self) -> Mapping[str, SubscriptionCounts]:
        """Each channel's stored subscriptions counted by status, by channel id."""

    async def subscription_problems(self) -> Sequence[SubscriptionProblem]:
        """The stored subscriptions that are not enabled."""

    async def recent_gaps(self, limit: int) -> Sequence[GapSummary]:
        """The newest capture gaps, newest first."""

    async def events_stored(self) -> int:
        """How many events are stored in all."""

    def capture(self) -> Mapping[str, tuple[str, str | None]]:
        """Each running channel's capture state and why, by channel id, as the bot sees it now
        (e.g. "reconnect Twitch" after a revocation); empty when the bot is not running here."""


class BackupFile(Protocol):
    """One backup in the backup folder."""

    @property
    def name(self) -> str: ...

    @property
    def created_at(self) -> dt.datetime: ...

    @property
    def kind(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def verified_at(self) -> dt.datetime | None: ...

    @property
    def total_rows(self) -> int: ...


class BackupFailure(Protocol):
    @property
    def at(self) -> dt.datetime: ...

    @property
    def message(self) -> str: ...


class BackupHealth(Protocol):
    """The database backups the Settings page lists, starts and serves for download."""

    @property
    def folder(self) -> Path: ...

    @property
    def running(self) -> bool: ...

    @property
    def last_failure(self) -> BackupFailure | None: ...

    def backups(self) -> Sequence[BackupFile]:
        """Every backup in the folder, newest first."""

    def banner(self, now: dt.datetime | None = None) -> str | None:
        """A warning for every page when the last good backup is too old (or failed)."""

    def path_of(self, name: str) -> Path | None:
        """The file of the backup of that name (None when there is no such backup)."""

    def start(self) -> bool:
        """Take a backup in the background; False when one is already running."""


@dataclass
class Services:
    """The daemon's parts the dashboard uses, resolved once the database is up."""

    settings: Settings  # [general] follows `clock` (web/__init__.py keeps them in step)
    db: Database
    hub: Hub
    # The daemon's one clock (streamerhub/clock.py): Settings changes it for every part.
    clock: StreamerClock = field(kw_only=True)
    channel_link: ChannelLink | None = None
    multistream: bool = False  # the /api/v1 multistream service is mounted
    demo: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    twitch_auth: TwitchAuth | None = None
    twitch_overview: TwitchOverview | None = None
    multistream_history: MultistreamHistory | None = None
    backups: BackupHealth | None = None
    twitch_app: TwitchAppSetup | None = None

    def twitch_client_id(self) -> str:
        """The Client ID in effect: config's, else the one entered on the dashboard."""
        if self.twitch_app is not None:
            return self.twitch_app.client_id
        return self.settings.twitch.client_id


SERVICES = web.AppKey("web_services", Services)


def services(request: web.Request) -> Services:
    return request.config_dict[SERVICES]
