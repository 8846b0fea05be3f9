"""Jobs that survive: the real bot in its own process on fakecord (Discord's budget), killed with
SIGKILL or stopped with SIGTERM and started again on the same data dir; and deliveries that
Discord half-accepts, refuses for a while, or cuts off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import journal
from bot.journal import Job, Journal
from bot.options import Options
from nst_engine.api import StyleRequest, StyleSource
from tests.fakecord import FakeDiscord, Message, User
from tests.fakecord.rest import NONCE_WINDOW
from tests.test_bot_e2e import LONG, PHOTO, bot_reply, engine, paintings_for, running_bot

pytestmark = pytest.mark.asyncio(loop_scope="module")

__all__ = ["engine"]  # the shared painter fixture

ROOT = Path(__file__).resolve().parent.parent
WAIT = 120.0
JOB_ID = re.compile(r"Job `([0-9a-f]+)`")


def bot_env(discord: FakeDiscord, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("STYLEBOT_") and key != "DISCORD_TOKEN"
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "DISCORD_TOKEN": discord.token,
            "STYLEBOT_DATA_DIR": str(data_dir),
            "STYLEBOT_DOWNLOAD_HOSTS": discord.url,  # fakecord's CDN: scheme, host and port
            "STYLEBOT_DEFAULT_SIZE": "64",
            "STYLEBOT_MAX_SIZE": "128",
            "STYLEBOT_DEFAULT_QUALITY": "draft",
            "STYLEBOT_MAX_ITERATIONS": "5",
            "STYLEBOT_STATUS_INTERVAL": "1",
            "STYLEBOT_WORKERS": "1",
            "STYLEBOT_DEVICES": "cpu",
            "STYLEBOT_LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def bot_process(
    discord: FakeDiscord, data_dir: Path, log: Path, **extra: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`stylebot` in a process group of its own; killed (group and all) if still running."""
    identified = discord.gateway_ops.count("IDENTIFY")
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.botproc",
            discord.url,
            env=bot_env(discord, data_dir, **extra),
            cwd=ROOT,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        await discord.wait_for(lambda: discord.gateway_ops.count("IDENTIFY") > identified, WAIT)
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def status_of(discord: FakeDiscord, message: Message) -> Message | None:
    for m in discord.replies_to(message):
        if m.author.id == discord.bot_user.id and JOB_ID.search(m.revisions[0].content):
            return m
    return None


async def post_jobs(discord: FakeDiscord, count: int) -> list[tuple[User, Message]]:
    asks = []
    for i in range(count):
        user = discord.add_user(f"user{i}")
        asks.append((user, await discord.post(user, "!stylize udnie", files=[("cat.png", PHOTO)])))
    return asks


async def all_delivered_once(discord: FakeDiscord, asks: list[tuple[User, Message]]) -> None:
    await discord.wait_for(lambda: all(paintings_for(discord, u) for u, _ in asks), WAIT)
    await asyncio.sleep(2)  # room for a duplicate to show up, if there were one
    for user, msg in asks:
        assert len(paintings_for(discord, user)) == 1, f"{user.name} got a duplicate"
        assert paintings_for(discord, user)[0].reference is msg


async def statuses_end_done(discord: FakeDiscord, asks: list[tuple[User, Message]]) -> None:
    def done() -> bool:
        statuses = [status_of(discord, msg) for _, msg in asks]
        return all(s is not None and "is done" in s.content for s in statuses)

    await discord.wait_for(done, WAIT)


async def test_kill_9_mid_paint_then_restart_delivers_every_job_once(tmp_path: Path) -> None:
    log = tmp_path / "bot.log"
    async with FakeDiscord() as discord:
        # The first bot paints for ever, so the kill surely lands mid-paint on any machine.
        endless = {"STYLEBOT_MAX_ITERATIONS": "100000"}
        async with bot_process(discord, tmp_path / "data", log, **endless) as proc:
            asks = await post_jobs(discord, 3)
            # one paints, two wait, each with its status message
            statuses = await discord.wait_for(
                lambda: (
                    all(status_of(discord, m) for _, m in asks)
                    and [status_of(discord, m) for _, m in asks]
                ),
                WAIT,
            )
            await discord.wait_for(lambda: any("painting" in s.content for s in statuses), WAIT)
            assert not any(paintings_for(discord, u) for u, _ in asks)
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        async with bot_process(discord, tmp_path / "data", log):
            await all_delivered_once(discord, asks)
            await statuses_end_done(discord, asks)
            resumed = [status_of(discord, m) for _, m in asks]
            assert all(
                any("Resumed after a restart" in r.content for r in s.revisions)  # type: ignore[union-attr]
                for s in resumed
            )


async def test_sigterm_keeps_waiting_jobs_for_the_next_start(tmp_path: Path) -> None:
    log = tmp_path / "bot.log"
    async with FakeDiscord() as discord:
        endless = {"STYLEBOT_MAX_ITERATIONS": "100000"}
        async with bot_process(discord, tmp_path / "data", log, **endless) as proc:
            asks = await post_jobs(discord, 3)
            await discord.wait_for(lambda: all(status_of(discord, m) for _, m in asks), WAIT)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        paused = [status_of(discord, m) for _, m in asks]
        assert all("Paused" in s.content for s in paused)  # type: ignore[union-attr]
        async with bot_process(discord, tmp_path / "data", log):
            await all_delivered_once(discord, asks)
            await statuses_end_done(discord, asks)


async def test_sigterm_while_a_job_is_being_answered_still_leaves_it_paused(
    tmp_path: Path,
) -> None:
    """A shutdown that lands after a job is queued but before its status is posted: the status,
    once it exists, says the job is paused, and the shutdown waits for it."""
    log = tmp_path / "bot.log"
    async with FakeDiscord() as discord:
        endless = {"STYLEBOT_MAX_ITERATIONS": "100000"}
        async with bot_process(discord, tmp_path / "data", log, **endless) as proc:
            first = await post_jobs(discord, 1)
            await discord.wait_for(lambda: status_of(discord, first[0][1]), WAIT)
            # the next status message is answered 429: discord.py waits 3 s and sends again
            discord.fail_next("POST /channels/{channel_id}/messages", 429, retry_after=3.0)
            user = discord.add_user("late")
            late = await discord.post(user, "!stylize udnie", files=[("cat.png", PHOTO)])
            await discord.wait_for(lambda: not discord.failures, WAIT)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        status = status_of(discord, late)
        assert status is not None and "Paused" in status.content, status and status.content
        async with bot_process(discord, tmp_path / "data", log):
            await all_delivered_once(discord, [*first, (user, late)])


# ---------------------------------------------------------------- deliveries Discord fumbles


@contextlib.asynccontextmanager
async def painter_held(engine: Any) -> AsyncIterator[None]:
    """Keep the only painter busy, so jobs posted meanwhile wait until the block ends."""
    blocker = await engine.submit(
        StyleRequest(content=PHOTO, styles=(StyleSource(name="udnie"),), size=64, iterations=LONG)
    )
    try:
        yield
    finally:
        await blocker.cancel()


async def test_a_result_created_but_answered_500_is_posted_once(engine: Any) -> None:
    async with FakeDiscord() as discord, running_bot(discord, engine, max_iterations=5):
        async with painter_held(engine):
            [(user, msg)] = await post_jobs(discord, 1)
            await discord.wait_for(lambda: status_of(discord, msg), WAIT)
            # the next message the bot creates is the result: Discord makes it, then says 500
            discord.fail_next("POST /channels/{channel_id}/messages", status=500, after_commit=True)
        await all_delivered_once(discord, [(user, msg)])
        assert any(r.status == 500 for r in discord.requests)


async def test_a_connection_reset_during_delivery_is_retried_once(engine: Any) -> None:
    async with FakeDiscord() as discord, running_bot(discord, engine, max_iterations=5):
        async with painter_held(engine):
            [(user, msg)] = await post_jobs(discord, 1)
            await discord.wait_for(lambda: status_of(discord, msg), WAIT)
            discord.fail_next("POST /channels/{channel_id}/messages", reset=True, after_commit=True)
        await all_delivered_once(discord, [(user, msg)])


async def test_a_failing_upload_tells_the_owner_and_never_idles_the_painter(engine: Any) -> None:
    async with (
        FakeDiscord() as discord,
        running_bot(discord, engine, max_iterations=5, upload_attempts=3) as bot,
    ):
        async with painter_held(engine):
            asks = await post_jobs(discord, 2)
            await discord.wait_for(lambda: all(status_of(discord, m) for _, m in asks), WAIT)
            first, second = (status_of(discord, m) for _, m in asks)
            assert first is not None and second is not None
            discord.fail_next("POST /channels/{channel_id}/messages", status=503, count=1000)
        await discord.wait_for(lambda: "kept failing" in first.content, WAIT)
        assert "upload" in first.content
        # while the first job's upload was being retried, the second job was painting
        told = next(r.at for r in first.revisions if "kept failing" in r.content)
        painting = [
            r.at for r in second.revisions if "starting" in r.content or "painting" in r.content
        ]
        assert painting and min(painting) < told
        # the second job's upload fails the same way; neither job is lost or stuck
        await discord.wait_for(lambda: "kept failing" in second.content, WAIT)
        assert not any(paintings_for(discord, user) for user, _ in asks)
        assert not bot.studio.jobs and not bot.studio.journal.unfinished()


# ---------------------------------------------------------------- exactly once across a crash


def seed_painted(
    data_dir: Path,
    discord: FakeDiscord,
    user: User,
    ask: Message,
    *,
    job_id: str | None = None,
    upload_limit: int = 10 * 1024 * 1024,
    copies: dict[str, bytes] | None = None,
) -> str:
    """Journal a job as a bot that crashed right after saving its painting would have left it:
    painted, its result beside the database, not yet delivered. Returns its id."""
    job = Job(
        id=job_id or secrets.token_hex(4),
        owner_id=user.id,
        guild_id=discord.guild.id,
        channel_id=discord.channel.id,
        options=Options(style="udnie", size=64, quality="draft"),
        upload_limit=upload_limit,
        source_id=ask.id,
        reply_to_id=ask.id,
        state=journal.WAITING,
    )
    store = Journal(data_dir)
    try:
        store.add(job, PHOTO)
        meta = {"width": 64, "height": 48, "seconds": 1.0, "device": "cpu"}
        store.save_result(job, PHOTO, {"meta.json": json.dumps(meta).encode(), **(copies or {})})
    finally:
        store.close()
    return job.id


def journalled(data_dir: Path, job_id: str) -> Job | None:
    store = Journal(data_dir)
    try:
        return store.get(job_id)
    finally:
        store.close()


async def test_a_result_created_but_unheard_is_found_after_a_flood_and_the_nonce_window(
    tmp_path: Path,
) -> None:
    """The bot dies between Discord creating its result and hearing of it; 150 messages come
    before the result and 150 after; the restart comes after Discord forgot the nonce. The
    look-back must find the result (newest first, as far back as the job's anchor) and post
    nothing again."""
    log, data = tmp_path / "bot.log", tmp_path / "data"
    async with FakeDiscord() as discord:
        user, chatter = discord.add_user("ann"), discord.add_user("chatter")
        ask = await discord.post(user, "!stylize udnie", files=[("cat.png", PHOTO)])
        job_id = seed_painted(data, discord, user, ask)
        for i in range(150):
            await discord.post(chatter, f"before {i}")
        # Discord creates the result, then answers 500, every time: the bot never hears of it
        discord.fail_next(
            "POST /channels/{channel_id}/messages", status=500, after_commit=True, count=10_000
        )
        async with bot_process(discord, data, log) as proc:
            [result] = await discord.wait_for(lambda: paintings_for(discord, user), WAIT)
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        discord.failures.clear()
        for i in range(150):
            await discord.post(chatter, f"after {i}")
        forget_nonces(discord)
        assert journalled(data, job_id).state == journal.PAINTED  # type: ignore[union-attr]
        async with bot_process(discord, data, log):
            await discord.wait_for(lambda: journal_ended(data, job_id), WAIT)
        assert paintings_for(discord, user) == [result]
        ended = journalled(data, job_id)
        assert ended is not None and ended.result_id == result.id


def forget_nonces(discord: FakeDiscord) -> None:
    """Let Discord's nonce window pass for every message created so far."""
    for key, (message, at) in list(discord.nonces.items()):
        discord.nonces[key] = (message, at - NONCE_WINDOW - 1)


def journal_ended(data_dir: Path, job_id: str) -> bool:
    job = journalled(data_dir, job_id)
    return job is not None and job.state in journal.ENDED


async def test_an_echo_of_the_result_text_without_the_picture_is_no_delivery(
    engine: Any, tmp_path: Path
) -> None:
    """A member gets the bot to repeat a job's marker, (job `ID`), in a reply of its own; after
    a restart that echo must not pass for the result: the painting is posted."""
    data = tmp_path / "data"
    async with FakeDiscord() as discord:
        user = discord.add_user("bea")
        ask = await discord.post(user, "!stylize udnie", files=[("cat.png", PHOTO)])
        job_id = secrets.token_hex(4)
        async with running_bot(discord, engine, data_dir=str(tmp_path / "elsewhere")):
            command = await discord.post(user, f'!cancel "(job `{job_id}`)"')
            await bot_reply(discord, command, f"(job `{job_id}`)")
        seed_painted(data, discord, user, ask, job_id=job_id)
        async with running_bot(discord, engine, data_dir=str(data)) as bot:
            [result] = await discord.wait_for(lambda: paintings_for(discord, user), WAIT)
            await discord.wait_for(lambda: journal_ended(data, job_id), WAIT)
            ended = bot.studio.journal.get(job_id)
            assert ended is not None and ended.state == journal.DELIVERED
            assert ended.result_id == result.id


async def test_a_saved_result_id_is_used_before_any_look_back(engine: Any, tmp_path: Path) -> None:
    """A journal that holds the result's id but not yet the job's end (older versions wrote
    them apart): the restart fetches that message and walks no history."""
    data = tmp_path / "data"
    async with FakeDiscord() as discord:
        user, chatter = discord.add_user("cy"), discord.add_user("chatter")
        ask = await discord.post(user, "!stylize udnie", files=[("cat.png", PHOTO)])
        job_id = seed_painted(data, discord, user, ask)
        for i in range(150):
            await discord.post(chatter, f"before {i}")
        async with running_bot(discord, engine, data_dir=str(data)):
            [result] = await discord.wait_for(lambda: paintings_for(discord, user), WAIT)
            await discord.wait_for(lambda: journal_ended(data, job_id), WAIT)
        with contextlib.closing(sqlite3.connect(data / "stylebot.db")) as db, db:
            db.execute("UPDATE jobs SET state = ? WHERE id = ?", (journal.PAINTED, job_id))
        forget_nonces(discord)
        seen = len(discord.requests)
        async with running_bot(discord, engine, data_dir=str(data)):
            await discord.wait_for(lambda: journal_ended(data, job_id), WAIT)
        assert paintings_for(discord, user) == [result]
        reads = {r.route for r in discord.requests[seen:] if r.method == "GET"}
        assert "/channels/{channel_id}/messages/{message_id}" in reads
        assert "/channels/{channel_id}/messages" not in reads
