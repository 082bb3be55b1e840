"""config.toml + STREAMERHUB_* environment → one frozen, validated Settings object."""

from __future__ import annotations

import functools
import os
import re
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import urlsplit

from streamerhub.errors import ConfigError

_T = TypeVar("_T")
SEARCH_PATHS = (Path("config.toml"), Path("/etc/streamerhub/config.toml"))


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be between 1 and 65535"


def _choice(*options: str) -> Callable[[Any], str | None]:
    return lambda value: None if value in options else f"must be one of {', '.join(options)}"


def _range(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda value: None if low <= value <= high else f"must be between {low} and {high}"


def _timezone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "is not an IANA time zone name (e.g. Europe/Paris, America/New_York, UTC)"
    return None


def _time_of_day(value: str) -> str | None:
    if value == "" or re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        return None
    return 'must be a time of day "HH:MM" (24 h, your time zone), or "" for no schedule'


def _absolute_paths(value: list[Any]) -> str | None:
    if not all(isinstance(v, str) and os.path.isabs(v) for v in value):
        return 'must be a list of absolute folder paths, e.g. ["/srv/videos"]'
    return None


def _url(*schemes: str, empty_ok: bool = True) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if not value and empty_ok:
            return None
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.hostname or parts.path):
            return f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}"
        return None

    return check


@dataclass(frozen=True)
class Setting:
    """One setting: where it lives, its type, default, a line of help and an optional check."""

    section: str
    key: str
    type: type
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    secret: bool = False

    @property
    def env(self) -> str:
        return f"STREAMERHUB_{self.section}_{self.key}".upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "general",
        "data_dir",
        str,
        "",
        "Where the database, spool, videos and keys live "
        "(default: $STATE_DIRECTORY under systemd, else $XDG_DATA_HOME/streamerhub).",
    ),
    Setting(
        "general",
        "timezone",
        str,
        "UTC",
        "The streamer's IANA time zone, for charts, schedules, backups and exports "
        "(the one chosen on the dashboard, in setup or Settings, wins over it).",
        _timezone,
    ),
    Setting(
        "general",
        "day_start_hour",
        int,
        0,
        "Hour at which a 'day' starts in charts and exports (e.g. 6 for streams that run past "
        "midnight; the dashboard's choice wins over it).",
        _range(0, 23),
    ),
    Setting(
        "web",
        "host",
        str,
        "127.0.0.1",
        "Address the dashboard listens on. Keep 127.0.0.1 "
        "unless a reverse proxy with TLS sits in front.",
    ),
    Setting("web", "port", int, 8080, "Port of the dashboard.", _port),
    Setting(
        "web",
        "allowed_hosts",
        list,
        [],
        "Extra Host header values accepted besides localhost/127.0.0.1 (DNS-rebinding protection).",
    ),
    Setting(
        "web",
        "public_url",
        str,
        "",
        "URL browsers use to reach the dashboard when it is "
        "not http://host:port (e.g. https://stats.example.com behind a TLS proxy); sets the "
        "Twitch redirect URL and Secure cookies.",
        _url("http", "https"),
    ),
    Setting("web", "session_days", int, 30, "Days a dashboard sign-in lasts.", _range(1, 365)),
    Setting(
        "web",
        "twitch_logins",
        list,
        [],
        "Twitch logins that may sign in with Twitch as "
        "viewers (read-only); connected channels' own logins sign in as owner.",
    ),
    Setting(
        "database",
        "url",
        str,
        "",
        "PostgreSQL 14+ URL; empty runs a private embedded cluster in the data dir.",
        _url("postgres", "postgresql"),
    ),
    Setting("database", "pool_size", int, 10, "Maximum database connections.", _range(2, 100)),
    Setting(
        "database",
        "connect_timeout",
        float,
        120.0,
        "Seconds to keep retrying an unreachable database at start before giving up.",
        _range(1, 86400),
    ),
    Setting(
        "log", "level", str, "info", "Log level.", _choice("debug", "info", "warning", "error")
    ),
    Setting(
        "log",
        "format",
        str,
        "auto",
        "auto (pretty on a terminal, JSON otherwise), pretty or json.",
        _choice("auto", "pretty", "json"),
    ),
    Setting(
        "twitch",
        "client_id",
        str,
        "",
        "Client ID of your application in the Twitch developer console.",
    ),
    Setting(
        "twitch",
        "client_secret",
        str,
        "",
        "Client secret of that application; prefer the "
        "STREAMERHUB_TWITCH_CLIENT_SECRET environment variable.",
        secret=True,
    ),
    Setting(
        "twitch",
        "client_type",
        str,
        "confidential",
        "The client type you registered the application with: confidential (the default; "
        "needs client_secret, also to refresh tokens) or public (no secret; the dashboard's "
        "browser sign-in is then unavailable, use `streamerhub twitch login`).",
        _choice("confidential", "public"),
    ),
    Setting(
        "twitch",
        "api_url",
        str,
        "https://api.twitch.tv/helix",
        "Helix base URL.",
        _url("http", "https", empty_ok=False),
    ),
    Setting(
        "twitch",
        "auth_url",
        str,
        "https://id.twitch.tv/oauth2",
        "OAuth base URL.",
        _url("http", "https", empty_ok=False),
    ),
    Setting(
        "twitch",
        "eventsub_url",
        str,
        "wss://eventsub.wss.twitch.tv/ws",
        "EventSub WebSocket URL.",
        _url("ws", "wss", empty_ok=False),
    ),
    Setting(
        "analytics",
        "sample_interval",
        float,
        60.0,
        "Seconds between viewer-count samples "
        "while a channel is live (watch hours are computed from them).",
        _range(15, 600),
    ),
    Setting(
        "analytics",
        "totals_interval",
        float,
        900.0,
        "Seconds between snapshots of Twitch's follower and subscriber totals.",
        _range(60, 86400),
    ),
    Setting(
        "ffmpeg",
        "path",
        str,
        "",
        "FFmpeg binary; empty uses ffmpeg on PATH, else the bundled imageio-ffmpeg binary.",
    ),
    Setting(
        "ffmpeg",
        "max_upload_bytes",
        int,
        20 * 1024**3,
        "Largest video upload accepted.",
        _range(1, 2**50),
    ),
    Setting(
        "ffmpeg",
        "video_kbps",
        int,
        0,
        "Default video bitrate (kbit/s) a video is prepared at; each upload may ask for another. "
        "0 picks the platforms' recommendation for the video's size and rate (1080p60 6000, "
        "1080p30 and 720p60 4500, 720p30 3000, 480p 1500, smaller 800).",
        lambda v: None if v == 0 else _range(100, 50000)(v),
    ),
    Setting(
        "ffmpeg",
        "audio_kbps",
        int,
        160,
        "Default audio bitrate (kbit/s) of prepared videos.",
        _range(32, 512),
    ),
    Setting(
        "ffmpeg",
        "ca_file",
        str,
        "",
        "CA bundle (PEM) that rtmps:// ingests' certificates are verified against; empty uses "
        "the system's. Set it for a private CA; certificates are always verified.",
    ),
    Setting(
        "ffmpeg",
        "twitch_check_interval",
        float,
        15.0,
        "Seconds between asking Twitch (GET /streams, one call for every linked account) "
        "whether a push to a linked account is live, until it is; then 4 times less often.",
        _range(1, 600),
    ),
    Setting(
        "ffmpeg",
        "twitch_offline_warning",
        float,
        90.0,
        "Seconds a push to a linked account may be live on our side while Twitch says offline "
        "before the job shows a warning (Twitch usually lists a stream within a minute).",
        _range(5, 3600),
    ),
    Setting(
        "ffmpeg",
        "twitch_refresh_interval",
        float,
        300.0,
        "Seconds between refreshes of linked accounts' names, avatars and follower totals "
        "while a job pushes to them.",
        _range(10, 86400),
    ),
    Setting(
        "library",
        "import_dirs",
        list,
        [],
        "Absolute folders whose videos may be imported by server path (the daemon's FFmpeg "
        "reads them); empty turns import by path off, so no request can make it open any file.",
        _absolute_paths,
    ),
    Setting(
        "backup",
        "folder",
        str,
        "",
        "Where database backups go (a second disk, a mounted share); empty: DATA_DIR/backups.",
    ),
    Setting(
        "backup",
        "schedule",
        str,
        "03:30",
        'Daily backup time "HH:MM" in your time zone (chosen on the dashboard, else [general] '
        'timezone); "" turns daily backups off '
        "(a backup is still taken before every schema upgrade).",
        _time_of_day,
    ),
    Setting("backup", "keep_daily", int, 7, "Daily backups kept.", _range(1, 3650)),
    Setting(
        "backup",
        "keep_weekly",
        int,
        4,
        "Weekly backups kept (newest of each week).",
        _range(0, 520),
    ),
    Setting(
        "backup",
        "keep_monthly",
        int,
        12,
        "Monthly backups kept (newest of each month).",
        _range(0, 1200),
    ),
    Setting(
        "conduit",
        "mode",
        str,
        "auto",
        "How events come from Twitch: conduit (one EventSub conduit shared by every daemon; "
        "a dropped socket loses nothing; needs client_secret), websocket (one socket per "
        "channel), or auto (conduit when a client_secret is set).",
        _choice("auto", "conduit", "websocket"),
    ),
    Setting(
        "conduit",
        "shards",
        int,
        2,
        "WebSocket shards this daemon keeps open on the conduit (at least 2: while one "
        "reconnects, Twitch retries its notifications on another).",
        _range(2, 64),
    ),
    Setting(
        "conduit",
        "lease_seconds",
        float,
        15.0,
        "How long a daemon's claim on a shard lasts without renewal (renewed every third of "
        "it): a daemon that died or lost the database leaves its shards to others after this.",
        _range(3, 300),
    ),
    Setting(
        "events",
        "chat_text_days",
        int,
        0,
        "Days the words of chat messages are kept (0: forever); older messages keep their "
        "row, so chat counts and rollups stay.",
        _range(0, 36500),
    ),
    Setting(
        "demo",
        "ingest_url",
        str,
        "rtmp://127.0.0.1:1935/live",
        "`run --demo` only: the local RTMP server its sample job pushes to; the job starts by "
        "itself when something listens there (e.g. nginx with libnginx-mod-rtmp).",
        _url("rtmp", empty_ok=False),
    ),
    Setting(
        "chatbot",
        "minute_s",
        float,
        60.0,
        "Seconds in the chat bot's minute (timer intervals, event messages per minute). Leave "
        "it at 60; tests shorten it so timers run in seconds.",
        _range(0.5, 60),
    ),
    Setting(
        "leases",
        "multistream_seconds",
        float,
        30.0,
        "One daemon runs every multistream job, holding this lease (renewed every quarter of "
        "it). A daemon that cannot renew it stops its FFmpeg children after half of it (also "
        "when it runs alone: a database outage that long pauses the pushes until it is back); "
        "another daemon takes the jobs over once it lapses.",
        _range(3, 300),
    ),
)

_BY_NAME = {(s.section, s.key): s for s in SETTINGS}


@dataclass(frozen=True)
class GeneralSettings:
    data_dir: str
    timezone: str
    day_start_hour: int


@dataclass(frozen=True)
class WebSettings:
    host: str
    port: int
    allowed_hosts: list[str]
    public_url: str
    session_days: int
    twitch_logins: list[str]


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    pool_size: int
    connect_timeout: float


@dataclass(frozen=True)
class LogSettings:
    level: str
    format: str


@dataclass(frozen=True)
class TwitchSettings:
    client_id: str
    client_secret: str
    client_type: str
    api_url: str
    auth_url: str
    eventsub_url: str

    def client_problem(self) -> str | None:
        """What is missing for Twitch to accept this application, in words a user can act on."""
        if not self.client_id:
            return (
                "[twitch] client_id is empty: register an application at "
                "https://dev.twitch.tv/console (client type Confidential) and enter it on the "
                "dashboard (Settings → Twitch application), or set it in config.toml"
            )
        if self.client_type == "confidential" and not self.client_secret:
            return (
                "[twitch] client_secret is empty: a Confidential application refreshes tokens "
                "only with its secret (without it every channel stops about four hours after "
                'login). Set STREAMERHUB_TWITCH_CLIENT_SECRET, or client_type = "public" if '
                "you registered a Public application"
            )
        return None


@dataclass(frozen=True)
class AnalyticsSettings:
    sample_interval: float
    totals_interval: float


@dataclass(frozen=True)
class FFmpegSettings:
    path: str
    max_upload_bytes: int
    video_kbps: int
    audio_kbps: int
    ca_file: str
    twitch_check_interval: float
    twitch_offline_warning: float
    twitch_refresh_interval: float


@dataclass(frozen=True)
class LibrarySettings:
    import_dirs: list[str]


@dataclass(frozen=True)
class BackupSettings:
    folder: str
    schedule: str
    keep_daily: int
    keep_weekly: int
    keep_monthly: int


@dataclass(frozen=True)
class ConduitSettings:
    mode: str
    shards: int
    lease_seconds: float


@dataclass(frozen=True)
class EventsSettings:
    chat_text_days: int


@dataclass(frozen=True)
class DemoSettings:
    ingest_url: str


@dataclass(frozen=True)
class ChatbotSettings:
    minute_s: float


@dataclass(frozen=True)
class LeasesSettings:
    multistream_seconds: float


# One typed view per [section] of SETTINGS; a test holds the two in step.
SECTIONS: dict[str, type] = {
    "general": GeneralSettings,
    "web": WebSettings,
    "database": DatabaseSettings,
    "log": LogSettings,
    "twitch": TwitchSettings,
    "analytics": AnalyticsSettings,
    "ffmpeg": FFmpegSettings,
    "library": LibrarySettings,
    "backup": BackupSettings,
    "conduit": ConduitSettings,
    "events": EventsSettings,
    "demo": DemoSettings,
    "chatbot": ChatbotSettings,
    "leases": LeasesSettings,
}


@dataclass(frozen=True)
class Settings:
    """The validated configuration, read per section: settings.web.port, settings.twitch.api_url."""

    values: Mapping[tuple[str, str], Any]
    source: Path | None = None
    data_dir: Path = field(default=Path("."))

    def _section(self, name: str, view: type[_T]) -> _T:
        fields = {key: value for (section, key), value in self.values.items() if section == name}
        return view(**fields)

    @functools.cached_property
    def general(self) -> GeneralSettings:
        return self._section("general", GeneralSettings)

    @functools.cached_property
    def web(self) -> WebSettings:
        return self._section("web", WebSettings)

    @functools.cached_property
    def database(self) -> DatabaseSettings:
        return self._section("database", DatabaseSettings)

    @functools.cached_property
    def log(self) -> LogSettings:
        return self._section("log", LogSettings)

    @functools.cached_property
    def twitch(self) -> TwitchSettings:
        return self._section("twitch", TwitchSettings)

    @functools.cached_property
    def analytics(self) -> AnalyticsSettings:
        return self._section("analytics", AnalyticsSettings)

    @functools.cached_property
    def ffmpeg(self) -> FFmpegSettings:
        return self._section("ffmpeg", FFmpegSettings)

    @functools.cached_property
    def library(self) -> LibrarySettings:
        return self._section("library", LibrarySettings)

    @functools.cached_property
    def backup(self) -> BackupSettings:
        return self._section("backup", BackupSettings)

    @functools.cached_property
    def conduit(self) -> ConduitSettings:
        return self._section("conduit", ConduitSettings)

    @functools.cached_property
    def events(self) -> EventsSettings:
        return self._section("events", EventsSettings)

    @functools.cached_property
    def demo(self) -> DemoSettings:
        return self._section("demo", DemoSettings)

    @functools.cached_property
    def chatbot(self) -> ChatbotSettings:
        return self._section("chatbot", ChatbotSettings)

    @functools.cached_property
    def leases(self) -> LeasesSettings:
        return self._section("leases", LeasesSettings)


def find_config(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """Return the config file to read: --config, $STREAMERHUB_CONFIG, ./config.toml, /etc/…."""
    chosen = explicit or env.get("STREAMERHUB_CONFIG")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise ConfigError(
                f"config file {path} does not exist: create it (the shipped "
                "config.toml is a commented template) or fix --config"
            )
        return path
    return next((p for p in SEARCH_PATHS if p.is_file()), None)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning syntax errors into a message naming the file and line."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: byte {exc.start} is not UTF-8: save the file as UTF-8 (TOML requires it)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _coerce(setting: Setting, raw: Any, where: str) -> Any:
    name = f"{setting.section}.{setting.key}"
    if setting.type is float and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw)
    if isinstance(raw, str) and setting.type is not str:
        raw = _parse_env_value(setting, raw, where)
    if not isinstance(raw, setting.type) or (isinstance(raw, bool) and setting.type is not bool):
        raise ConfigError(
            f"{where}: {name} = {_show(setting, raw)} must be a {setting.type.__name__}"
        )
    problem = setting.check(raw) if setting.check else None
    if problem:
        raise ConfigError(f"{where}: {name} = {_show(setting, raw)} {problem}")
    return raw


def _parse_env_value(setting: Setting, raw: str, where: str) -> Any:
    name = f"{setting.section}.{setting.key}"
    try:
        if setting.type is bool:
            return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[
                raw.strip().lower()
            ]
        if setting.type is list:
            return [item.strip() for item in raw.split(",") if item.strip()]
        return setting.type(raw)
    except (KeyError, ValueError):
        raise ConfigError(
            f"{where}: {name} = {_show(setting, raw)} must be a {setting.type.__name__}"
        ) from None


def _show(setting: Setting, value: Any) -> str:
    return "'••••'" if setting.secret else repr(value)


def _from_file(doc: dict[str, Any], path: Path) -> dict[tuple[str, str], Any]:
    values: dict[tuple[str, str], Any] = {}
    sections = {s.section for s in SETTINGS}
    for section, table in doc.items():
        if section not in sections or not isinstance(table, dict):
            raise ConfigError(
                f"{path}: unknown section [{section}]; known sections: "
                f"{', '.join(sorted(sections))}"
            )
        for key, raw in table.items():
            setting = _BY_NAME.get((section, key))
            if setting is None:
                known = ", ".join(s.key for s in SETTINGS if s.section == section)
                raise ConfigError(
                    f"{path}: unknown setting {section}.{key}; known in [{section}]: {known}"
                )
            values[(section, key)] = _coerce(setting, raw, str(path))
    return values


def _from_env(env: Mapping[str, str]) -> dict[tuple[str, str], Any]:
    values = {}
    for setting in SETTINGS:
        if setting.env in env:
            values[(setting.section, setting.key)] = _coerce(
                setting, env[setting.env], f"environment {setting.env}"
            )
    # The conventional DATABASE_URL (Heroku, Supabase docs) counts when ours is not set.
    if "DATABASE_URL" in env and ("database", "url") not in values:
        values[("database", "url")] = _coerce(
            _BY_NAME[("database", "url")], env["DATABASE_URL"], "environment DATABASE_URL"
        )
    return values


def default_data_dir(env: Mapping[str, str]) -> Path:
    """$STATE_DIRECTORY under systemd, else $XDG_DATA_HOME/streamerhub (~/.local/share)."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "streamerhub"


def load_settings(
    config: str | os.PathLike[str] | None = None,
    data_dir: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Load defaults ← config file ← environment ← command line, validating every value."""
    env = os.environ if env is None else env
    path = find_config(config, env)
    values = {(s.section, s.key): s.default for s in SETTINGS}
    if path is not None:
        values.update(_from_file(read_toml(path), path))
    values.update(_from_env(env))
    if data_dir:
        values[("general", "data_dir")] = data_dir
    chosen = values[("general", "data_dir")]
    resolved = Path(chosen).expanduser() if chosen else default_data_dir(env)
    return Settings(values=MappingProxyType(values), source=path, data_dir=resolved.absolute())


def render_default_config() -> str:
    """The shipped config.toml: every setting with its default and help, commented out."""
    lines = [
        "# StreamerHub configuration. Every setting is optional; the values shown are the",
        "# defaults. Any setting can be overridden by STREAMERHUB_<SECTION>_<KEY>.",
        "",
    ]
    section = None
    for s in SETTINGS:
        if s.section != section:
            section = s.section
            lines += ["", f"[{section}]"]
        lines.append(f"# {s.help}")
        lines.append(f"# {s.key} = {_toml_literal(s.default)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return repr(value)


def prepare_data_dir(path: Path) -> None:
    """Create the data dir (0700) and prove it is writable, naming the path when it is not."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"data dir {path} is not writable ({exc.strerror}): set "
            "[general] data_dir / --data-dir to a folder this user owns"
        ) from None
