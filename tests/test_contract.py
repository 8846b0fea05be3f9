"""The Engine contract, run against every engine: ProcessPoolEngine and RayEngine (local Ray).

Each engine serves all the tests of its parameter (starting painters costs seconds) and has two
painters on the CPU; the tests run in file order and the last one closes it. Jobs are made short
or long with `iterations`: long ones never run to the end, they are cancelled, killed or timed
out. Painters are killed with SIGKILL by pid: both engines run them on this machine.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import psutil
import pytest
import pytest_asyncio
from PIL import Image

from nst_engine.api import Cancelled, EngineError, InputError, JobTimeout
from nst_engine.pool import ProcessPoolEngine
from tests.engines import (
    BOUND,
    LONG,
    SHORT,
    collect,
    first_event,
    outcome,
    request,
    wait_no_child_processes,
)
from tests.loopback_watch import LoopbackWatch

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "contract-test-token"


def make_engine(kind: str) -> Any:
    if kind == "pool":
        return ProcessPoolEngine(workers=2, devices=["cpu"], job_timeout=120, preview_interval=0.2)
    pytest.importorskip("ray")
    from nst_engine.ray_engine import RayEngine

    return RayEngine(
        num_cpus=2, painters_per_node=2, job_timeout=120, preview_interval=0.2, poll_interval=1.0
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["pool", "ray"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The engine; Ray's (a one-machine cluster) has every socket watched for loopback."""
    with LoopbackWatch() as watch:
        os.environ["DISCORD_TOKEN"] = TOKEN  # painters must not inherit it
        try:
            engine = make_engine(request.param)
            await asyncio.wait_for(engine.wait_ready(), 2 * BOUND)
        finally:
            del os.environ["DISCORD_TOKEN"]
        yield engine
        await engine.close()
    if request.param == "ray":
        watch.check([])


async def idle(engine: Any) -> None:
    while engine.stats().busy:
        await asyncio.sleep(0.05)


async def test_two_jobs_run_on_two_painters_with_ordered_progress(engine) -> None:
    assert engine.stats().painters == 2
    jobs = [await engine.submit(request(SHORT)) for _ in range(2)]
    assert engine.stats().busy == 2
    assert jobs[0].id != jobs[1].id
    assert jobs[0].worker_pid != jobs[1].worker_pid

    streams = await asyncio.wait_for(asyncio.gather(*(collect(j) for j in jobs)), BOUND)
    for job, events in zip(jobs, streams, strict=True):
        assert job.done, "the progress stream ends only when the job has"
        result = await job.result()
        steps = [e.step for e in events]
        assert steps == sorted(steps)
        assert steps[-1] == events[-1].total_steps == result.iterations == SHORT
        assert all(e.losses["total"] > 0 for e in events)
        previews = [e.preview for e in events if e.preview is not None]
        assert previews
        assert all(p.startswith(b"\xff\xd8") and len(p) < 100_000 for p in previews)
        image = Image.open(io.BytesIO(result.image))
        assert image.format == "PNG"
        assert image.size == (result.width, result.height)
        assert max(image.size) == 64
        assert result.device == "cpu"
    assert engine.stats().busy == 0
    assert engine.stats().devices == ("cpu",)


async def test_painters_do_not_inherit_the_bot_token(engine) -> None:
    for pid in engine.pids():
        assert "DISCORD_TOKEN" not in psutil.Process(pid).environ()


async def test_cancel_queued_and_running_jobs_keeps_the_painter(engine) -> None:
    pids = sorted(engine.pids())
    running = [await engine.submit(request(LONG)) for _ in range(2)]
    queued = await engine.submit(request(SHORT))
    await asyncio.wait_for(first_event(running[0]), BOUND)
    assert engine.stats().queued == 1

    await queued.cancel()
    assert isinstance(await outcome(queued), Cancelled)
    assert engine.stats().queued == 0
    assert queued.worker_pid is None

    watcher = asyncio.create_task(collect(running[0]))
    await asyncio.sleep(0)
    await running[0].cancel()
    assert isinstance(await outcome(running[0]), Cancelled)
    await asyncio.wait_for(watcher, BOUND)  # the stream ended with the job
    async for _ in running[0].progress():
        pytest.fail("a finished job's progress must end at once")

    # The other painter is still busy, so the next job can only go to the one that stopped.
    follow_up = await engine.submit(request(SHORT))
    result = await outcome(follow_up)
    assert result.iterations == SHORT
    assert follow_up.worker_pid == running[0].worker_pid
    assert not running[1].done

    await running[1].cancel()
    assert isinstance(await outcome(running[1]), Cancelled)
    assert sorted(engine.pids()) == pids, "no painter was killed or replaced"


async def test_bad_input_fails_and_the_same_painter_serves_the_next_job(engine) -> None:
    await asyncio.wait_for(idle(engine), BOUND)
    garbage = await engine.submit(request(SHORT, content=os.urandom(4096)))
    error = await outcome(garbage)
    assert isinstance(error, InputError)
    assert "\n" not in str(error)

    unknown = await engine.submit(request(SHORT, style="starry-nite"))
    error = await outcome(unknown)
    assert isinstance(error, InputError)
    assert "starry-night" in str(error)
    assert unknown.worker_pid == garbage.worker_pid

    good = await engine.submit(request(SHORT))
    assert (await outcome(good)).iterations == SHORT
    assert good.worker_pid == garbage.worker_pid
    assert garbage.worker_pid in engine.pids()


async def test_timeout_stops_the_job_and_the_painter_lives_on(engine) -> None:
    pids = sorted(engine.pids())
    slow = await engine.submit(request(LONG), timeout=1.5)
    error = await outcome(slow)
    assert isinstance(error, JobTimeout)
    assert "longer than 1.5 s" in str(error)
    await asyncio.wait_for(idle(engine), BOUND)  # the painter stops on its own, after the verdict
    quick = await engine.submit(request(SHORT))  # the most recently idle painter takes it
    assert (await outcome(quick)).iterations == SHORT
    assert quick.worker_pid == slow.worker_pid
    assert sorted(engine.pids()) == pids, "the painter stopped by itself; none was killed"


async def test_killed_painter_job_is_retried_and_succeeds(engine) -> None:
    job = await engine.submit(request(3 * SHORT))
    await asyncio.wait_for(first_event(job), BOUND)
    victim = job.worker_pid
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    result = await outcome(job)
    assert result.iterations == 3 * SHORT, "the retry finished the job"
    assert job.worker_pid != victim
    await asyncio.wait_for(engine.wait_ready(), BOUND)
    assert engine.stats().painters == 2
    assert victim not in engine.pids()


async def test_painter_killed_twice_fails_the_job_with_engine_error(engine) -> None:
    doomed = await engine.submit(request(LONG))
    victims: list[int] = []
    for _ in range(2):
        while doomed.worker_pid in victims:
            await asyncio.wait_for(first_event(doomed), BOUND)
        victims.append(doomed.worker_pid)
        await asyncio.wait_for(first_event(doomed), BOUND)  # running on that painter now
        os.kill(doomed.worker_pid, signal.SIGKILL)
    error = await outcome(doomed)
    assert isinstance(error, EngineError)
    assert "crashed twice" in str(error)
    await asyncio.wait_for(engine.wait_ready(), BOUND)
    stats = engine.stats()
    assert (stats.painters, stats.busy, stats.queued) == (2, 0, 0)
    assert not set(victims) & set(engine.pids())


async def test_close_fails_open_jobs_and_leaves_no_process(engine) -> None:
    running = await engine.submit(request(LONG))
    queued = [await engine.submit(request(SHORT)) for _ in range(2)]
    await asyncio.wait_for(first_event(running), BOUND)
    await asyncio.wait_for(engine.close(), BOUND)
    for job in [running, *queued]:
        error = await outcome(job)
        assert isinstance(error, EngineError)
        assert "shutting down" in str(error)
    assert wait_no_child_processes() == []
    assert engine.stats().painters == 0
    await engine.close()
    with pytest.raises(EngineError):
        await engine.submit(request(SHORT))
