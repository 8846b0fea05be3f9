"""ProcessPoolEngine with real worker processes, real weights and tiny images on the CPU.

One two-worker pool serves the module (starting workers costs seconds); the tests run in file
order and the last one closes it. Jobs are made short or long with `iterations`: long ones never
run to the end, they are cancelled, killed or timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio
from PIL import Image

from nst_engine.api import (
    Cancelled,
    EngineError,
    EngineStats,
    InputError,
    JobTimeout,
    Progress,
    StyleRequest,
    StyleSource,
)
from nst_engine.pool import PoolJob, ProcessPoolEngine, plan_workers

on_module_loop = pytest.mark.asyncio(loop_scope="module")  # the loop the shared pool lives on

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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[ProcessPoolEngine]:
    engine = ProcessPoolEngine(workers=2, devices=["cpu"], job_timeout=120, preview_interval=0.2)
    await engine.start()
    await asyncio.wait_for(engine.wait_ready(), BOUND)
    yield engine
    await engine.close()


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


async def idle(pool: ProcessPoolEngine) -> None:
    while pool.stats().busy:
        await asyncio.sleep(0.05)


def child_processes() -> list[psutil.Process]:
    """This process's descendants, less multiprocessing's resource tracker.

    The tracker is the interpreter's, started by the first `spawn`, and lives until exit.
    """
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "resource_tracker" not in " ".join(p.cmdline())
    ]


def test_workers_are_dealt_out_over_the_devices() -> None:
    gpus = ["cuda:0", "cuda:1"]
    assert plan_workers(gpus, None, 1) == gpus
    assert plan_workers(gpus, None, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert plan_workers(gpus, 3, 1) == ["cuda:0", "cuda:1", "cuda:0"]
    assert plan_workers(["cpu"], None, 1) == ["cpu"]
    assert plan_workers(["cpu"], 3, 1) == ["cpu"] * 3


def test_the_pool_keeps_torch_out_of_the_calling_process() -> None:
    code = "import sys, nst_engine.pool; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


HOST = """
import asyncio
from nst_engine.pool import ProcessPoolEngine

async def main():
    engine = ProcessPoolEngine(workers=1, devices=["cpu"])
    await engine.wait_ready()
    print(*engine.pids(), flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(HOST))
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        pids = [int(pid) for pid in host.stdout.readline().split()]
        assert pids, "the host process did not start its pool"
    finally:
        host.kill()
        host.wait()
    deadline = time.monotonic() + BOUND
    while any(_running(pid) for pid in pids):
        assert time.monotonic() < deadline, "an orphaned worker kept running"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@on_module_loop
async def test_two_jobs_run_on_two_workers_with_ordered_progress(pool: ProcessPoolEngine) -> None:
    jobs = [await pool.submit(request(SHORT)) for _ in range(2)]
    assert pool.stats().busy == 2
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
    assert pool.stats().busy == 0


@on_module_loop
async def test_cancel_queued_and_running_jobs_keeps_the_worker(pool: ProcessPoolEngine) -> None:
    pids = sorted(pool.pids())
    running = [await pool.submit(request(LONG)) for _ in range(2)]
    queued = await pool.submit(request(SHORT))
    await asyncio.wait_for(first_event(running[0]), BOUND)
    assert pool.stats().queued == 1

    await queued.cancel()
    assert isinstance(await outcome(queued), Cancelled)
    assert pool.stats().queued == 0
    assert queued.worker_pid is None

    watcher = asyncio.create_task(collect(running[0]))
    await asyncio.sleep(0)
    await running[0].cancel()
    assert isinstance(await outcome(running[0]), Cancelled)
    await asyncio.wait_for(watcher, BOUND)  # the stream ended with the job
    async for _ in running[0].progress():
        pytest.fail("a finished job's progress must end at once")

    # The other worker is still busy, so the next job can only go to the one that stopped.
    follow_up = await pool.submit(request(SHORT))
    result = await outcome(follow_up)
    assert result.iterations == SHORT
    assert follow_up.worker_pid == running[0].worker_pid
    assert not running[1].done

    await running[1].cancel()
    assert isinstance(await outcome(running[1]), Cancelled)
    assert sorted(pool.pids()) == pids, "no worker was killed or replaced"


@on_module_loop
async def test_bad_input_fails_and_the_same_worker_serves_the_next_job(
    pool: ProcessPoolEngine,
) -> None:
    garbage = await pool.submit(request(SHORT, content=os.urandom(4096)))
    error = await outcome(garbage)
    assert isinstance(error, InputError)
    assert "\n" not in str(error)

    unknown = await pool.submit(request(SHORT, style="starry-nite"))
    error = await outcome(unknown)
    assert isinstance(error, InputError)
    assert "starry-night" in str(error)
    assert unknown.worker_pid == garbage.worker_pid

    good = await pool.submit(request(SHORT))
    assert (await outcome(good)).iterations == SHORT
    assert good.worker_pid == garbage.worker_pid
    assert garbage.worker_pid in pool.pids()


@on_module_loop
async def test_killed_worker_job_is_retried_once_and_the_pool_recovers(
    pool: ProcessPoolEngine,
) -> None:
    job = await pool.submit(request(3 * SHORT))
    await asyncio.wait_for(first_event(job), BOUND)
    victim = job.worker_pid
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    result = await outcome(job)
    assert result.iterations == 3 * SHORT, "the retry finished the job"
    assert job.worker_pid != victim
    await asyncio.wait_for(pool.wait_ready(), BOUND)
    assert pool.stats().workers == 2
    assert victim not in pool.pids()

    doomed = await pool.submit(request(LONG))
    victims = []
    for _ in range(2):
        while doomed.worker_pid in victims:
            await asyncio.wait_for(first_event(doomed), BOUND)
        victims.append(doomed.worker_pid)
        await asyncio.wait_for(first_event(doomed), BOUND)  # running on that worker now
        os.kill(doomed.worker_pid, signal.SIGKILL)
    error = await outcome(doomed)
    assert isinstance(error, EngineError)
    assert "crashed twice" in str(error)
    await asyncio.wait_for(pool.wait_ready(), BOUND)
    assert pool.stats() == EngineStats(workers=2, busy=0, queued=0)
    assert not set(victims) & set(pool.pids())


@on_module_loop
async def test_timeout_stops_the_job_and_the_worker_lives_on(pool: ProcessPoolEngine) -> None:
    pids = sorted(pool.pids())
    slow = await pool.submit(request(LONG), timeout=1.5)
    error = await outcome(slow)
    assert isinstance(error, JobTimeout)
    assert "longer than 1.5 s" in str(error)
    await asyncio.wait_for(idle(pool), BOUND)  # the worker stops on its own, after the verdict
    quick = await pool.submit(request(SHORT))  # the most recently idle worker takes it
    assert (await outcome(quick)).iterations == SHORT
    assert quick.worker_pid == slow.worker_pid
    assert sorted(pool.pids()) == pids, "the worker stopped by itself; none was killed"


@on_module_loop
async def test_stuck_worker_is_killed_and_replaced() -> None:
    # With no grace at all, the worker is killed the moment its job times out.
    async with ProcessPoolEngine(
        workers=1, devices=["cpu"], job_timeout=1.0, stop_grace=0.0
    ) as engine:
        (pid,) = engine.pids()
        slow = await engine.submit(request(LONG))
        error = await outcome(slow)
        assert isinstance(error, JobTimeout)
        assert "longer than 1 s" in str(error)
        assert engine.stats().workers == 0, "a condemned worker does not count"
        await asyncio.wait_for(engine.wait_ready(), BOUND)
        (replacement,) = engine.pids()
        assert replacement != pid
        quick = await engine.submit(request(TINY), timeout=BOUND)
        assert (await outcome(quick)).iterations == TINY
    assert not psutil.pid_exists(replacement)


@on_module_loop
async def test_a_worker_that_cannot_start_fails_its_jobs_clearly() -> None:
    engine = ProcessPoolEngine(devices=["cuda:99"])  # no machine here has that GPU
    job = await engine.submit(request(TINY))
    with pytest.raises(EngineError, match="could not start"):
        await asyncio.wait_for(engine.wait_ready(), BOUND)
    error = await outcome(job)
    assert isinstance(error, EngineError)
    assert "cuda:99" in str(error)
    with pytest.raises(EngineError, match="could not start"):
        await engine.submit(request(TINY))
    await engine.close()
    assert engine.pids() == []


@on_module_loop
async def test_close_fails_open_jobs_and_leaves_no_child_process(pool: ProcessPoolEngine) -> None:
    running = await pool.submit(request(LONG))
    queued = [await pool.submit(request(SHORT)) for _ in range(2)]
    await asyncio.wait_for(first_event(running), BOUND)
    await asyncio.wait_for(pool.close(), BOUND)
    for job in [running, *queued]:
        error = await outcome(job)
        assert isinstance(error, EngineError)
        assert "shutting down" in str(error)
    assert child_processes() == []
    assert pool.stats().workers == 0
    await pool.close()
    with pytest.raises(EngineError):
        await pool.submit(request(SHORT))
