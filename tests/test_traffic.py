"""The channel lanes of bot/traffic.py: no request is lost, the bucket model keys routes as
Discord does."""

from __future__ import annotations

import asyncio

import pytest

from bot.traffic import ANSWER, RESULT, Budget, Lane

pytestmark = pytest.mark.timeout(30)
BOUND = 5.0  # s: far more than any step here takes; only a lost request reaches it


async def test_a_submit_racing_the_idle_timeout_is_still_sent() -> None:
    """The lane's idle wait gives up (its timeout fired) and, before the lane's task has acted
    on that, a request arrives: it must be sent, not left waiting forever."""
    parked = asyncio.Event()  # the lane's task is in its idle wait
    expire = asyncio.Event()  # the test lets the idle timeout fire

    async def idle(wake: asyncio.Event) -> bool:
        parked.set()
        await expire.wait()
        return False  # timed out, whatever `wake` says now

    lane = Lane(Budget(limit=50, window=1.0), "race", idle=idle)
    sent: list[str] = []

    async def send(name: str) -> str:
        sent.append(name)
        return name

    try:
        assert await asyncio.wait_for(lane.submit(RESULT, lambda: send("first")), BOUND) == "first"
        await asyncio.wait_for(parked.wait(), BOUND)
        parked.clear()
        expire.set()  # the timeout fires; the lane's task resumes only at the next await
        late = lane.submit(ANSWER, lambda: send("late"))
        assert await asyncio.wait_for(late, BOUND) == "late"
        assert sent == ["first", "late"]
    finally:
        await lane.close()
