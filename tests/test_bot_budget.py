"""The channel's one budget, through the real bot on fakecord at Discord's own rate limits: a
burst of every command costs no 429 beyond the first probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from nst_engine.pool import ProcessPoolEngine
from tests.fakecord import FakeDiscord, Message
from tests.test_bot_e2e import PHOTO, running_bot

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]
WAIT = 120.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine() -> AsyncIterator[ProcessPoolEngine]:
    async with ProcessPoolEngine(workers=1, devices=["cpu"], job_timeout=120) as pool:
        yield pool


def answered(fake: FakeDiscord, message: Message) -> bool:
    """A reply to the command, a bot reaction on it, or a bot message carrying its jump link."""
    me = fake.bot_user.id
    if any(m.author.id == me for m in fake.replies_to(message)):
        return True
    if any(me in users for users in message.reactions.values()):
        return True
    link = f"/channels/{message.guild_id}/{message.channel_id}/{message.id}"
    return any(link in m.content for m in fake.bot_messages(fake.channel))


async def test_a_burst_of_every_command_keeps_to_the_channels_budget(
    engine: ProcessPoolEngine,
) -> None:
    """Every message the bot creates or edits in the channel goes through the channel's lane,
    which sends one at a time: so its message bucket never has two requests in flight (a
    little latency makes any overlap show), and Discord never has to answer 429."""
    async with (
        FakeDiscord(latency=0.05) as fake,
        running_bot(fake, engine, status_interval=1.0) as bot,
    ):
        users = [fake.add_user(f"user{i}") for i in range(4)]
        commands = [
            "!help",
            "!about",
            "!styles",
            "!queue",
            "!cancel",
            "!cancel 0123abcd",
            "!style list",
            "!style remove nope",
            "!stylize no-such-style",
            "!stylize udnie strength=99",
        ]
        await bot.wait_until_ready()
        posted = [
            await fake.post(users[i % len(users)], text) for i, text in enumerate(commands)
        ]
        jobs = [
            await fake.post(user, f"!stylize udnie seed={i}", files=[("p.png", PHOTO)])
            for i, user in enumerate(users[:3])
        ]
        everything = posted + jobs
        await fake.wait_for(lambda: all(answered(fake, m) for m in everything), WAIT)

        def results() -> int:
            return sum("here is your painting" in m.content for m in fake.bot_messages())

        await fake.wait_for(lambda: results() == len(jobs), WAIT)
        await asyncio.sleep(0)
        limited = [r for r in fake.requests if r.status == 429]
        assert len(limited) <= 1, [f"{r.method} {r.route}" for r in limited]
        assert fake.peak_in_flight[("messages", str(fake.channel.id))] == 1
