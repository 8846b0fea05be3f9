"""Helpers shared by the engine tests: tiny requests, bounded waits, leftover processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import psutil

from nst_engine.api import Cancelled, EngineError, InputError, Progress, StyleRequest, StyleSource
from nst_engine.pool import PoolJob

CONTENT = (Path(__file__).parents[1] / "samples" / "chelsea.png").read_bytes()
TINY = 2
SHORT = 12
LONG = 5000  # minutes of work: only ever stopped early
BOUND = 60.0  # seconds any single wait may take before the test fails instead of hanging


def request(iterations: int, content: bytes = CONTENT, style: str = "starry-night") -> StyleRequest:
    return StyleRequest(
        content=content,
        styles=(StyleSource(name=style),),
        size=64,
        quality="draft",
        iterations=iterations,
    )


async def first_event(job: PoolJob) -> Progress:
    """The next progress event of a job (it must have one)."""
    async with contextlib.aclosing(job.progress()) as events:
        async for event in events:
            return event
    raise AssertionError(f"job {job.id} ended without progress")


async def collect(job: PoolJob) -> list[Progress]:
    return [event async for event in job.progress()]


async def outcome(job: PoolJob) -> object:
    """The job's result, or the exception it ended with, bounded in time."""
    try:
        return await asyncio.wait_for(job.result(), BOUND)
    except (InputError, Cancelled, EngineError) as exc:
        return exc


def child_processes() -> list[psutil.Process]:
    """This process's live descendants, less multiprocessing's resource tracker.

    The tracker is the interpreter's, started by the first `spawn`, and lives until exit.
    """
    found = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                p.cmdline()
            ):
                found.append(p)
    return found


def wait_no_child_processes(bound: float = BOUND) -> list[psutil.Process]:
    """Wait up to `bound` s for every descendant to exit; return those still there."""
    deadline = time.monotonic() + bound
    while (left := child_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left
