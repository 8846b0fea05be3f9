"""The event-loop lag monitor: its distribution, and the slow-callback log it can turn on."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bot.lag import SLOW_CALLBACK, LagMonitor


def test_the_lag_distribution_is_kept_in_millisecond_bins() -> None:
    monitor = LagMonitor()
    for lag in [0.001] * 98 + [0.030, 2.5]:
        monitor.record(lag)
    assert monitor.ticks == 100
    assert monitor.percentile(50) == pytest.approx(0.002)  # the 1 ms bin's upper edge
    assert monitor.percentile(99) == pytest.approx(0.031)
    assert monitor.percentile(100) == monitor.max_lag == 2.5  # beyond the bins: the worst seen
    assert "p99 31 ms" in monitor.summary()
    monitor.reset()
    assert monitor.ticks == 0 and monitor.max_lag == 0.0


async def test_slow_callbacks_are_logged_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    monitor = LagMonitor(slow_callbacks=True)
    monitor.start()
    loop = asyncio.get_running_loop()
    try:
        assert loop.get_debug() and loop.slow_callback_duration == SLOW_CALLBACK

        async def blocks() -> None:
            time.sleep(SLOW_CALLBACK * 3)  # holds the loop, as a blocking call would

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            await asyncio.create_task(blocks(), name="a-blocking-step")
        assert any(
            "a-blocking-step" in r.getMessage() and "took" in r.getMessage()
            for r in caplog.records
        )
    finally:
        await monitor.stop()
        loop.set_debug(False)
