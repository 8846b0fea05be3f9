"""The channel's one budget, through the real bot on fakecord at Discord's own rate limits: a
burst of every command costs no 429 beyond the first probe, and a crowd is answered by the
queue board, a few messages for many commands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bot.board import HEADER
from nst_engine.api import StyleRequest, StyleSource
from nst_engine.pool import ProcessPoolEngine
from tests.fakecord import FakeDiscord, Message
from tests.test_bot_e2e import LONG, PHOTO, running_bot

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
    return any(message.jump_url in m.content for m in fake.bot_messages(fake.channel))


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
        posted = [await fake.post(users[i % len(users)], text) for i, text in enumerate(commands)]
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


async def test_a_crowd_is_answered_by_the_queue_board(engine: ProcessPoolEngine) -> None:
    """Twelve commands at once, while the painter is busy: up to three status replies, then one
    board message names the rest by their jump links (rather than a ⏳ per command at one
    reaction per second). Each job leaves the board when it ends; the empty board goes."""
    blocker = await engine.submit(
        StyleRequest(content=PHOTO, styles=(StyleSource(name="udnie"),), size=64, iterations=LONG)
    )
    async with (
        FakeDiscord() as fake,
        running_bot(fake, engine, guild_jobs=20, total_jobs=20) as bot,
    ):
        try:
            await fake.wait_for(lambda: engine.stats().busy, WAIT)
            users = [fake.add_user(f"crowd{i}") for i in range(12)]
            await bot.wait_until_ready()
            before = len(fake.requests)
            commands = [
                await fake.post(user, "!stylize udnie", files=[("p.png", PHOTO)]) for user in users
            ]
            await fake.wait_for(lambda: all(answered(fake, m) for m in commands), WAIT)
            answers = [  # messages created and reactions added (edits of statuses aside)
                f"{r.method} {r.route}"
                for r in fake.requests[before:]
                if r.method in ("POST", "PUT") and r.route.startswith("/channels/")
            ]
            assert len(answers) <= 4, answers  # old: a reply each for the first 3, 9 reactions
            boards = [m for m in fake.bot_messages(fake.channel) if m.content.startswith(HEADER)]
            assert len(boards) == 1 and not boards[0].reference
            named = [m for m in commands if m.jump_url in boards[0].content]
            assert len(named) >= len(commands) - 3  # at most 3 status replies before a crowd
        finally:
            await blocker.cancel()

        def results() -> list[Message]:
            return [m for m in fake.bot_messages() if "here is your painting" in m.content]

        await fake.wait_for(lambda: len(results()) == len(commands), WAIT)
        assert sorted(r.reference.id for r in results()) == sorted(m.id for m in commands)
        await fake.wait_for(lambda: boards[0].deleted, WAIT)
