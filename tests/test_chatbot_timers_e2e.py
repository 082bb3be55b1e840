"""Timers through the daemon (a process), with the chat bot's minute shortened to one second by
[chatbot] minute_s: a timer speaks while the channel is live, only after enough chat since its
last message, and never while the channel is offline."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest
from test_chatbot_e2e import Api, chat, sent_texts, start_daemon
from test_eventsub import wait_until

from streamerhub.fake_twitch import FakeTwitch

pytestmark = pytest.mark.e2e

TIMER = "Stay hydrated, chat!"
FAST = {"STREAMERHUB_CHATBOT_MINUTE_S": "1"}  # a timer's "minute" is one second


def timer_posts(fake: FakeTwitch) -> int:
    return sent_texts(fake).count(TIMER)


async def test_timers_speak_while_live_after_enough_chat_only(daemon_factory, db_url: str) -> None:
    async with FakeTwitch() as fake, aiohttp.ClientSession() as http:
        daemon = await start_daemon(daemon_factory, db_url, fake, env=FAST)
        try:
            await _scenario(http, fake, daemon)
        except BaseException:
            print(daemon.log()[-6000:])
            raise
        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
        assert "Traceback" not in daemon.log()


async def _scenario(http: aiohttp.ClientSession, fake: FakeTwitch, daemon: Any) -> None:
    api = Api(http, daemon)
    channel = fake.state.channel("1000")
    channel.go_offline()
    await api.call("PUT", "/channels/1000", {"enabled": True})
    timer = {"name": "water", "message": TIMER, "interval_min": 1, "min_chat_messages": 3}
    await api.call("POST", "/timers", timer)

    # Offline: a busy chat and many timer intervals, and the bot says nothing.
    for i in range(5):
        await chat(http, fake, f"hello {i}", user_id=str(5100 + i))
    await asyncio.sleep(4)
    assert timer_posts(fake) == 0
    assert not await api.log_has(source="timer:water")

    # Live, but the chat is quiet: the timer is skipped and says why.
    channel.go_live()
    await wait_until(
        lambda: api.log_has(source="timer:water", outcome="skipped"), 10, "quiet chat logged"
    )
    entries = await api.call("GET", "/log?limit=200")
    quiet = next(e for e in entries if e["source"] == "timer:water")
    assert quiet["reason"].startswith("quiet chat: 0 messages since the last one, needs 3")
    assert timer_posts(fake) == 0

    # Three messages: the next interval posts it, once; its own echo is not chat activity.
    for i in range(3):
        await chat(http, fake, f"gg {i}", user_id=str(5200 + i))
    await wait_until(lambda: timer_posts(fake) == 1, 10, "timer posted while live")
    await wait_until(lambda: api.log_has(source="timer:water", outcome="sent"), 5, "sent logged")
    await asyncio.sleep(3)
    assert timer_posts(fake) == 1

    # Offline again: chat goes on, the timer does not.
    channel.go_offline()
    await asyncio.sleep(1.5)  # a tick sees the stream ended
    for i in range(5):
        await chat(http, fake, f"bye {i}", user_id=str(5300 + i))
    await asyncio.sleep(4)
    assert timer_posts(fake) == 1
