"""One worker, many jobs: a pool worker paints waiting jobs that share a schedule as one batch.

On a CPU for correctness (the pool batches on a GPU; `batch_on_cpu` turns it on here): each
job keeps its own picture, progress, cancel and timeout, and one job's bad input fails it
alone. One worker with four lanes serves the module; jobs queue in its lanes while it paints
a long job, so they batch whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import pytest_asyncio

from nst_engine import images
from nst_engine.api import Cancelled, InputError, JobTimeout, Result, StyleRequest, StyleSource
from nst_engine.pool import PoolJob, ProcessPoolEngine
from nst_engine.transfer import stylize
from tests.engines import BOUND, LONG, first_event, outcome

CONTENT = (Path(__file__).parents[1] / "samples" / "chelsea.png").read_bytes()
LANES = 4
STOP_GRACE = 3.0  # a stopped job must leave its batch well before its worker is killed for it

on_module_loop = pytest.mark.asyncio(loop_scope="module")


def job(iterations: int, style: str = "starry-night", seed: int = 0, **knobs) -> StyleRequest:
    knobs.setdefault("content", CONTENT)
    return StyleRequest(
        styles=(StyleSource(name=style),), size=64, quality="draft", iterations=iterations,
        seed=seed, **knobs,
    )  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[ProcessPoolEngine]:
    engine = ProcessPoolEngine(
        workers=1, devices=["cpu"], batch_max=LANES, batch_on_cpu=True, job_timeout=BOUND,
        preview_interval=0.2, stop_grace=STOP_GRACE,
    )  # fmt: skip
    await asyncio.wait_for(engine.wait_ready(), BOUND)
    yield engine
    await engine.close()


async def steps_seen(job: PoolJob, log: list[tuple[str, int]], tag: str) -> None:
    """Note (tag, step) in `log` for each progress event, then (tag, -1) when it ends."""
    with contextlib.suppress(Exception):
        async with contextlib.aclosing(job.progress()) as events:
            async for event in events:
                log.append((tag, event.step))
    log.append((tag, -1))


async def until(condition, what: str) -> None:
    """Wait (bounded) for a condition that the loop's own callbacks make true."""
    async with asyncio.timeout(BOUND):
        while not condition():
            await asyncio.sleep(0.02)
    assert condition(), what


def pixels(result: Result) -> np.ndarray:
    return np.asarray(images.decode(result.image), dtype=np.float32)


@contextlib.asynccontextmanager
async def held(pool: ProcessPoolEngine) -> AsyncIterator[None]:
    """Keep the worker on a long job while jobs queue up in its lanes, then stop that job:
    the worker then finds them all waiting (so they batch whatever the machine's load)."""
    blocker = await pool.submit(job(LONG, seed=99))
    await asyncio.wait_for(first_event(blocker), BOUND)
    yield
    await blocker.cancel()
    assert isinstance(await outcome(blocker), Cancelled)


@on_module_loop
async def test_a_batch_paints_each_job_as_it_would_alone(pool: ProcessPoolEngine) -> None:
    assert pool.describe() == "local process pool, 1 worker(s) on cpu, batches of up to 4 jobs each"
    assert pool.stats().painters == LANES  # the bot keeps this many jobs with the engine
    requests = [job(8, "starry-night", 1), job(8, "great-wave", 2), job(8, "the-scream", 3)]
    log: list[tuple[str, int]] = []
    async with held(pool):
        jobs = [await pool.submit(r) for r in requests]
        watchers = [asyncio.create_task(steps_seen(j, log, str(i))) for i, j in enumerate(jobs)]
    results = [await outcome(j) for j in jobs]
    await asyncio.gather(*watchers)
    assert len({j.worker_pid for j in jobs}) == 1
    # painted together: every job had made progress before the first of them ended
    first_end = log.index(next(entry for entry in log if entry[1] == -1))
    assert {tag for tag, step in log[:first_end] if step > 0} == {"0", "1", "2"}
    for request, result in zip(requests, results, strict=True):
        assert isinstance(result, Result), result
        alone = stylize(request, device="cpu")
        assert (result.width, result.height) == (alone.width, alone.height)
        assert result.losses["total"] == pytest.approx(alone.losses["total"], rel=0.05)
        assert np.abs(pixels(result) - pixels(alone)).mean() < 4.0


@on_module_loop
async def test_cancelling_one_job_leaves_its_batch_mates_painting(pool: ProcessPoolEngine) -> None:
    (pid,) = pool.pids()
    log: list[tuple[str, int]] = []
    async with held(pool):
        jobs = [await pool.submit(job(LONG, seed=n)) for n in range(3)]
        watchers = [asyncio.create_task(steps_seen(j, log, str(i))) for i, j in enumerate(jobs)]
    await until(lambda: {tag for tag, step in log if step > 0} == {"0", "1", "2"}, "all paint")
    await jobs[1].cancel()
    assert isinstance(await outcome(jobs[1]), Cancelled)
    # its lane is free as soon as it leaves the batch, not when the batch ends (nor is the
    # worker killed STOP_GRACE seconds later for not stopping it)
    await until(lambda: pool.stats().busy == 2, "the cancelled job's lane is free")
    seen = len(log)
    await until(lambda: {tag for tag, _ in log[seen:]} >= {"0", "2"}, "the others paint on")
    await jobs[0].cancel()
    await jobs[2].cancel()
    await asyncio.gather(*watchers)
    after = await pool.submit(job(2))
    assert isinstance(await outcome(after), Result)
    assert pool.pids() == [pid], "no worker was killed: every stop was a clean one"


@on_module_loop
async def test_a_job_stopped_while_it_waits_for_a_batch_ends_at_once(
    pool: ProcessPoolEngine,
) -> None:
    (pid,) = pool.pids()
    running = await pool.submit(job(LONG, seed=1))
    await asyncio.wait_for(first_event(running), BOUND)
    waiting = await pool.submit(job(LONG, seed=2))  # a free lane, behind the painting batch
    timed = await pool.submit(job(LONG, seed=3), timeout=1.0)
    await waiting.cancel()
    assert isinstance(await outcome(waiting), Cancelled)
    assert isinstance(await outcome(timed), JobTimeout)
    await until(lambda: pool.stats().busy == 1, "their lanes are free while the batch paints")
    await running.cancel()
    assert isinstance(await outcome(running), Cancelled)
    assert pool.pids() == [pid], "no worker was killed for a job it had not started"


@on_module_loop
async def test_a_timed_out_job_leaves_its_batch_mates_painting(pool: ProcessPoolEngine) -> None:
    (pid,) = pool.pids()
    log: list[tuple[str, int]] = []
    async with held(pool):
        slow = await pool.submit(job(LONG, seed=1), timeout=2.0 + STOP_GRACE)
        mate = await pool.submit(job(LONG, seed=2))
        watcher = asyncio.create_task(steps_seen(mate, log, "mate"))
    assert isinstance(await outcome(slow), JobTimeout)
    seen = len(log)
    await until(lambda: len(log) > seen + 2, "its batch-mate paints on")
    await mate.cancel()
    await watcher
    assert pool.pids() == [pid]


@on_module_loop
async def test_bad_input_fails_only_its_own_job(pool: ProcessPoolEngine) -> None:
    (pid,) = pool.pids()
    good = job(6, seed=1)
    typo = job(6, "stary-night")
    garbage = job(6, content=b"not an image at all")
    jobs = [await pool.submit(r) for r in (good, typo, job(6, seed=2), garbage)]
    outcomes = [await outcome(j) for j in jobs]
    assert isinstance(outcomes[0], Result) and isinstance(outcomes[2], Result)
    assert isinstance(outcomes[1], InputError) and "starry-night" in str(outcomes[1])
    assert isinstance(outcomes[3], InputError)
    assert pool.pids() == [pid]


@on_module_loop
async def test_workers_paint_at_a_lower_cpu_priority(pool: ProcessPoolEngine) -> None:
    (pid,) = pool.pids()
    assert psutil.Process(pid).nice() == min(19, psutil.Process().nice() + 10)


async def test_cpu_workers_paint_one_job_at_a_time_unless_asked() -> None:
    async with ProcessPoolEngine(workers=1, devices=["cpu"], batch_max=4, nice=0) as engine:
        assert engine.describe().endswith("one job at a time each")
        assert engine.stats().painters == 1
        (pid,) = engine.pids()
        assert psutil.Process(pid).nice() == psutil.Process().nice()


async def test_the_bot_settings_reach_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.engine import describe_engine, start_engine
    from bot.settings import Settings

    assert (Settings(_env_file=None).batch_max, Settings(_env_file=None).painter_nice) == (1, 10)
    monkeypatch.setenv("STYLEBOT_DEVICES", "cpu")
    monkeypatch.setenv("STYLEBOT_BATCH_MAX", "4")
    monkeypatch.setenv("STYLEBOT_PAINTER_NICE", "3")
    engine = await start_engine(Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        # `about` says how jobs paint; on a CPU, one at a time whatever the cap
        assert describe_engine(engine).endswith("on cpu, one job at a time each")
        (pid,) = engine.pids()  # type: ignore[attr-defined]
        assert psutil.Process(pid).nice() == min(19, psutil.Process().nice() + 3)
    finally:
        await engine.close()
