"""Configuration: defaults, file, environment, and errors that name the key and the value."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import make_settings

from streamerhub.commands.main import main
from streamerhub.config import SETTINGS, load_settings, render_default_config
from streamerhub.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_bind_localhost_8080(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.web.host == "127.0.0.1"
    assert settings.web.port == 8080
    assert settings.database.url == ""
    assert settings.data_dir == tmp_path / "data"


def test_file_then_env_override(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        '[web]\nport = 9000\n[general]\ntimezone = "Europe/Paris"\n',
        STREAMERHUB_WEB_PORT="9100",
    )
    assert settings.web.port == 9100
    assert settings.general.timezone == "Europe/Paris"


def test_database_url_env_and_ours_wins(tmp_path: Path) -> None:
    s = make_settings(tmp_path, DATABASE_URL="postgresql://a@h/db")
    assert s.database.url == "postgresql://a@h/db"
    s = make_settings(
        tmp_path, DATABASE_URL="postgresql://a@h/db", STREAMERHUB_DATABASE_URL="postgresql://b@h/db"
    )
    assert s.database.url == "postgresql://b@h/db"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[web]\nprot = 1\n", "unknown setting web.prot"),
        ("[webb]\nport = 1\n", "unknown section [webb]"),
        ('[web]\nport = "x"\n', "web.port = 'x' must be a int"),
        ("[web]\nport = 70000\n", "web.port = 70000 must be between 1 and 65535"),
        ('[general]\ntimezone = "Mars/Base"\n', "general.timezone = 'Mars/Base' is not an IANA"),
        ('[database]\nurl = "mysql://x"\n', "database.url = 'mysql://x' must be a URL"),
        ("[web]\nport = = 3\n", "line 2"),
    ],
)
def test_bad_config_names_key_and_value(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        make_settings(tmp_path, text)
    assert expected in str(info.value)


def test_bad_env_value_names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, STREAMERHUB_WEB_PORT="eighty")
    assert "STREAMERHUB_WEB_PORT" in str(info.value) and "'eighty'" in str(info.value)


def test_secret_value_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, "[twitch]\nclient_secret = 12345678\n")
    assert "12345678" not in str(info.value) and "twitch.client_secret" in str(info.value)


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_config_found_through_env_variable(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("[web]\nport = 8123\n")
    settings = load_settings(None, env={"STREAMERHUB_CONFIG": str(path)})
    assert settings.source == path and settings.web.port == 8123


def test_shipped_config_lists_every_setting() -> None:
    shipped = (ROOT / "config.toml").read_text()
    assert shipped == render_default_config(), "regenerate config.toml from config.SETTINGS"
    for setting in SETTINGS:
        assert f"# {setting.key} = " in shipped, f"{setting.section}.{setting.key} not documented"
    tomllib.loads(shipped)  # the commented template itself is valid TOML


def test_cli_reports_config_error_without_traceback(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[web]\nport = 0\n")
    assert main(["check", "--config", str(bad), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "web.port = 0 must be between 1 and 65535" in err
    assert "Traceback" not in err


def test_each_section_view_has_exactly_the_settings_of_its_section() -> None:
    import dataclasses
    import typing

    from streamerhub.config import SECTIONS, SETTINGS

    assert set(SECTIONS) == {s.section for s in SETTINGS}
    for name, view in SECTIONS.items():
        hints = typing.get_type_hints(view)
        declared = {
            f.name: typing.get_origin(hints[f.name]) or hints[f.name]
            for f in dataclasses.fields(view)
        }
        assert declared == {s.key: s.type for s in SETTINGS if s.section == name}, name


def test_settings_read_per_section_with_their_types(tmp_path: Path) -> None:
    settings = load_settings(None, str(tmp_path), env={"STREAMERHUB_WEB_PORT": "9090"})
    assert settings.web.port == 9090 and settings.twitch.api_url.startswith("https://")
    assert settings.database.connect_timeout == 120.0 and settings.web.allowed_hosts == []
