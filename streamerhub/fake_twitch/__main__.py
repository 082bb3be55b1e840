"""`python -m streamerhub.fake_twitch`: serve the fake until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import json
import socket
import sys

from aiohttp import web

from .server import build_app
from .state import Settings, State


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="streamerhub fake-twitch", description="Serve a protocol-faithful fake Twitch."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)"
    )
    parser.add_argument(
        "--simulate", action="store_true", help="play a looping, believable stream on channel 1000"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulation speed factor (default 1.0; 10 = ten times faster)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Bind, print {"url": …} as one JSON line, serve until a signal; returns the exit code."""
    args = _parse(argv)
    if args.speed <= 0:
        print("--speed must be positive", file=sys.stderr)
        return 2
    # Bind first so a port of 0 is resolved before anything is printed.
    sock = socket.create_server((args.host, args.port))
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    print(
        json.dumps(
            {
                "url": url,
                "ws_url": f"ws://{host}:{port}/ws",
                "api_url": f"{url}/helix",
                "auth_url": f"{url}/oauth2",
            }
        ),
        flush=True,
    )
    state = State(Settings(simulate=args.simulate, speed=args.speed))
    web.run_app(build_app(state), sock=sock, print=None, shutdown_timeout=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
