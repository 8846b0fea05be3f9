"""`stylebot --check`, the container healthcheck: healthy only while a real bot is logged in to
(fake) Discord and its event loop beats; unhealthy before it starts, after it stops, and when its
heartbeat goes stale.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from bot import health
from tests.fakecord import FakeDiscord
from tests.test_bot_durable import ROOT, WAIT, bot_process


async def stylebot_check(data_dir: Path) -> tuple[int, str]:
    """Run `stylebot --check` as the healthcheck does: its exit status and what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEBOT_")}
    env.update(PYTHONPATH=str(ROOT), STYLEBOT_DATA_DIR=str(data_dir))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "--check",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def test_a_stale_or_missing_heartbeat_fails_the_check(tmp_path: Path) -> None:
    path = health.heartbeat_path(tmp_path)
    assert "no heartbeat" in (health.check(path) or "")
    path.touch()
    assert health.check(path) is None
    old = time.time() - health.STALE_AFTER - 5
    os.utime(path, (old, old))
    assert "s old" in (health.check(path) or "")


@pytest.mark.asyncio(loop_scope="module")
async def test_check_is_healthy_only_while_the_real_bot_is_logged_in(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    status, out = await stylebot_check(data_dir)
    assert status == 1 and "no heartbeat" in out, out
    async with (
        FakeDiscord() as discord,
        bot_process(discord, data_dir, tmp_path / "bot.log") as proc,
    ):
        path = health.heartbeat_path(data_dir)
        await discord.wait_for(lambda: health.check(path) is None, WAIT)
        status, out = await stylebot_check(data_dir)
        assert status == 0 and "healthy" in out, out
        os.kill(proc.pid, signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    status, out = await stylebot_check(data_dir)
    assert status == 1 and "no heartbeat" in out, out
