"""The channel lanes of bot/traffic.py: no request is lost, the bucket model keys routes as
Discord does."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bot.traffic import ANSWER, BOARD, PROGRESS, RESULT, Budget, Lane, Traffic
from tests.fakecord import FakeDiscord

pytestmark = pytest.mark.timeout(30)
BOUND = 10.0  # s: far more than any step here takes; only a lost request reaches it


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


async def test_reading_a_channel_does_not_reset_its_send_budget() -> None:
    """Answers from fakecord on Discord's budget, through the same aiohttp trace the bot uses:
    creates and edits spend the lane's bucket, GETs of the channel's messages (a bucket of
    their own, 50 per second) leave it as it is."""
    async with FakeDiscord() as fake:
        traffic = Traffic()
        auth = {"Authorization": f"Bot {fake.token}"}
        messages = f"{fake.url}/api/v10/channels/{fake.channel.id}/messages"
        lane = traffic.lane(fake.channel.id)
        trace = [traffic.trace_config()]
        async with aiohttp.ClientSession(headers=auth, trace_configs=trace) as http:
            for text in ("one", "two"):
                async with http.post(messages, json={"content": text}) as answer:
                    created = await answer.json()
            async with http.patch(f"{messages}/{created['id']}", json={"content": "2"}):
                pass
            assert lane.budget.remaining == 2
            async with http.get(messages, params={"limit": "5"}) as history:
                assert history.status == 200
            async with http.get(f"{messages}/{created['id']}") as one:
                assert one.status == 200
            assert lane.budget.remaining == 2 and lane.budget.limit == 5
        await traffic.close()


async def test_progress_leaves_the_last_requests_of_a_window_to_results_and_answers() -> None:
    """With 2 of 5 requests left, a progress edit waits for the next window, and a result or a
    board page that comes meanwhile goes at once."""
    budget = Budget(limit=5, window=5.0)  # long enough that it cannot reset mid-check
    lane = Lane(budget, "keep")
    sent: list[str] = []

    async def send(name: str) -> None:
        sent.append(name)

    try:
        for i in range(3):
            await asyncio.wait_for(lane.submit(RESULT, lambda i=i: send(f"r{i}")), BOUND)
        progress = lane.submit(PROGRESS, lambda: send("progress"))
        for _ in range(20):  # let the lane's task run as far as it will (no time passes)
            await asyncio.sleep(0)
        assert sent == ["r0", "r1", "r2"] and budget.remaining == 2
        await asyncio.wait_for(lane.submit(BOARD, lambda: send("board")), BOUND)
        await asyncio.wait_for(lane.submit(ANSWER, lambda: send("answer")), BOUND)
        await asyncio.wait_for(progress, BOUND)  # after the window's reset
        assert sent == ["r0", "r1", "r2", "board", "answer", "progress"]
    finally:
        await lane.close()
