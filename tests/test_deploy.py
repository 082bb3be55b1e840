"""The reverse-proxy examples of deploy/ checked by the real binaries (nginx -t, caddy validate),
the dashboard and its live feed served through the nginx example over HTTPS, and `check`
warning about a dashboard on the network over plain HTTP."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import aiohttp
import pytest
from conftest import free_port, make_settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_browser import chromium, new_page, shot
from test_web_pages import SSE
from web_support import add_channel, csrf_of, dashboard, notification, store_events

from streamerhub.commands.check import check_dashboard_exposure

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NAME = "stats.example.com"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PASSWORD = "correct horse battery staple"


# ----------------------------------------------------------------------------- streamerhub check


@pytest.mark.parametrize(
    ("host", "warn"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("192.168.1.20", True),
        ("::", True),
        ("stats.lan", True),
    ],
)
def test_check_warns_when_the_dashboard_is_on_the_network_over_plain_http(
    tmp_path: Path, host: str, warn: bool
) -> None:
    result = check_dashboard_exposure(make_settings(tmp_path, f'[web]\nhost = "{host}"\n'))
    assert result.ok and result.warn is warn
    if warn:
        assert result.line().startswith("WARN  dashboard: listens on")
        assert "plain HTTP" in result.line() and "deploy/nginx.conf" in result.line()


# ----------------------------------------------------------------------------- nginx


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def render_nginx(folder: Path, upstream: int, http_port: int, https_port: int) -> Path:
    """deploy/nginx.conf with test values, inside a whole nginx.conf that writes only to tmp."""
    cert, key = self_signed(folder)
    site = (DEPLOY / "nginx.conf").read_text()
    for old, new in [
        ("    listen [::]:80;\n", ""),
        ("    listen [::]:443 ssl http2;\n", ""),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        (f"/etc/letsencrypt/live/{NAME}/fullchain.pem", str(cert)),
        (f"/etc/letsencrypt/live/{NAME}/privkey.pem", str(key)),
        ("127.0.0.1:8080", f"127.0.0.1:{upstream}"),
        ("/var/www/html", str(folder)),
    ]:
        assert old in site, old
        site = site.replace(old, new)
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = folder / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'};\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp}\n{site}\n}}\n"
    )
    return conf


def nginx_check(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGINX, "-e", str(conf.parent / "error.log"), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
    )


@pytest.fixture
def nginx_available() -> None:
    if not Path(NGINX).is_file():
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")


def test_the_nginx_example_passes_nginx_t(tmp_path: Path, nginx_available: None) -> None:
    conf = render_nginx(tmp_path, free_port(), free_port(), free_port())
    checked = nginx_check(conf)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[int], tuple[int, int]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(upstream: int) -> tuple[int, int]:
        http_port, https_port = free_port(), free_port()
        conf = render_nginx(tmp_path, upstream, http_port, https_port)
        proc = subprocess.Popen(
            [NGINX, "-e", str(tmp_path / "error.log"), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", https_port), 0.2):
                    return http_port, https_port
            except OSError:
                assert proc.poll() is None, (tmp_path / "error.log").read_text()
                time.sleep(0.05)
        raise AssertionError("nginx did not listen")

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: master and worker
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def test_the_dashboard_and_its_live_feed_work_through_the_nginx_example(
    tmp_path: Path, db_url: str, nginx_available: None, nginx
) -> None:
    # The settings the README tells the owner to set behind the proxy.
    behind = f'[web]\npublic_url = "https://{NAME}"\nallowed_hosts = ["{NAME}"]\n'
    async with dashboard(tmp_path, db_url, behind) as dash:
        http_port, https_port = nginx(dash.client.server.port)
        public = f"https://{NAME}:{https_port}"
        base = f"https://127.0.0.1:{https_port}"
        host = {"Host": f"{NAME}:{https_port}"}
        jar = aiohttp.CookieJar(unsafe=True)
        connector = aiohttp.TCPConnector(ssl=False)
        async with aiohttp.ClientSession(cookie_jar=jar, connector=connector, headers=host) as web:
            async with web.get(
                f"http://127.0.0.1:{http_port}/overview", allow_redirects=False
            ) as plain:
                assert plain.status == 301
                assert plain.headers["Location"] == f"https://{NAME}/overview"

            token = dash.setup_token()
            async with web.get(f"{base}/setup/{token}") as page:
                assert page.status == 200
                assert "max-age" in page.headers.get("Strict-Transport-Security", "")
                csrf = csrf_of(await page.text())
            form = {"csrf_token": csrf, "login": "owner", "password": PASSWORD, "confirm": PASSWORD}
            async with web.post(
                f"{base}/setup/{token}", data=form, headers={"Origin": public}
            ) as done:
                assert done.status == 200, await done.text()
            async with web.get(f"{base}/settings") as settings_page:
                assert (
                    settings_page.status == 200 and "Dashboard users" in await settings_page.text()
                )

            await add_channel(dash.db)
            store_dir = dash.settings.data_dir / "store"
            async with web.get(f"{base}/feed/events") as resp:
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                feed = SSE(resp)
                sent = time.monotonic()
                now = dt.datetime.now(dt.timezone.utc)
                await store_events(
                    dash.db, store_dir, [notification("channel.cheer", now, bits=42)], hub=dash.hub
                )
                live = await feed.next(timeout=2.0)
                assert live["json"]["text"].endswith("cheered 42 bits")
                assert time.monotonic() - sent < 1.0  # not held back by a proxy buffer

        # And in a real browser, by the public name, through nginx's TLS: sign in, live feed.
        rules = f"--host-resolver-rules=MAP {NAME} 127.0.0.1"
        async with chromium(rules, "--ignore-certificate-errors") as browser:
            page = await new_page(browser)
            await page.goto(f"{public}/login")
            await page.fill("input[name=login]", "owner")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_selector('[data-card="followers"]')
            await page.goto(f"{public}/?period=day")
            await page.wait_for_selector("#feed-status.live")
            now = dt.datetime.now(dt.timezone.utc)
            await store_events(
                dash.db, store_dir, [notification("channel.cheer", now, bits=77)], hub=dash.hub
            )
            await page.wait_for_selector("#feed li:has-text('cheered 77 bits')", timeout=5000)
            await shot(page, "20-dashboard-through-nginx")


# ----------------------------------------------------------------------------- Caddy


def test_the_caddy_example_passes_caddy_validate(tmp_path: Path) -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed (not a Debian package here; not downloaded)")
    site = (DEPLOY / "Caddyfile").read_text().replace(NAME, "localhost")
    conf = tmp_path / "Caddyfile"
    conf.write_text(site)
    checked = subprocess.run(
        [caddy, "validate", "--config", str(conf), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)},
    )
    assert checked.returncode == 0, checked.stderr
