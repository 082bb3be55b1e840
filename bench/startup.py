#!/usr/bin/env python3
"""Startup figures: first start (initdb included) and warm start to /healthz, idle RSS.

Prints one JSON object: {"first_start_s", "ready_s", "rss_mb", ...}. Targets: ready_s ≤ 3,
first_start_s ≤ 15, rss_mb ≤ 120 (the daemon process alone; PostgreSQL is separate).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(data_dir: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    env = {**os.environ, "STREAMERHUB_WEB_PORT": str(port), "STREAMERHUB_LOG_FORMAT": "json"}
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamerhub", "run", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=data_dir.parent,
    )
    while time.monotonic() - began < 60:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return proc, time.monotonic() - began
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("daemon not healthy within 60 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="warm starts to take the median of")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        proc, first = start(data_dir, free_port())
        stop(proc)
        warm, rss = [], []
        for _ in range(args.runs):
            proc, took = start(data_dir, free_port())
            try:
                warm.append(took)
                time.sleep(2)  # idle
                rss.append(rss_mb(proc.pid))
            finally:
                stop(proc)
    warm.sort()
    print(
        json.dumps(
            {
                "first_start_s": round(first, 3),
                "ready_s": round(warm[len(warm) // 2], 3),
                "ready_s_max": round(warm[-1], 3),
                "rss_mb": round(max(rss), 1),
                "runs": args.runs,
            }
        )
    )


if __name__ == "__main__":
    main()
