"""The event write path: queue → batches → one PostgreSQL transaction each, or the disk spool.

`EventStore.submit()` is what the EventSub reader calls: synchronous, never blocks, never raises.
A writer task takes what is queued every few ms (or as soon as `batch_size` items wait) and
commits it in ONE transaction (events/batch.py): raw rows with ON CONFLICT DO NOTHING (message_id
and the event_key index dedupe), typed rows for the raw rows actually inserted, dead letters and
gap marks. Only after a commit that stored new events is a bare wake-up published (Hub.events):
the live feed then reads the committed rows from the database, its one source of truth.
Batches grow with the load: a few events when idle, up to `batch_size` (2,000) in a flood, so the
fixed costs of a statement, a commit and the analytics triggers are spread over many events.

When PostgreSQL is unreachable (refused, shutting down, pool errors, or a commit slower than
`commit_timeout`), every batch goes to the spool (fsync'd) instead, and a recovery task retries
the database with backoff; once it answers, the spool is replayed in order (ON CONFLICT makes
replay idempotent) and new batches go straight to the database again.

Durability: an item is durable once committed or spooled. The writer takes what is queued at
most `flush_interval` (5 ms) after it arrived, so `kill -9` loses at most that window plus the
batch being committed (a few ms idle; ~0.2 s for a full 2,000-event batch in a burst); spool.py
says why frames are not written ahead one by one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from streamerhub.events.batch import (
    Committed,
    commit_isolating,
)
from streamerhub.events.frames import Frame
from streamerhub.events.items import (
    DeadLetter,
    Entry,
    GapMark,
    decode,
    encodable,
    encode,
    make_letter,
)
from streamerhub.events.normalise import (
    BadEvent,
    Normalised,
    normalise,
    normalise_frame,
)
from streamerhub.events.spool import SPOOL_FILE, Spool
from streamerhub.log import get_logger
from streamerhub.pubsub import Topic

if TYPE_CHECKING:
    from streamerhub.db import Database

log = get_logger(__name__)


@dataclass
class StoreCounters:
    """What `twitch status` and the dashboard show about the write path."""

    received: int = 0  # events submitted
    stored: int = 0  # new raw rows committed
    duplicates: int = 0  # events the database already had (same message_id or event_key)
    dead_letters: int = 0  # dead letters committed (bad frames, bad events, rejected rows)
    spooled: int = 0  # items written to the spool while the database was away
    replayed: int = 0  # items committed from the spool
    batches: int = 0  # transactions committed
    last_commit_ms: float | None = None


Item = Normalised | Frame | DeadLetter | GapMark

# ----------------------------------------------------------------------------- the store


class EventStore:
    """Batches submitted events into PostgreSQL; spools them to disk while it is away."""

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        publish: Topic[dict[str, Any]] | Callable[[dict[str, Any]], None] | None = None,
        *,
        batch_size: int = 2000,
        flush_interval: float = 0.005,
        commit_timeout: float = 2.0,
        replay_timeout: float = 60.0,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
    ) -> None:
        self._db = db
        self.spool = Spool(Path(data_dir) / SPOOL_FILE)
        self._publish: Callable[[dict[str, Any]], None] | None = (
            publish.publish if isinstance(publish, Topic) else publish
        )
        self.batch_size, self.flush_interval = batch_size, flush_interval
        # Live batches give up fast (they still have the spool); replays have nowhere better to
        # go, so a slow but working database still drains the spool.
        self.commit_timeout, self.replay_timeout = commit_timeout, replay_timeout
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.counters = StoreCounters()
        self._queue: collections.deque[Entry] = collections.deque()
        self._inflight: list[Entry] = []
        self._has_items, self._full = asyncio.Event(), asyncio.Event()
        self._progress = asyncio.Condition()
        self._submitted = self._persisted = 0
        self._spool_lock = asyncio.Lock()  # appends vs the replayer's "spool is empty" switch
        self._spool_items = 0
        self._direct = True  # False: database away or spool not replayed yet
        self._offline, self._caught_up = asyncio.Event(), asyncio.Event()
        self._offline_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None

    async def __aenter__(self) -> EventStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- public API

    async def start(self) -> None:
        """Open the spool and start writing; a spool left by a crash is replayed first."""
        stats = await self.spool.open()
        self._spool_items = stats.items
        if stats.items:
            log.warning(
                "spool_found", items=stats.items, batches=stats.batches, path=str(self.spool.path)
            )
            self._go_offline(None)
        else:
            self._caught_up.set()
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="store-writer"),
            asyncio.create_task(self._recover_loop(), name="store-recovery"),
        ]
        log.info("event_store_started", spool=str(self.spool.path), batch_size=self.batch_size)

    def submit(self, item: Item) -> None:
        """Queue a notification (Frame or Normalised), dead letter or gap mark; never raises."""
        try:
            entry = Entry(self._accept(item), time.time())
        except Exception as exc:  # the reader's loop must survive anything we are handed
            log.exception("submit_failed", item_type=type(item).__name__)
            entry = Entry(make_letter("store", f"cannot queue: {exc!r}", repr(item)), time.time())
        self._queue.append(entry)
        self._submitted += 1
        self._has_items.set()
        if len(self._queue) >= self.batch_size:
            self._full.set()

    def submit_backfill(
        self,
        message_id: str,
        subscription_type: str,
        version: str,
        occurred_at: str,
        payload: dict[str, Any],
    ) -> None:
        """Queue an event rebuilt from Helix after a gap (stored with backfilled = true)."""
        try:
            item = normalise(
                message_id, subscription_type, version, occurred_at, payload, backfilled=True
            )
        except BadEvent as exc:
            self.dead_letter("backfill", exc.reason, json.dumps(payload, default=str))
            return
        self.submit(item)

    def dead_letter(self, source: str, reason: str, raw_text: str) -> None:
        """Keep something we could not understand (durably, like events)."""
        self.submit(make_letter(source, reason, raw_text))

    def record_gap_start(
        self, channel_id: str, reason: str, at: datetime | None = None
    ) -> datetime:
        """Open an EventSub gap on a channel; returns its start, which identifies it."""
        at = at or datetime.now(timezone.utc)
        self.submit(GapMark(channel_id, at, reason))
        return at

    def record_gap_end(self, channel_id: str, at: datetime | None = None) -> None:
        """Close every open gap of the channel that started before `at`."""
        self.submit(GapMark(channel_id, at or datetime.now(timezone.utc), None))

    async def flush(self) -> None:
        """Wait until everything submitted so far is durable: committed or spooled."""
        target = self._submitted
        async with self._progress:
            await self._progress.wait_for(lambda: self._persisted >= target)

    async def drain(self) -> None:
        """Wait until everything submitted so far is in the database (spool replayed)."""
        await self.flush()
        await self._caught_up.wait()

    def status(self) -> dict[str, Any]:
        """Counters plus the live state, for `twitch status` and the dashboard."""
        return {
            **asdict(self.counters),
            "queued": len(self._queue) + len(self._inflight),
            "spool_items": self._spool_items,
            "mode": "direct" if self._direct else "spooling",
            "offline_since": self._offline_since,
        }

    async def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued (to the database, else the spool) within `timeout`; idempotent."""
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_future()
            try:
                await self._stop(timeout)
            finally:
                self._stopped.set_result(None)
        await asyncio.shield(self._stopped)

    # -- submit helpers

    def _accept(self, item: Item) -> Normalised | DeadLetter | GapMark:
        if isinstance(item, Frame):
            frame = item
            try:
                item = normalise_frame(frame)
            except BadEvent as exc:
                return make_letter("eventsub", exc.reason, frame.text)
        if isinstance(item, Normalised):
            self.counters.received += 1
        elif not isinstance(item, (DeadLetter, GapMark)):
            raise TypeError(f"cannot store a {type(item).__name__}")
        return item

    # -- writer

    async def _write_loop(self) -> None:
        while batch := await self._next_batch():
            self._inflight = batch
            while True:
                try:
                    await self._persist(batch)
                    break
                except Exception:  # a bug must not kill the writer: keep the batch, log, retry
                    log.exception("store_write_failed", items=len(batch))
                    await asyncio.sleep(1.0)
            self._inflight = []
            self._persisted += len(batch)
            async with self._progress:
                self._progress.notify_all()

    async def _next_batch(self) -> list[Entry]:
        while not self._queue:
            if self._stopping:
                return []
            self._has_items.clear()
            await self._has_items.wait()
        # Let a burst gather: one commit for many events. What queued up during the last commit
        # has gathered already and goes at once; nothing waits longer than flush_interval (min():
        # `at` is wall-clock time, which may step back).
        wait = min(self.flush_interval, self._queue[0].at + self.flush_interval - time.time())
        if wait > 0 and len(self._queue) < self.batch_size and not self._stopping:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._full.wait()
        count = min(len(self._queue), self.batch_size)
        return [self._queue.popleft() for _ in range(count)]

    async def _persist(self, batch: list[Entry]) -> None:
        while True:
            if self._direct and await self._try_commit(batch):
                return
            outcome = await self._try_spool(batch)
            if outcome == "spooled":
                return
            if outcome == "failed":  # disk refused too: keep the batch in memory, retry both
                await asyncio.sleep(1.0)

    async def _try_commit(self, batch: list[Entry]) -> bool:
        try:
            await self._commit_isolating(batch, self.commit_timeout)
            return True
        except Exception as exc:  # noqa: BLE001 - only transient errors get here
            self._go_offline(exc)
            return False

    async def _try_spool(self, batch: list[Entry]) -> str:
        async with self._spool_lock:
            if self._direct:
                return "direct"
            try:
                await self._append(batch)
            except (OSError, sqlite3.Error) as exc:
                log.error(
                    "spool_write_failed",
                    path=str(self.spool.path),
                    error=str(exc),
                    items=len(batch),
                )
                return "failed"
            self._spool_items += len(batch)
            self.counters.spooled += len(batch)
            return "spooled"

    async def _append(self, batch: list[Entry]) -> None:
        try:
            await self.spool.append([encode(entry) for entry in batch])
        except (TypeError, ValueError):  # something JSON cannot carry: dead-letter just that
            await self.spool.append(encodable(batch))

    def _go_offline(self, exc: BaseException | None) -> None:
        if self._direct and exc is not None:
            log.warning("database_unavailable", error=repr(exc), spool=str(self.spool.path))
        if self._direct:
            self._offline_since = time.time()
        self._direct = False
        self._caught_up.clear()
        self._offline.set()

    # -- recovery

    async def _recover_loop(self) -> None:
        while True:
            await self._offline.wait()
            delay = self.retry_initial
            while not await self._replay_logged():
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.retry_max)
            self._offline.clear()

    async def _replay_logged(self) -> bool:
        try:
            return await self._replay()
        except Exception:  # keep retrying: the spool holds the data, the log holds the bug
            log.exception("spool_replay_failed")
            return False

    async def _replay(self) -> bool:
        """Replay the spool in order; True once it is empty and batches go direct again."""
        if not await self._db.ping():
            return False
        replayed = 0
        while True:
            async with self._spool_lock:
                batches = await self.spool.read(self.batch_size)
                if not batches:
                    return self._back_online(replayed)
            entries = [decode(item) for batch in batches for item in batch.items]
            try:
                await self._commit_isolating(entries, self.replay_timeout)
                await self.spool.delete_through(batches[-1].id)
            except Exception as exc:  # noqa: BLE001 - transient, or the spool file failing: retry later
                log.warning("spool_replay_paused", error=repr(exc), replayed=replayed)
                return False
            self._spool_items -= len(entries)
            self.counters.replayed += len(entries)
            replayed += len(entries)

    def _back_online(self, replayed: int) -> bool:
        away = time.time() - self._offline_since if self._offline_since else None
        log.info(
            "database_back",
            replayed=replayed,
            offline_s=round(away, 1) if away is not None else None,
        )
        self._direct, self._offline_since = True, None
        self._caught_up.set()
        return True

    # -- commit

    async def _commit_isolating(self, entries: list[Entry], timeout: float) -> None:
        await commit_isolating(self._db, entries, timeout, self._committed)

    def _committed(self, done: Committed) -> None:
        self.counters.last_commit_ms = done.ms
        self.counters.batches += 1
        self.counters.stored += len(done.inserted)
        self.counters.duplicates += done.events - len(done.inserted)
        self.counters.dead_letters += done.letters
        self._announce(done.inserted)

    def _announce(self, inserted: list[Normalised]) -> None:
        """Wake the live feed once per commit that stored new events (it reads the rows)."""
        if self._publish is None or not inserted:
            return
        try:
            self._publish({})
        except Exception:  # a broken subscriber must not stop the write path
            log.exception("publish_failed", events=len(inserted))

    # -- stop

    async def _stop(self, timeout: float) -> None:
        self._stopping = True
        self._has_items.set()
        self._full.set()
        writer, recovery = self._tasks or (None, None)
        if writer is not None:
            done, _ = await asyncio.wait({writer}, timeout=timeout)
            if not done:
                await self._abandon(writer)
        if recovery is not None:
            recovery.cancel()
            await asyncio.gather(recovery, return_exceptions=True)
        await self.spool.close()
        log.info("event_store_stopped", **self.status())

    async def _abandon(self, writer: asyncio.Task[None]) -> None:
        # The database hangs: spool whatever is in flight or queued (a commit we cancelled may
        # have landed; replay dedupes it).
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        left = [*self._inflight, *self._queue]
        self._queue.clear()
        self._inflight = []
        if not left:
            return
        self._persisted += len(left)  # durable or logged as lost: either way, flush() is done
        try:
            await self._append(left)
            self._spool_items += len(left)
            self.counters.spooled += len(left)
            log.warning("store_stop_spooled", items=len(left))
        except (OSError, sqlite3.Error) as exc:
            log.error("store_stop_lost", items=len(left), error=str(exc))
