"""The event-loop lag monitor: its distribution, and the slow-callback log it can turn on."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time

import pytest

from bot.__main__ import log_in_background
from bot.lag import SLOW_CALLBACK, LagMonitor, settle


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


def test_after_settling_a_full_collection_skips_what_the_start_made() -> None:
    started = [[i] for i in range(1000)]  # stand-ins for the start's long-lived objects
    for _ in range(3):
        gc.collect()  # now they are in the oldest generation, which a full collection walks
    assert any(o is started[0] for o in gc.get_objects(generation=2))
    try:
        settle()
        assert gc.get_freeze_count() >= len(started)
        assert not any(o is started[0] for o in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()


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
            "a-blocking-step" in r.getMessage() and "took" in r.getMessage() for r in caplog.records
        )
    finally:
        await monitor.stop()
        loop.set_debug(False)


def test_a_blocked_log_stream_does_not_hold_the_logging_thread() -> None:
    """The bot logs through a queue: a log line returns while its stream is stuck (a full pipe,
    a busy disk), and it is written once the stream moves again."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"x" * 65536)  # fill the pipe: the next write would block
    os.set_blocking(write_end, True)
    stream = os.fdopen(write_end, "w")
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [logging.StreamHandler(stream)]
    listener = log_in_background()
    try:
        logged = threading.Event()

        def log_a_line() -> None:
            logging.getLogger("bot.test").warning("a line for a stuck stream")
            logged.set()

        threading.Thread(target=log_a_line, daemon=True).start()
        assert logged.wait(30), "logging waited for the stuck stream"
        drained = b""
        while b"a line for a stuck stream" not in drained:  # the stream moves: the line arrives
            drained += os.read(read_end, 65536)
    finally:
        listener.stop()
        root.handlers = saved
        stream.close()
        os.close(read_end)
