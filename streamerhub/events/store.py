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

Durability: an item is durable once committed or spooled. At most `memory_window` items
(2 × batch_size: the batch being written plus the one gathering) are ever held only in memory:
the submit() that would exceed it writes the queue to the spool before it returns, so the
EventSub reader (which calls submit() synchronously) reads no further frame until the overflow
is on disk, and a flood switches the store to spooling (the recovery task replays the spool into
a database that is up at once). `kill -9` therefore loses at most that window; spool.py says why
frames are not written ahead one by one.

No state waits on a single resource: a batch the spool refuses (disk full) is committed if the
database answers, whatever the mode; replay goes back to direct writes even when the replayed
batches cannot be deleted from the spool yet (they are deleted, and the file shrunk, later).
Only when both refuse is the store "wedged": it keeps the items in memory up to `max_held`,
then drops the newest and counts them (`dropped`), logging at error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import functools
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
    slim,
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
    overflows: int = 0  # times a flood outran the writer and the queue went to the spool
    dropped: int = 0  # items lost because neither the database nor the disk took them
    last_commit_ms: float | None = None


Item = Normalised | Frame | DeadLetter | GapMark

STALL_S = 30.0  # a writer with work and no progress this long puts capture at risk
WEDGED_RETRY_MIN, WEDGED_RETRY_MAX = 0.2, 2.0  # both sinks refusing: retry soon, then every 2 s
STOP_COMMIT_S = 3.0  # on stop, the last try at the database for what the spool refused

# ----------------------------------------------------------------------------- the store


def _trim_heap() -> None:
    """Hand freed memory back to the OS after a replay: glibc keeps what Python freed in its
    heap. (CPython's own small-object arenas are not glibc's: see README, RSS after a flood.)"""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up once (find_library runs ldconfig); None elsewhere."""
    try:
        trim: Callable[[int], int] = _libc().malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None
    return trim


M_ARENA_MAX = -8  # glibc's mallopt parameter


def _one_malloc_arena() -> None:
    """Let threads share glibc's main malloc arena. Each thread (the spool's writes and reads
    run on the executor's) otherwise gets an arena of its own, which keeps what a flood's spool
    work freed: measured, ~8 MB of a daemon's RSS after a 150,000-event flood. Only the spool and
    DNS lookups run on threads, so one shared arena costs no contention worth measuring."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        _libc().mallopt(M_ARENA_MAX, 1)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


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
        memory_window: int | None = None,
        max_held: int = 50_000,
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
        self.memory_window = memory_window or 2 * batch_size
        self.max_held = max(max_held, self.memory_window)
        self.counters = StoreCounters()
        self._queue: collections.deque[Entry] = collections.deque()
        self._inflight: list[Entry] = []
        self._has_items, self._full = asyncio.Event(), asyncio.Event()
        self._progressed = asyncio.Event()
        self._submitted = self._persisted = 0
        self._last_progress = time.monotonic()
        self._spill_failed_at = 0  # queue length of the last failed overflow write
        self._spool_lock = asyncio.Lock()  # appends vs the replayer's "spool is empty" switch
        self._spool_items = 0  # spooled and not replayed yet
        self._spool_appends = 0  # bumped by every append: the replayer's "nothing new" check
        self._replayed_through = 0  # last spool batch committed; deleted only when the disk lets
        self._untidy = False  # replayed batches to delete / a file to shrink
        self._direct = True  # False: spooling (database away, a flood, or spool not replayed)
        self._wedged_since: float | None = None  # neither the database nor the disk takes a batch
        self._spool_error: str | None = None
        self._offline, self._caught_up = asyncio.Event(), asyncio.Event()
        self._offline_since: float | None = None  # spooling since
        self._db_down_since: float | None = None
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
        _one_malloc_arena()  # before the spool's first thread work
        stats = await self.spool.open()
        self._spool_items = stats.items
        if stats.items:
            log.warning(
                "spool_found", items=stats.items, batches=stats.batches, path=str(self.spool.path)
            )
            self._go_offline()
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
        self._submitted += 1
        if len(self._queue) >= self.max_held:
            self._drop(entry)
            return
        self._queue.append(entry)
        self._has_items.set()
        if len(self._queue) >= self.batch_size:
            self._full.set()
        if len(self._queue) + len(self._inflight) >= self.memory_window:
            self._spill()

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
        while self._persisted < target:
            self._progressed.clear()
            await self._progressed.wait()

    async def drain(self) -> None:
        """Wait until everything submitted so far is in the database (spool replayed)."""
        await self.flush()
        await self._caught_up.wait()

    @property
    def mode(self) -> str:
        """direct, spooling (database away), replaying (spool draining into it), wedged."""
        if self._wedged_since is not None:
            return "wedged"
        if self._direct:
            return "direct"
        return "spooling" if self._db_down_since is not None else "replaying"

    def status(self) -> dict[str, Any]:
        """Counters plus the live state, for `twitch status` and the dashboard."""
        return {
            **asdict(self.counters),
            "queued": len(self._queue) + len(self._inflight),
            "spool_items": self._spool_items,
            "mode": self.mode,
            "offline_since": self._offline_since,
            "database_down_since": self._db_down_since,
            "wedged_since": self._wedged_since,
            "spool_error": self._spool_error,
            "memory_window": self.memory_window,
        }

    async def health(self) -> dict[str, Any]:
        """status() plus the spool's backlog age, and whether capture is at risk (and why)."""
        body = self.status()
        oldest = None
        if self._spool_items:
            with contextlib.suppress(OSError, sqlite3.Error):
                oldest = (await self.spool.stats(self._replayed_through)).oldest_at
        body["spool_oldest_age_s"] = round(time.time() - oldest, 1) if oldest else None
        body["writer_stalled_s"] = self.stalled_for()
        body["at_risk"] = self.risks()
        return body

    def risks(self) -> list[str]:
        """What puts capture at risk right now, in words (empty: nothing)."""
        risks = []
        if self._wedged_since is not None:
            risks.append(
                "neither the database nor the spool disk accepts events: they are held in "
                f"memory ({len(self._queue) + len(self._inflight)} now), then dropped; free "
                f"disk space ({self.spool.path.parent}) or bring PostgreSQL back"
            )
        elif self.stalled_for() > STALL_S:
            risks.append(f"the event writer has made no progress for {self.stalled_for()} s")
        if self.counters.dropped:
            risks.append(f"{self.counters.dropped} events were dropped (see the log)")
        return risks

    def stalled_for(self) -> float:
        """Seconds the writer has had items and made no progress (0 when idle or moving)."""
        if not self._queue and not self._inflight:
            return 0.0
        return round(time.monotonic() - self._last_progress, 1)

    def note_database(self, up: bool) -> None:
        """What the database supervisor or a ping learned (shown by health())."""
        if up:
            self._db_down_since = None
        elif self._db_down_since is None:
            self._db_down_since = time.time()

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
                item = slim(normalise_frame(frame))
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
            self._advance(len(batch))

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

    def _advance(self, count: int) -> None:
        self._persisted += count
        self._last_progress = time.monotonic()
        self._progressed.set()

    async def _persist(self, batch: list[Entry]) -> None:
        delay = WEDGED_RETRY_MIN
        while True:
            if self._direct and await self._try_commit(batch):
                return self._unwedge()
            outcome = await self._try_spool(batch)
            if outcome == "spooled":
                return self._unwedge()
            # The disk refused: the database may be back although the spool is not replayed (it
            # cannot be written, maybe not even shrunk). Events go to whichever sink works.
            if outcome == "failed" and await self._try_commit(batch, offline=False):
                return self._unwedge()
            if outcome == "failed":
                self._wedge()
                await asyncio.sleep(delay)
                delay = min(delay * 2, WEDGED_RETRY_MAX)

    def _wedge(self) -> None:
        if self._wedged_since is None:
            self._wedged_since = time.time()
            log.error(
                "store_wedged",
                spool=str(self.spool.path),
                error=self._spool_error,
                hint="free disk space for the spool or bring PostgreSQL back",
            )

    def _unwedge(self) -> None:
        if self._wedged_since is not None:
            log.info("store_unwedged", wedged_s=round(time.time() - self._wedged_since, 1))
            self._wedged_since = None

    async def _try_commit(self, batch: list[Entry], offline: bool = True) -> bool:
        try:
            await self._commit_isolating(batch, self.commit_timeout)
        except Exception as exc:  # noqa: BLE001 - only transient errors get here
            self.note_database(False)
            if offline:
                self._go_offline(exc)
            return False
        self.note_database(True)
        return True

    async def _try_spool(self, batch: list[Entry]) -> str:
        async with self._spool_lock:
            if self._direct:
                return "direct"
            try:
                await self._append(batch)
            except (OSError, sqlite3.Error) as exc:
                self._spool_failed(exc, len(batch))
                return "failed"
            return "spooled"

    def _spool_failed(self, exc: BaseException, items: int) -> None:
        if self._spool_error is None:
            log.error("spool_write_failed", path=str(self.spool.path), error=str(exc), items=items)
        self._spool_error = str(exc)

    async def _append(self, batch: list[Entry]) -> None:
        try:
            encoded = [encode(entry) for entry in batch]
            await self.spool.append(encoded)
        except (TypeError, ValueError):  # something JSON cannot carry: dead-letter just that
            await self.spool.append(encodable(batch))
        self._spooled(len(batch))

    def _spooled(self, count: int) -> None:
        self._spool_items += count
        self._spool_appends += 1
        self.counters.spooled += count
        self._spool_error = None

    def _spill(self) -> None:
        """The queue reached the memory window: put it on disk now, before the reader goes on."""
        if self._spill_failed_at and len(self._queue) < self._spill_failed_at + self.batch_size:
            return  # the disk just refused: try again one batch later, not on every event
        queue, written = self._queue, 0
        try:
            while queue:  # in batch_size rows: replay commits them one batch at a time
                chunk = [queue[i] for i in range(min(len(queue), self.batch_size))]
                try:
                    self.spool.append_now([encode(entry) for entry in chunk])
                except (TypeError, ValueError):
                    self.spool.append_now(encodable(chunk))
                for _ in chunk:
                    queue.popleft()
                written += len(chunk)
                self._spooled(len(chunk))
        except (OSError, sqlite3.Error) as exc:
            self._spill_failed_at = len(queue)
            self._spool_failed(exc, len(queue))
        else:
            self._spill_failed_at = 0
        if not written:
            return
        self._full.clear()
        self.counters.overflows += 1
        if self._direct:
            log.info("store_overflow", items=written, window=self.memory_window)
        self._go_offline()
        self._advance(written)

    def _drop(self, entry: Entry) -> None:
        """Nowhere to put it: count it and say so (never silently)."""
        self.counters.dropped += 1
        self._persisted += 1  # flush() must not wait for it forever
        if self.counters.dropped == 1 or self.counters.dropped % 1000 == 0:
            log.error(
                "events_dropped",
                dropped=self.counters.dropped,
                held=len(self._queue),
                kind=type(entry.item).__name__,
                hint="neither PostgreSQL nor the spool disk accepts events",
            )

    def _go_offline(self, exc: BaseException | None = None) -> None:
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
            while not await self._recover_logged():
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.retry_max)
            # Cleared only when nothing is left to do: no await between the check and the clear,
            # so a batch that went offline meanwhile keeps the event set.
            if self._direct and not self._untidy:
                self._offline.clear()

    async def _recover_logged(self) -> bool:
        try:
            if not self._direct and not await self._replay():
                return False
            return await self._tidy()
        except Exception:  # keep retrying: the spool holds the data, the log holds the bug
            log.exception("spool_replay_failed")
            return False

    async def _replay(self) -> bool:
        """Replay the spool in order; True once it is all committed and batches go direct again."""
        up = await self._db.ping()
        self.note_database(up)
        if not up:
            return False
        replayed = 0
        while True:
            async with self._spool_lock:
                seen = self._spool_appends
                batches = await self.spool.read(self.batch_size, after=self._replayed_through)
                if not batches and seen == self._spool_appends:
                    return self._back_online(replayed)
            if not batches:
                continue  # an overflow was written while we read: read again
            last = batches[-1].id
            entries = [decode(item) for batch in batches for item in batch.items]
            batches = []  # the parsed spool rows: not held while the commit runs
            try:
                await self._commit_isolating(entries, self.replay_timeout)
            except Exception as exc:  # noqa: BLE001 - transient: retry later
                log.warning("spool_replay_paused", error=repr(exc), replayed=replayed)
                return False
            self._replayed_through = last
            self._untidy = True
            self._spool_items -= len(entries)
            self.counters.replayed += len(entries)
            replayed += len(entries)
            # Forget replayed batches as we go; a full disk may refuse even a DELETE: then they
            # stay (skipped by `after`) until _tidy() succeeds, and a crash replays them again,
            # which ON CONFLICT makes harmless.
            with contextlib.suppress(OSError, sqlite3.Error):
                await self.spool.delete_through(self._replayed_through)

    async def _tidy(self) -> bool:
        """Delete replayed batches and, once the spool is empty, give its space back."""
        if not self._untidy:
            return True
        try:
            async with self._spool_lock:
                await self.spool.delete_through(self._replayed_through)
                if self._spool_items == 0 and not (await self.spool.stats()).items:
                    await self.spool.shrink()
        except (OSError, sqlite3.Error) as exc:
            log.warning("spool_tidy_failed", error=str(exc), path=str(self.spool.path))
            return False
        self._untidy = False
        return True

    def _back_online(self, replayed: int) -> bool:
        away = time.time() - self._offline_since if self._offline_since else None
        log.info(
            "database_back" if replayed or away else "store_direct",
            replayed=replayed,
            offline_s=round(away, 1) if away is not None else None,
        )
        self._direct, self._offline_since = True, None
        self._caught_up.set()
        if replayed:
            _trim_heap()
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
        # The writer could not finish in time (database hanging, disk refusing): save what is
        # in flight or queued to whichever sink takes it (a commit we cancelled may have landed;
        # replay dedupes it), and say exactly what could not be saved.
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
            log.warning("store_stop_spooled", items=len(left))
            return
        except (OSError, sqlite3.Error) as exc:
            spool_error = str(exc)
        try:
            await self._commit_isolating(left, STOP_COMMIT_S)
            log.warning("store_stop_committed", items=len(left), spool_error=spool_error)
            return
        except Exception as exc:  # noqa: BLE001 - the last sink failed too: report, do not raise
            db_error = repr(exc)
        self.counters.dropped += len(left)
        events = [e.item.raw.message_id for e in left if isinstance(e.item, Normalised)]
        log.error(
            "store_stop_lost",
            items=len(left),
            events=len(events),
            message_ids=events[:50],
            spool_error=spool_error,
            database_error=db_error,
        )
