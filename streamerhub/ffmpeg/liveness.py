"""Twitch's own word on whether a push to a linked account is live.

FFmpeg being "live" only means the ingest took our packets: with a key of another account, a
stale key or an ingest that drops the stream, nobody sees it. While our push to a linked
account is live, Helix GET /streams is asked (one call for every linked account, up to 100) at
`interval` until Twitch lists the account, then at a quarter of that rate. Our push live with
Twitch saying offline for longer than `warn_after` is a warning with the likely causes, cleared
as soon as Twitch lists the stream. While a job runs, the accounts' names, avatars and follower
totals are refreshed every `refresh_every` (matched by user id: a rename follows).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

from streamerhub.errors import StreamerHubError
from streamerhub.ffmpeg.linked import LinkedStore, LinkedTarget, TwitchAccounts, TwitchStream
from streamerhub.log import get_logger, redact

log = get_logger(__name__)

CALM_FACTOR = 4  # once Twitch confirmed every live push, ask this many times less often
HELIX_TIMEOUT = 20.0


@dataclass(frozen=True)
class Liveness:
    """Per (job, target): our state against Twitch's, as the job's page shows it."""

    ours_live: bool = False
    twitch: str = "unknown"  # live, offline, unknown (not asked yet, or Twitch unreachable)
    viewers: int | None = None
    title: str | None = None
    category: str | None = None
    offline_since: float | None = None  # wall clock: our push live, Twitch saying offline
    checked_at: float | None = None
    warning: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ours": "live" if self.ours_live else "not live",
            "twitch": self.twitch,
            "viewers": self.viewers,
            "title": self.title,
            "category": self.category,
            "offline_for_s": (
                round(time.time() - self.offline_since) if self.offline_since else None
            ),
            "checked_at": self.checked_at,
            "warning": self.warning,
            "error": self.error,
        }


def offline_warning(login: str, seconds: float) -> str:
    return (
        f"pushing for {seconds:.0f} s, but Twitch says {login} is offline. Likely causes: the "
        "stream key belongs to another account (link the account with 'fill the key', or run "
        "the key test), a problem at this ingest region (choose another ingest server), or "
        "Twitch has not processed the stream yet (wait a minute)"
    )


Pair = tuple[int, int]


class LivenessMonitor:
    def __init__(
        self,
        store: LinkedStore,
        accounts: Callable[[], TwitchAccounts | None],
        ours_live: Callable[[int, int], bool],
        *,
        interval: float,
        warn_after: float,
        refresh_every: float,
        on_change: Callable[[int, int, Liveness], None] = lambda *_: None,
    ) -> None:
        self.store, self.accounts, self.ours_live = store, accounts, ours_live
        self.interval, self.warn_after, self.refresh_every = interval, warn_after, refresh_every
        self.on_change = on_change
        self.states: dict[Pair, Liveness] = {}
        self.helix_calls = 0  # for the rate test and /healthz-style reading
        self._refreshed = float("-inf")
        self.wake = asyncio.Event()

    def of(self, job_id: int, target_id: int) -> Liveness | None:
        return self.states.get((job_id, target_id))

    async def run(self) -> None:
        while True:
            try:
                delay = await self.check_once()
            except Exception as exc:  # noqa: BLE001 - the check must outlive a database hiccup
                log.warning("linked_check_failed", error=redact(str(exc)))
                delay = self.interval
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def check_once(self) -> float:
        """Ask Twitch once about every linked account our pushes are live on; seconds to wait."""
        linked = await self.store.of_running_jobs()
        wanted = {(lt.job_id, lt.target_id) for lt in linked}
        self.states = {k: v for k, v in self.states.items() if k in wanted}
        accounts = self.accounts()
        if not linked or accounts is None:
            return self.interval * CALM_FACTOR
        if time.monotonic() - self._refreshed >= self.refresh_every:
            await self._refresh(accounts, sorted({lt.user_id for lt in linked}))
        live = [lt for lt in linked if self.ours_live(lt.job_id, lt.target_id)]
        for lt in linked:
            if lt not in live:
                self._set(lt, Liveness(ours_live=False))
        if not live:
            return self.interval
        try:
            streams = await self._ask(accounts.live_streams(sorted({lt.user_id for lt in live})))
        except (StreamerHubError, asyncio.TimeoutError) as exc:
            said = redact(str(exc)) or "no answer in time"
            for lt in live:
                self._set(lt, replace(self._get(lt), ours_live=True, error=said))
            return self.interval
        by_user = {s.user_id: s for s in streams}
        for lt in live:
            await self._judge(lt, by_user.get(lt.user_id))
        unconfirmed = any(self.states[(lt.job_id, lt.target_id)].twitch != "live" for lt in live)
        return self.interval if unconfirmed else self.interval * CALM_FACTOR

    async def _judge(self, lt: LinkedTarget, stream: TwitchStream | None) -> None:
        now = time.time()
        old = self._get(lt)
        await self.store.record(lt, True, stream)
        if stream is not None:
            new = Liveness(True, "live", stream.viewers, stream.title, stream.category, None, now)
            if old.warning:
                log.info("linked_account_live", job=lt.job_id, target=lt.target_id)
        else:
            since = old.offline_since or now
            warning = None
            if now - since >= self.warn_after:
                login = await self._login(lt)
                warning = offline_warning(login, now - since)
                if not old.warning:
                    log.warning(
                        "linked_account_offline",
                        job=lt.job_id,
                        target=lt.target_id,
                        offline_s=round(now - since),
                    )
            new = Liveness(True, "offline", None, None, None, since, now, warning)
        self._set(lt, new)

    async def _login(self, lt: LinkedTarget) -> str:
        return await self.store.login_of(lt.target_id) or f"account {lt.user_id}"

    async def _refresh(self, accounts: TwitchAccounts, user_ids: list[str]) -> None:
        """Names, avatars and follower totals of the linked accounts of running jobs."""
        self._refreshed = time.monotonic()  # a failure is tried again next period, not at once
        try:
            users = await self._ask(accounts.users_by_id(user_ids))
            for user in users:
                followers = await self._ask(accounts.follower_total(user.user_id))
                await self.store.refresh(user, followers)
        except (StreamerHubError, asyncio.TimeoutError) as exc:
            log.warning("linked_refresh_failed", error=redact(str(exc)) or "timeout")

    async def _ask(self, call: Awaitable[Any]) -> Any:
        self.helix_calls += 1
        return await asyncio.wait_for(call, HELIX_TIMEOUT)

    def _get(self, lt: LinkedTarget) -> Liveness:
        return self.states.get((lt.job_id, lt.target_id)) or Liveness()

    def _set(self, lt: LinkedTarget, new: Liveness) -> None:
        key = (lt.job_id, lt.target_id)
        old = self.states.get(key)
        self.states[key] = new
        if old is None or (old.twitch, old.warning, old.ours_live) != (
            new.twitch,
            new.warning,
            new.ours_live,
        ):
            self.on_change(lt.job_id, lt.target_id, new)
