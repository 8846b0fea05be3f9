"""The token stays the bot's own (issue 18, point 4) and the start is quiet (issue 21, point 5).

The real `stylebot` runs in its own process on fakecord, given its token by the environment or
by a file (as Docker secrets are mounted). Once it is logged in with a painter ready, neither its
own `/proc/<pid>/environ` nor that of any process below it holds the token, and its log holds
neither the token nor discord.py's warnings about voice libraries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from tests.fakecord import FakeDiscord
from tests.test_bot_durable import ROOT, WAIT, bot_env

pytestmark = pytest.mark.asyncio(loop_scope="module")

VOICE_WARNINGS = ("PyNaCl", "davey", "voice will NOT be supported")


@contextlib.asynccontextmanager
async def logged_in_bot(
    discord: FakeDiscord, env: dict[str, str], log: Path
) -> AsyncIterator[psutil.Process]:
    """`stylebot` (tests.botproc) in a process group of its own, once it has identified."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.botproc",
            discord.url,
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    identified = asyncio.create_task(
        discord.wait_for(lambda: "IDENTIFY" in discord.gateway_ops, WAIT)
    )
    exited = asyncio.create_task(proc.wait())
    try:
        await asyncio.wait({identified, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not identified.done():
            raise AssertionError(f"stylebot exited ({proc.returncode}): {log.read_text()[-800:]}")
        identified.result()
        yield psutil.Process(proc.pid)
    finally:
        identified.cancel()
        exited.cancel()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        await proc.wait()


def environ_of(process: psutil.Process) -> bytes:
    return Path(f"/proc/{process.pid}/environ").read_bytes()


def assert_token_nowhere(discord: FakeDiscord, bot: psutil.Process, log: Path) -> None:
    token = discord.token.encode()
    logins = [r for r in discord.requests if r.path.endswith("/users/@me")]
    assert logins and all(r.status == 200 for r in logins), "the bot logged in with its token"
    below = bot.children(recursive=True)
    assert below, "the painters are children of the bot"
    for process in (bot, *below):
        assert token not in environ_of(process), f"{process.cmdline()[:3]} has the token"
    text = log.read_bytes()
    assert token not in text
    for warning in VOICE_WARNINGS:
        assert warning.encode() not in text, text.decode(errors="replace")


async def test_a_token_from_the_environment_leaves_no_trace_in_proc(tmp_path: Path) -> None:
    log = tmp_path / "bot.log"
    async with FakeDiscord() as discord:
        env = bot_env(discord, tmp_path / "data")
        assert env["DISCORD_TOKEN"] == discord.token
        async with logged_in_bot(discord, env, log) as bot:
            assert_token_nowhere(discord, bot, log)


async def test_a_token_from_a_file_as_docker_secrets_are_mounted(tmp_path: Path) -> None:
    log = tmp_path / "bot.log"
    async with FakeDiscord() as discord:
        secret = tmp_path / "discord_token"
        secret.write_text(discord.token + "\n")
        secret.chmod(0o600)
        env = bot_env(discord, tmp_path / "data")
        del env["DISCORD_TOKEN"]
        env["DISCORD_TOKEN_FILE"] = str(secret)
        async with logged_in_bot(discord, env, log) as bot:
            assert_token_nowhere(discord, bot, log)
