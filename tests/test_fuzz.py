"""Property-based fuzzing with a fixed example budget: every API operation of /api/openapi.json
(as the owner's API client and as a signed-in viewer), page query strings, CLI arguments and
config files. Whatever comes in: no 5xx, no traceback in an answer or the log, no secret shown."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web_support import PASSWORD

from streamerhub.commands.main import main
from streamerhub.config import load_settings
from streamerhub.errors import ConfigError
from streamerhub.web.auth import api_token

pytestmark = pytest.mark.e2e

EXAMPLES = 8  # per API operation and role: ~350 requests in all, ~10 s
CLIENT_SECRET = "fuzz-client-secret-0123456789abcdef"
BUDGET = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure reproduces
    database=None,
    suppress_health_check=list(HealthCheck),
)
TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from(["\x00", "\ud800", "=", "%", "/", "."]),
    max_size=40,
) | st.sampled_from(["9999-12-31", "0001-01-01", "2026-13-45", "../../etc/passwd", "9" * 30])


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html
    )
    assert found, html[:500]
    return found.group(1)


def _sign_in_owner_and_viewer(base: str, data_dir: Path) -> requests.Session:
    """The owner through the setup link, a viewer added by the owner; the viewer's session."""
    owner = requests.Session()
    token = (data_dir / "setup-token").read_text().strip()
    page = owner.get(f"{base}/setup/{token}")
    form = {"csrf_token": _csrf(page.text), "login": "owner", "password": PASSWORD}
    assert owner.post(f"{base}/setup/{token}", data={**form, "confirm": PASSWORD}).ok
    settings_page = owner.get(f"{base}/settings")
    added = owner.post(
        f"{base}/settings/users",
        data={
            "csrf_token": _csrf(settings_page.text),
            "login": "viewer",
            "role": "viewer",
            "password": PASSWORD,
        },
    )
    assert added.ok
    viewer = requests.Session()
    login_page = viewer.get(f"{base}/login")
    signed = viewer.post(
        f"{base}/login",
        data={"csrf_token": _csrf(login_page.text), "login": "viewer", "password": PASSWORD},
    )
    assert signed.ok and signed.url.rstrip("/") == base
    viewer.headers["X-CSRF-Token"] = _csrf(viewer.get(f"{base}/").text)
    return viewer


def _check_answer(what: str, status: int, text: str, secrets: list[str], log: str = "") -> None:
    assert status < 500, f"{what}: {status} {text[:300]}\n{log[-4000:]}"
    assert "Traceback" not in text, f"{what}: traceback in the answer"
    for secret in secrets:
        assert secret not in text, f"{what}: a secret in the answer"


def _fuzz(
    operation: Any,
    base: str,
    role: str,
    headers: dict[str, str],
    session: requests.Session | None,
    secrets: list[str],
    daemon_log: Any,
) -> None:
    @given(case=operation.as_strategy())
    @BUDGET
    def call(case: Any) -> None:
        cookies = session.cookies.get_dict() if session else None
        if session and case.headers:  # the viewer stands on the cookie, not on a made-up token
            case.headers.pop("Authorization", None)
        response = case.call(
            base_url=f"{base}/api/v1", headers=headers, cookies=cookies, timeout=30
        )
        what = f"{role} {case.method} {case.formatted_path}"
        log = daemon_log() if response.status_code >= 500 else ""
        _check_answer(what, response.status_code, response.text, secrets, log)

    call()


def test_api_and_pages_never_fail_or_leak(daemon_factory) -> None:
    daemon = daemon_factory(env={"STREAMERHUB_TWITCH_CLIENT_SECRET": CLIENT_SECRET}).start()
    base = daemon.url
    spec = requests.get(f"{base}/api/openapi.json", timeout=10).json()
    token = api_token(daemon.data_dir)
    setup = (daemon.data_dir / "setup-token").read_text().strip()
    secrets = [token, setup, CLIENT_SECRET]
    viewer = _sign_in_owner_and_viewer(base, daemon.data_dir)
    schema = schemathesis.openapi.from_dict(spec)
    roles: list[tuple[str, dict[str, str], requests.Session | None]] = [
        ("owner", {"Authorization": f"Bearer {token}"}, None),
        ("viewer", {"X-CSRF-Token": viewer.headers["X-CSRF-Token"]}, viewer),
    ]
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]  # an Err fails the test
    assert len(operations) >= 20, "the OpenAPI document lists every route"
    for operation in operations:
        for role, headers, session in roles:
            _fuzz(operation, base, role, headers, session, secrets, daemon.log)

    pages = ["/", "/events", "/streams", "/events/export", "/overview/data", "/login"]

    @given(
        path=st.sampled_from(pages),
        query=st.dictionaries(
            st.sampled_from(
                [
                    "period",
                    "from",
                    "to",
                    "channel",
                    "type",
                    "user",
                    "cursor",
                    "next",
                    "error",
                    "format",
                    "bucket",
                ]
            ),
            TEXT,
            max_size=4,
        ),
    )
    @settings(BUDGET, max_examples=60)
    def page(path: str, query: dict[str, str]) -> None:
        response = viewer.get(f"{base}{path}", params=query, timeout=30)
        _check_answer(f"GET {path}?{query}", response.status_code, response.text, secrets)

    page()
    log = daemon.log()
    assert "Traceback" not in log
    errors = [json.loads(line) for line in log.splitlines() if '"level": "error"' in line]
    assert not errors, errors[:3]
    for secret in secrets[:1] + secrets[2:]:
        assert secret not in log


@given(
    args=st.lists(
        st.sampled_from(["--from", "--to", "--bucket", "--format", "--channel"]) | TEXT,
        max_size=6,
    ),
    kind=st.sampled_from(["events", "sessions", "series", "bogus"]),
)
@settings(BUDGET, max_examples=40)
def test_cli_arguments_give_one_line_never_a_traceback(
    args: list[str], kind: str, tmp_path_factory: pytest.TempPathFactory, capfd: Any
) -> None:
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "config.toml"
    config.write_text('[database]\nurl = "postgresql://fuzz@127.0.0.1:1/x"\nconnect_timeout = 1\n')
    argv = ["export", kind, *args, "--config", str(config), "--data-dir", str(folder / "d")]
    try:
        code = main([a.replace("\x00", "") for a in argv])  # argv cannot carry NUL
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code  # type: ignore[assignment]  # argparse exits with an int
    out = capfd.readouterr()
    assert code in (0, 1, 2), code
    assert "Traceback" not in out.err
    if code:
        assert out.err.strip(), "an error says what went wrong"


@given(
    body=st.binary(max_size=200)
    | st.builds(
        lambda section, key, value: f"[{section}]\n{key} = {value}\n".encode("utf-8", "replace"),
        st.sampled_from(["general", "web", "database", "twitch", "log", "ffmpeg", "x"]),
        st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=20),
        st.sampled_from(['"x"', "1", "-1", "1e999", "true", "[]", '"\\u0000"', "{a = 1}", '""'])
        | TEXT.map(json.dumps),
    )
)
@settings(BUDGET, max_examples=150)
def test_any_config_file_loads_or_says_what_is_wrong(
    body: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(body)
    try:
        load_settings(path, data_dir=str(path.parent / "d"), env={})
    except ConfigError as exc:
        assert str(exc) and "Traceback" not in str(exc)
