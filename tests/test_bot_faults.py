"""Every failure on a job's path ends with its owner told, the job in a final state, and its
place in the queue and its painter slot given back: a full disk, a locked journal, a result file
gone missing, and a timelapse that would crowd the picture out of its message.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import files, journal
from bot.app import StyleBot
from bot.delivery import MESSAGE_TOTAL, TIMELAPSE, timelapse_budget
from tests.fakecord import FakeDiscord
from tests.test_bot_durable import WAIT, painter_held, post_jobs, seed_painted, status_of
from tests.test_bot_e2e import PHOTO, bot_reply, engine, paintings_for, running_bot

pytestmark = pytest.mark.asyncio(loop_scope="module")

__all__ = ["engine"]  # the shared painter fixture

MiB = 1024 * 1024


def nothing_held(bot: StyleBot) -> bool:
    """No reserved place, waiting or running job, and no live job left anywhere."""
    queue = bot.studio.scheduler.queue
    return len(queue) == 0 and not queue.running and not bot.studio.jobs


@contextlib.contextmanager
def journal_locked(data_dir: Path) -> Iterator[None]:
    """Another process's write transaction on the journal: the bot's writes wait out their busy
    timeout, then fail with `sqlite3.OperationalError: database is locked`."""
    db = sqlite3.connect(data_dir / "stylebot.db", isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


async def test_a_full_disk_when_the_painting_is_stored_tells_the_owner(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = files.write_file

    def disk_full(path: Path, data: bytes) -> None:
        if path.name == journal.RESULT:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    async with FakeDiscord() as discord, running_bot(discord, engine, max_iterations=1) as bot:
        monkeypatch.setattr(files, "write_file", disk_full)
        [(user, msg)] = await post_jobs(discord, 1)
        status = await discord.wait_for(lambda: status_of(discord, msg), WAIT)
        await discord.wait_for(lambda: "couldn't store the picture" in status.content, WAIT)
        await discord.wait_for(lambda: nothing_held(bot), WAIT)  # the painter lets go after
        assert not bot.studio.journal.unfinished()
        assert not paintings_for(discord, user)
        monkeypatch.undo()  # the disk has room again: the next job is painted and delivered
        [(again, _)] = await post_jobs(discord, 1)
        await discord.wait_for(lambda: paintings_for(discord, again), WAIT)


async def test_a_locked_journal_at_intake_refuses_and_gives_the_place_back(
    engine: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with (
        FakeDiscord() as discord,
        running_bot(discord, engine, data_dir=str(data), max_iterations=1) as bot,
    ):
        with journal_locked(data):
            [(user, msg)] = await post_jobs(discord, 1)
            await bot_reply(discord, msg, "couldn't store your job")
        await discord.wait_for(lambda: nothing_held(bot), WAIT)
        assert not bot.studio.journal.unfinished()
        again = await discord.post(user, "!stylize udnie", files=[("cat.png", PHOTO)])
        await discord.wait_for(lambda: paintings_for(discord, user), WAIT)
        assert paintings_for(discord, user)[0].reference is again


async def test_a_locked_journal_when_painting_starts_fails_the_job_and_frees_the_painter(
    engine: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with (
        FakeDiscord() as discord,
        running_bot(discord, engine, data_dir=str(data), max_iterations=1) as bot,
    ):
        with contextlib.ExitStack() as lock:
            async with painter_held(engine):
                [(user, msg)] = await post_jobs(discord, 1)
                status = await discord.wait_for(lambda: status_of(discord, msg), WAIT)
                lock.enter_context(journal_locked(data))
            # the painter is free: the job's `painting` write waits out the lock and fails
            await discord.wait_for(lambda: "went wrong" in status.content, WAIT)
        await discord.wait_for(lambda: nothing_held(bot), WAIT)
        assert not paintings_for(discord, user)
        [(again, _)] = await post_jobs(discord, 1)
        await discord.wait_for(lambda: paintings_for(discord, again), WAIT)


async def test_a_missing_result_file_fails_the_delivery_and_tells_the_owner(
    engine: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with FakeDiscord() as discord:
        user = discord.add_user("ida")
        ask = await discord.post(user, "!stylize udnie", files=[("cat.png", PHOTO)])
        job_id = seed_painted(data, discord, user, ask)
        (data / "jobs" / job_id / journal.RESULT).unlink()
        async with running_bot(discord, engine, data_dir=str(data)) as bot:
            await bot_reply(discord, ask, "its picture is missing")
            ended = bot.studio.journal.get(job_id)
            assert ended is not None and ended.state == journal.FAILED
            assert nothing_held(bot) and not paintings_for(discord, user)


async def test_a_timelapse_on_a_boosted_server_never_costs_the_picture(
    engine: Any, tmp_path: Path
) -> None:
    """Half of a 100 MiB upload limit was the old timelapse budget: an animation of 25 MiB left
    the picture no room in its 25 MiB message, and the result was lost."""
    for limit in (10 * MiB, 50 * MiB, 100 * MiB):
        assert MESSAGE_TOTAL - timelapse_budget(limit) >= MESSAGE_TOTAL // 2
    data = tmp_path / "data"
    async with FakeDiscord() as discord:
        boosted = 100 * MiB
        discord.set_upload_limit(discord.guild, boosted)
        user = discord.add_user("kim")
        ask = await discord.post(user, "!stylize udnie", files=[("cat.png", PHOTO)])
        animation = bytes(boosted // 4)  # within the old budget (50 MiB), over the new one
        seed_painted(data, discord, user, ask, upload_limit=boosted, copies={TIMELAPSE: animation})
        async with running_bot(discord, engine, data_dir=str(data)) as bot:
            [result] = await discord.wait_for(lambda: paintings_for(discord, user), WAIT)
            assert "the timelapse was too large" in result.content
            assert [f.filename for f in result.files] == ["stylized.png"]
            assert nothing_held(bot)
