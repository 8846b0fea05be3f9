"""The bot's heartbeat: a file that its event loop touches while the bot is logged in to Discord,
and the check that reads it (`stylebot --check`, the container's healthcheck).

A stale file means the bot is down, logged out, or its event loop is stuck; a missing one, that
it has not logged in yet or has stopped (it removes the file on the way out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "heartbeat"
INTERVAL = 10.0  # seconds between touches
STALE_AFTER = 60.0  # a heartbeat older than this fails the check


def heartbeat_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


class Heartbeat:
    """Touches `path` every `interval` seconds while `is_up()` says the bot is logged in."""

    def __init__(self, path: Path, is_up: Callable[[], bool], interval: float = INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._is_up = is_up
        self._task: asyncio.Task[None] | None = None
        self._failed = False

    def start(self) -> None:
        """Forget a previous run's heartbeat and start beating."""
        self.path.unlink(missing_ok=True)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._beat(), name="stylebot-heartbeat")

    async def _beat(self) -> None:
        while True:
            if self._is_up():
                self._touch()
            await asyncio.sleep(self.interval)

    def _touch(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            self._failed = False
        except OSError as exc:
            if not self._failed:  # once per failure streak, not every beat
                log.warning("cannot write the heartbeat %s: %s", self.path, exc)
            self._failed = True

    async def stop(self) -> None:
        """Stop beating and remove the file, so that a check fails at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def check(path: Path, stale_after: float = STALE_AFTER) -> str | None:
    """None when the heartbeat at `path` is fresh, else one line that says what is wrong."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat at {path}: the bot is starting, stopped, or not logged in"
    except OSError as exc:
        return f"cannot read the heartbeat {path}: {exc.strerror}"
    if age > stale_after:
        return f"the heartbeat at {path} is {age:.0f} s old: the bot is stuck or logged out"
    return None
