"""The bot as an attacker or a careless admin meets it: missing permissions, another server's
admin, attachments that lie about their size or live elsewhere, and a burst of big photos."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fakecord import (
    ATTACH_FILES,
    RELAXED,
    SEND_MESSAGES,
    AttachmentSpec,
    FakeDiscord,
)
from tests.test_bot_durable import bot_process
from tests.test_bot_e2e import LONG, PHOTO, WAIT, bot_reply, engine, running_bot, status_of

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["engine"]  # the shared painter fixture

MiB = 1024 * 1024


def bot_may(bot: Any, channel_id: int, permission: str) -> bool:
    """What the bot's own cache (kept by the gateway's events) says it may do in a channel."""
    channel = bot.get_channel(channel_id)
    return bool(getattr(channel.permissions_for(channel.guild.me), permission))


async def test_a_channel_without_attach_files_refuses_before_anything_is_queued(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.ask")
    async with FakeDiscord(rate_limit=RELAXED) as discord, running_bot(discord, engine) as bot:
        art, general = discord.guild.channels[1], discord.guild.channels[0]
        discord.deny_bot(ATTACH_FILES, art)
        await discord.wait_for(lambda: not bot_may(bot, art.id, "attach_files"), WAIT)
        ann = discord.add_user("ann")
        msg = await discord.post(ann, "!stylize udnie", files=[("cat.png", PHOTO)], channel=art)
        refusal = await bot_reply(discord, msg, "missing Attach Files")
        assert "\n" not in refusal.content
        assert msg.files[0].fetches == 0 and not bot.studio.jobs

        slash = await discord.slash(
            ann, "stylize", {"style": "udnie"}, files={"photo": ("cat.png", PHOTO)}, channel=art
        )
        await discord.wait_for(lambda: slash.responded, WAIT)
        assert slash.ephemeral and "Attach Files" in slash.messages[0].content
        assert not bot.studio.jobs

        # Where it may not even speak, a prefix command is refused in the log only.
        discord.deny_bot(SEND_MESSAGES, general)
        await discord.wait_for(lambda: not bot_may(bot, general.id, "send_messages"), WAIT)
        quiet = await discord.post(ann, "!stylize udnie", files=[("cat.png", PHOTO)])
        await discord.wait_for(
            lambda: any("not allowed to answer" in r.getMessage() for r in caplog.records), WAIT
        )
        assert not discord.replies_to(quiet) and quiet.files[0].fetches == 0
        assert not bot.studio.jobs


async def test_an_admin_of_another_server_cannot_cancel_a_job(engine: Any) -> None:
    async with (
        FakeDiscord(rate_limit=RELAXED) as discord,
        running_bot(discord, engine, max_iterations=LONG) as bot,
    ):
        other = discord.add_guild("another server")
        boss = discord.add_user("boss", admin=True, guilds=[other])
        owner = discord.add_user("bea")
        msg = await discord.post(owner, "!stylize udnie", files=[("cat.png", PHOTO)])
        status, job_id = await status_of(discord, msg)
        await discord.wait_for(lambda: bot.get_guild(other.id) is not None, WAIT)

        command = await discord.post(boss, f"!cancel {job_id}", channel=other.channels[0])
        await bot_reply(discord, command, f"There is no job `{job_id}`")
        slash = await discord.slash(boss, "cancel", {"job": job_id}, channel=other.channels[0])
        await discord.wait_for(lambda: slash.responded, WAIT)
        assert "There is no job" in slash.messages[0].content
        assert bot.studio.find(job_id) is not None  # still there, still painting

        mine = await discord.post(owner, f"!cancel {job_id}")
        await bot_reply(discord, mine, "Cancelling")
        await discord.wait_for(lambda: "was cancelled" in status.content, WAIT)


async def test_attachments_that_lie_or_live_elsewhere_are_refused(engine: Any) -> None:
    async with FakeDiscord(rate_limit=RELAXED) as discord, running_bot(discord, engine) as bot:
        cal = discord.add_user("cal")
        liar = AttachmentSpec("cat.png", PHOTO[:64], lie_size=1000, stream_bytes=200 * MiB)
        msg = await discord.post(cal, "!stylize udnie", files=[liar])
        await bot_reply(discord, msg, "`cat.png` is too big: more than")
        # reading stopped at the cap (+ what the sockets buffer), not at 200 MiB
        cap = bot.settings.max_attachment_bytes
        assert msg.files[0].bytes_served < cap + 32 * MiB

        elsewhere = AttachmentSpec("cat.png", PHOTO, url_host="evil.example")
        msg = await discord.post(cal, "!stylize udnie", files=[elsewhere])
        await bot_reply(discord, msg, "not stored on Discord's CDN")
        assert not bot.studio.jobs


@pytest.mark.slow  # starts the bot in a process of its own
async def test_a_burst_of_big_photos_downloads_only_what_the_caps_allow(tmp_path: Path) -> None:
    async with FakeDiscord(rate_limit=RELAXED) as discord:
        log = tmp_path / "bot.log"
        async with bot_process(discord, tmp_path / "data", log) as proc:
            bot = psutil.Process(proc.pid)
            dan = discord.add_user("dan")
            probe = await discord.post(dan, "!help")
            await discord.wait_for(lambda: discord.replies_to(probe), WAIT)
            rss = [bot.memory_info().rss]
            big = [AttachmentSpec("big.png", PHOTO, stream_bytes=14 * MiB) for _ in range(20)]
            posts = [
                await discord.post(dan, f"!stylize udnie seed={i}", files=[spec])
                for i, spec in enumerate(big)
            ]

            def answered() -> bool:
                rss.append(bot.memory_info().rss)
                return all(discord.replies_to(p) or p.reactions for p in posts)

            await discord.wait_for(answered, WAIT)
            refused = [
                p
                for p in posts
                if any("You already have" in r.content for r in discord.replies_to(p))
            ]
            fetched = [p for p in posts if p.files[0].fetches]
            assert len(refused) == 17 and len(fetched) == 3
            assert max(rss) < 150 * MiB, f"bot RSS peaked at {max(rss) / MiB:.0f} MiB"
