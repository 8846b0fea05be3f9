"""Issue 18's smaller holes: bounded picture children, buttons that answer Discord in time,
and housekeeping that runs while the bot does (the download allow-list is in test_bot_intake).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psutil
import pytest

from bot.journal import ENDED, Journal
from bot.pictures import Pictures
from nst_engine import images
from tests.fakecord import RELAXED, FakeDiscord
from tests.test_bot_e2e import PHOTO, WAIT, engine, next_painting, running_bot, settings

__all__ = ["engine"]  # the shared painter fixture

pytestmark = pytest.mark.asyncio(loop_scope="module")

CALLBACK = "/interactions/{interaction_id}/{token}/callback"
ONE_MESSAGE = "/channels/{channel_id}/messages/{message_id}"


def picture_children() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children()
        if "bot.pictures" in " ".join(child.cmdline())
    ]


async def test_a_burst_of_picture_children_waits_for_a_free_place(tmp_path: Path) -> None:
    style = tmp_path / "ours.png"
    style.write_bytes(PHOTO)
    pictures = Pictures(2)
    burst = [asyncio.create_task(pictures.server_sheet([("ours", style)])) for _ in range(5)]
    # One turn of the loop runs each task up to its first wait: a child is started (fork and
    # exec happen before that wait) or the task waits for a place; none of them has exited.
    await asyncio.sleep(0)
    assert len(picture_children()) == 2
    sheets = await asyncio.gather(*burst)
    assert all(images.probe(sheet).format == "JPEG" for sheet in sheets)
    assert not picture_children()


async def test_a_result_button_defers_before_it_reads_the_original(engine) -> None:
    async with FakeDiscord(rate_limit=RELAXED) as discord, running_bot(discord, engine):
        bea = discord.add_user("bea")
        asked = await discord.post(bea, "!stylize udnie", files=[("cat.png", PHOTO)])
        first = await next_painting(discord, bea)
        stronger = next(c for c in first.custom_ids() if c.startswith("sb:+:"))
        seen = len(discord.requests)
        await discord.click(bea, first, stronger)
        await next_painting(discord, bea, after=1)
        later = [(r.method, r.route) for r in discord.requests[seen:]]
        # Discord gives 3 s for the first answer: it comes before any other request.
        assert later.index(("POST", CALLBACK)) < later.index(("GET", ONE_MESSAGE))
        # A refusal found after the defer fills the private "thinking" answer.
        discord.deleted(asked)
        refused = await discord.click(bea, first, stronger)
        note = await discord.wait_for(
            lambda: refused.original is not None and "deleted" in refused.original.content, WAIT
        )
        assert note and refused.ephemeral and refused.deferred


def job_states(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "stylebot.db") as db:
        return [state for (state,) in db.execute("SELECT state FROM jobs")]


async def test_housekeeping_prunes_and_forgets_servers_left_while_away(engine) -> None:
    async with FakeDiscord(rate_limit=RELAXED) as discord:
        data_dir = Path(settings(discord.token).data_dir)
        before = Journal(data_dir)
        before.styles.add(4242, "gone", PHOTO, 1, 10)  # a server left while the bot was down
        before.styles.add(discord.guild.id, "kept", PHOTO, 1, 10)
        before.close()
        cid = discord.add_user("cid")
        async with running_bot(discord, engine, data_dir=data_dir, keep_days=0) as bot:
            journal = bot.studio.journal
            await discord.wait_for(lambda: not journal.styles.of(4242), WAIT)
            assert not (data_dir / "styles" / "4242").exists()
            assert [s.name for s in journal.styles.of(discord.guild.id)] == ["kept"]
            # A finished job is pruned by the periodic step, without a restart.
            await discord.post(cid, "!stylize udnie", files=[("cat.png", PHOTO)])
            await next_painting(discord, cid)
            await discord.wait_for(lambda: set(job_states(data_dir)) <= set(ENDED), WAIT)
            assert job_states(data_dir)
            await bot.housekeeping()
            assert job_states(data_dir) == []
