"""The queue board (bot/board.py) with the real discord.py client on fakecord: pages of at most
2000 characters name every command by its jump link, once; pages shrink and go as jobs end."""

from __future__ import annotations

import asyncio

import discord
import pytest

from bot.board import HEADER, Boards
from bot.traffic import Traffic
from tests.fakecord import FakeDiscord

pytestmark = pytest.mark.timeout(60)
WAIT = 20.0


class Collector(discord.Client):
    """A client that keeps the users' messages it sees (what the bot's commands would be)."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents, guild_ready_timeout=0.1)
        self.seen: list[discord.Message] = []

    async def on_message(self, message: discord.Message) -> None:
        if not message.author.bot:
            self.seen.append(message)


async def test_pages_name_every_command_once_and_go_when_their_jobs_end() -> None:
    async with FakeDiscord() as fake:
        client = Collector()
        seen = client.seen
        await client.login(fake.token)
        task = asyncio.create_task(client.connect())
        traffic = Traffic()
        boards = Boards(traffic, gather=0.2, interval=0.2)
        try:
            await asyncio.wait_for(client.wait_until_ready(), WAIT)
            users = [fake.add_user(f"u{i}") for i in range(30)]
            posted = [await fake.post(user, "!stylize") for user in users]
            await fake.wait_for(lambda: len(seen) == len(posted), WAIT)
            assert not any(boards.crowded(fake.channel.id) for _ in range(3))
            assert boards.crowded(fake.channel.id)  # the fourth within Discord's 5 s
            for message in seen:
                boards.add(message)

            def pages() -> list:
                return [m for m in fake.bot_messages() if m.content.startswith(HEADER)]

            await fake.wait_for(lambda: len(pages()) == 2, WAIT)
            text = "\n".join(p.content for p in pages())
            assert all(len(p.content) <= 2000 for p in pages())
            assert all(text.count(m.jump_url) == 1 for m in posted)
            first, second = pages()
            for message in posted:  # every job named on the first page ends
                if message.jump_url in first.content:
                    boards.remove(fake.channel.id, message.id)
            boards.remove(fake.channel.id, posted[-1].id)
            await fake.wait_for(lambda: first.deleted, WAIT)
            await fake.wait_for(lambda: posted[-1].jump_url not in second.content, WAIT)
            assert posted[-2].jump_url in second.content and not second.deleted
        finally:
            boards.close()
            await traffic.close()
            await client.close()
            await asyncio.wait_for(task, WAIT)
