#!/usr/bin/env python3
"""Fault figures: the daemon as a process, fed a steady stream by the fake Twitch, while its
resources fail. Per case: delivered, stored, duplicated, lost, and seconds from the resource's
return to direct writes again (/healthz store mode "direct").

Cases: the embedded postmaster killed (the daemon's supervisor restarts it); the database
refusing connections for --outage seconds; the spool's disk full (the data dir on a small
tmpfs, filled; needs root for the mount, else skipped) with the database up, then with it down
too; a SIGTERM while both are down (what the daemon reports lost must equal what is lost).
Prints ONE JSON object. Example: bench/faults.py --rate 500 --outage 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from crash import Rig, outcome

from streamerhub.db import postmaster_pid
from streamerhub.log import setup_logging


class FaultRig(Rig):
    """A Rig whose data dir sits on a small tmpfs (the database itself on the real disk)."""

    def __init__(self, workdir: Path, tmpfs: bool) -> None:
        super().__init__(workdir)
        self.mounted = False
        if tmpfs:
            self.data.mkdir(parents=True)
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs", str(self.data)],
                capture_output=True,
            )
            self.mounted = done.returncode == 0
            pgdata = workdir / "pgdata"
            pgdata.mkdir(mode=0o700)
            (self.data / "postgres").symlink_to(pgdata)

    async def __aenter__(self) -> FaultRig:
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.data)], capture_output=True)

    def fill_disk(self) -> None:
        with open(self.data / "filler", "wb") as out:
            block = b"\0" * (1 << 20)
            try:
                while True:
                    out.write(block)
                    out.flush()
            except OSError:
                pass

    def free_disk(self) -> None:
        (self.data / "filler").unlink(missing_ok=True)

    async def cut(self, allow: bool) -> None:
        conn = await asyncpg.connect(
            host=str(self.cluster.socket_dir), user="streamerhub", database="postgres"
        )
        try:
            await conn.execute(
                f"ALTER DATABASE streamerhub ALLOW_CONNECTIONS {'true' if allow else 'false'}"
            )
            if not allow:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = 'streamerhub' AND pid <> pg_backend_pid()"
                )
        finally:
            await conn.close()

    async def direct_after(self, since: float, timeout: float = 60) -> float:
        async def direct() -> bool:
            code, body = await asyncio.to_thread(self.health)
            return code == 200 and (body.get("store") or {}).get("mode") == "direct"

        await self.until(direct, timeout, "back to direct writes")
        return round(time.monotonic() - since, 2)


async def streaming(rig: Rig, rate: float, seconds: float) -> Any:
    tag = f"f{random.getrandbits(40):x}-"
    return asyncio.create_task(rig.send(int(rate * seconds), tag, rate))


async def settle(rig: FaultRig, sent: Any) -> dict[str, Any]:
    await rig.until(rig.drained, 120, "store drained")
    ids = [i for _, chunk in sent for i in chunk]
    stored, dup = await rig.stored(ids)
    return outcome(sent, stored, dup)


async def postmaster_killed(rig: FaultRig, args: argparse.Namespace) -> dict[str, Any]:
    await rig.start_daemon()
    stream = await streaming(rig, args.rate, args.outage + 4)
    await asyncio.sleep(2)
    pid = postmaster_pid(rig.cluster.pgdata)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    back = await rig.direct_after(killed)
    result = await settle(rig, await stream)
    rig.stop_daemon()
    return {**result, "s_from_kill_to_direct": back}


async def database_refusing(rig: FaultRig, args: argparse.Namespace) -> dict[str, Any]:
    await rig.start_daemon()
    stream = await streaming(rig, args.rate, args.outage + 4)
    await asyncio.sleep(2)
    await rig.cut(allow=False)
    await asyncio.sleep(args.outage)
    await rig.cut(allow=True)
    back = await rig.direct_after(time.monotonic())
    result = await settle(rig, await stream)
    rig.stop_daemon()
    return {**result, "s_to_direct_after_return": back}


async def disk_full(rig: FaultRig, args: argparse.Namespace, db_down: bool) -> dict[str, Any]:
    await rig.start_daemon()
    stream = await streaming(rig, args.rate, args.outage + 4)
    await asyncio.sleep(1)
    rig.fill_disk()
    if db_down:
        await rig.cut(allow=False)
    await asyncio.sleep(args.outage)
    code, body = await asyncio.to_thread(rig.health)
    if db_down:
        await rig.cut(allow=True)
    back = await rig.direct_after(time.monotonic())
    sent = await stream
    rig.free_disk()
    result = await settle(rig, sent)
    rig.stop_daemon()
    return {
        **result,
        "healthz_during": code,
        "mode_during": (body.get("store") or {}).get("mode"),
        "s_to_direct_after_return": back,
    }


async def stop_while_wedged(rig: FaultRig, args: argparse.Namespace) -> dict[str, Any]:
    await rig.start_daemon()
    rig.fill_disk()
    await rig.cut(allow=False)
    sent = await rig.send(int(args.rate * 2), f"w{random.getrandbits(40):x}-", args.rate)
    await asyncio.sleep(1)
    code = rig.stop_daemon()  # it stops the embedded server too: start it to let it in again
    await rig.cluster.start()
    await rig.cut(allow=True)
    rig.free_disk()
    reported = 0
    for line in rig.log.read_text(errors="replace").splitlines():
        if '"store_stop_lost"' in line:
            reported += json.loads(line).get("events", 0)
    await rig.start_daemon()
    result = await settle(rig, sent)
    rig.stop_daemon()
    return {**result, "exit_code": code, "reported_lost": reported}


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"rate": args.rate, "outage_s": args.outage}
    async with FaultRig(workdir / "a", tmpfs=False) as rig:
        out["postmaster_killed"] = await postmaster_killed(rig, args)
        out["database_refusing"] = await database_refusing(rig, args)
    async with FaultRig(workdir / "b", tmpfs=True) as rig:
        if not rig.mounted:
            out["disk_full"] = {"skipped": "could not mount a tmpfs (needs root)"}
            return out
        out["disk_full"] = await disk_full(rig, args, db_down=False)
        out["disk_full_and_database_down"] = await disk_full(rig, args, db_down=True)
        out["stop_while_both_down"] = await stop_while_wedged(rig, args)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="events per second")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds each fault lasts")
    args = parser.parse_args()
    setup_logging("error", "json")
    with tempfile.TemporaryDirectory(prefix="streamerhub-faults-") as tmp:
        os.chmod(tmp, 0o755)  # as root, the embedded server runs as another user
        result = asyncio.run(bench(args, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
