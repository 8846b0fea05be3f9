"""A tiny event-loop lag monitor: sleeps a fixed tick and records how late it wakes up.

Every lateness goes into a histogram of 1 ms bins (bounded memory however long the bot runs),
so the bot can report the lag's distribution, not only its worst moment. With `slow_callbacks`
the loop also runs in asyncio's debug mode and logs (logger `asyncio`, WARNING) every callback
or coroutine step that holds it longer than `SLOW_CALLBACK`: what to look at when the lag grows.
"""

from __future__ import annotations

import asyncio
import gc
import time

SLOW_CALLBACK = 0.02  # s: a step this long is logged when slow callbacks are watched
BINS = 1000  # 1 ms bins; lateness of a second or more shares the last one


def settle() -> None:
    """Once the bot has started: move every object alive to the permanent generation, so a full
    collection later walks only what the bot made since (over the ~60k objects of discord.py
    and Pillow, one takes tens of ms, all on the loop). No collection first: that would be
    such a pause itself; what little garbage the start left stays."""
    gc.freeze()


class LagMonitor:
    """Measures the event loop's responsiveness; `max_lag` is the worst overshoot in seconds."""

    def __init__(self, tick: float = 0.1, *, slow_callbacks: bool = False) -> None:
        self.tick = tick
        self.slow_callbacks = slow_callbacks
        self.max_lag = 0.0
        self.max_at = 0.0  # time.time() when the largest lag ended
        self._bins = [0] * BINS
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.slow_callbacks:
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = SLOW_CALLBACK
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(), name="stylebot-lag-monitor")

    def reset(self) -> None:
        self.max_lag = self.max_at = 0.0
        self._bins = [0] * BINS

    def record(self, lag: float) -> None:
        """Count one tick that woke `lag` seconds late."""
        if lag > self.max_lag:
            self.max_lag, self.max_at = lag, time.time()
        self._bins[min(BINS - 1, max(0, int(lag * 1000)))] += 1

    @property
    def ticks(self) -> int:
        return sum(self._bins)

    def percentile(self, q: float) -> float:
        """The lag (s, to the ms bin's upper edge) that `q` % of the ticks stayed within."""
        total = self.ticks
        if total == 0:
            return 0.0
        wanted = max(1, round(q / 100 * total))
        seen = 0
        for index, count in enumerate(self._bins):
            seen += count
            if seen >= wanted:
                return self.max_lag if index == BINS - 1 else min(self.max_lag, (index + 1) / 1000)
        return self.max_lag

    def summary(self) -> str:
        """The distribution in one line, for the log."""
        at = time.strftime("%H:%M:%S", time.localtime(self.max_at))
        return (
            f"event-loop lag p50 {self.percentile(50) * 1000:.0f} ms, "
            f"p99 {self.percentile(99) * 1000:.0f} ms, p99.9 {self.percentile(99.9) * 1000:.0f} "
            f"ms over {self.ticks} ticks of {self.tick * 1000:.0f} ms; the largest ended at {at}"
        )

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.tick)
            self.record(time.perf_counter() - before - self.tick)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
