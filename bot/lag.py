"""A tiny event-loop lag monitor: sleeps a fixed tick and records how late it wakes up."""

from __future__ import annotations

import asyncio
import time


class LagMonitor:
    """Measures the event loop's responsiveness; `max_lag` is the worst overshoot in seconds."""

    def __init__(self, tick: float = 0.1) -> None:
        self.tick = tick
        self.max_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(), name="stylebot-lag-monitor")

    def reset(self) -> None:
        self.max_lag = 0.0

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.tick)
            lag = time.perf_counter() - before - self.tick
            self.max_lag = max(self.max_lag, lag)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
