"""The engine and the pool on a CUDA GPU: bf16, out of memory, workers per GPU, cancel, timeout.

Marked `cuda` and skipped without a GPU; bench/gpu_check.sh runs them on a GPU machine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from nst_engine.api import (
    Cancelled,
    EngineError,
    JobTimeout,
    Progress,
    Result,
    StyleRequest,
    StyleSource,
)
from nst_engine.pool import PoolJob, ProcessPoolEngine
from nst_engine.precision import use_bf16
from nst_engine.transfer import stylize

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CONTENT = (Path(__file__).parents[1] / "samples" / "chelsea.png").read_bytes()
STARRY = (StyleSource(name="starry-night"),)
BOUND = 120.0
GIB = 1 << 30


def request(iterations: int, size: int = 128, **knobs) -> StyleRequest:
    return StyleRequest(content=CONTENT, styles=STARRY, size=size, iterations=iterations, **knobs)


@contextlib.contextmanager
def hog(leave: int):
    """Hold all but `leave` bytes of the GPU's free memory (in this process) while inside."""
    free, _ = torch.cuda.mem_get_info()
    block = torch.empty(max(free - leave, 0), dtype=torch.uint8, device="cuda")
    try:
        yield
    finally:
        del block
        torch.cuda.empty_cache()


async def outcome(job: PoolJob) -> object:
    try:
        return await asyncio.wait_for(job.result(), BOUND)
    except (Cancelled, EngineError) as exc:
        return exc


async def first_event(job: PoolJob) -> Progress:
    async with contextlib.aclosing(job.progress()) as events:
        async for event in events:
            return event
    raise AssertionError(f"job {job.id} ended without progress")


def test_engine_on_cuda_with_bf16_tracks_the_cpu() -> None:
    gpu = stylize(request(20), device="cuda")
    assert gpu.device.startswith("cuda")
    assert use_bf16(torch.device(gpu.device)) == (torch.cuda.get_device_capability() >= (8, 0))
    cpu = stylize(request(20, precision="fp32"), device="cpu")
    assert (gpu.width, gpu.height) == (cpu.width, cpu.height)
    assert gpu.losses["total"] == pytest.approx(cpu.losses["total"], rel=0.1)


def test_out_of_memory_is_an_engine_error_and_frees_the_cache() -> None:
    stylize(request(2), device="cuda")  # model loaded, allocator warm
    torch.cuda.empty_cache()
    reserved = torch.cuda.memory_reserved()
    with hog(leave=GIB):
        before = torch.cuda.memory_reserved()
        with pytest.raises(EngineError, match="memory"):
            stylize(request(3, size=2048), device="cuda")
        assert torch.cuda.memory_reserved() <= before + 64 * 2**20
    assert torch.cuda.memory_reserved() <= reserved + 64 * 2**20
    assert stylize(request(2), device="cuda").iterations == 2  # and it paints again


@pytest.fixture
async def pool() -> AsyncIterator[ProcessPoolEngine]:
    engine = ProcessPoolEngine(devices=None, per_device=2, job_timeout=BOUND, preview_interval=0.2)
    await engine.start()
    await asyncio.wait_for(engine.wait_ready(), BOUND)
    yield engine
    await engine.close()


async def test_pool_runs_workers_per_gpu_side_by_side(pool: ProcessPoolEngine) -> None:
    assert pool.stats().painters == 2 * torch.cuda.device_count()
    jobs = [await pool.submit(request(30, seed=n)) for n in range(2)]
    results = [await outcome(job) for job in jobs]
    assert all(isinstance(r, Result) and r.device.startswith("cuda") for r in results)
    assert jobs[0].worker_pid != jobs[1].worker_pid


async def test_worker_survives_out_of_memory_with_its_cache_freed(
    pool: ProcessPoolEngine,
) -> None:
    warm = await pool.submit(request(2))
    assert isinstance(await outcome(warm), Result)
    with hog(leave=GIB):
        free_before, _ = torch.cuda.mem_get_info()
        big = await pool.submit(request(3, size=2048))
        error = await outcome(big)
        assert isinstance(error, EngineError) and "memory" in str(error)
        free_after, _ = torch.cuda.mem_get_info()
        # the worker gave back what it grabbed for the failed job
        assert free_after >= free_before - 256 * 2**20
    again = await pool.submit(request(2))
    assert isinstance(await outcome(again), Result)


async def test_cancel_and_timeout_on_the_gpu(pool: ProcessPoolEngine) -> None:
    long = await pool.submit(request(100_000))
    await asyncio.wait_for(first_event(long), BOUND)
    await long.cancel()
    assert isinstance(await outcome(long), Cancelled)
    slow = await pool.submit(request(100_000), timeout=2.0)
    assert isinstance(await outcome(slow), JobTimeout)
    quick = await pool.submit(request(5))
    assert isinstance(await outcome(quick), Result)


async def test_a_gpu_worker_paints_waiting_jobs_as_one_batch() -> None:
    async with ProcessPoolEngine(
        devices=["cuda:0"], batch_max=4, job_timeout=BOUND, preview_interval=0.2
    ) as engine:
        assert engine.describe().endswith("batches of up to 4 jobs each")
        blocker = await engine.submit(request(100_000, seed=99))
        await asyncio.wait_for(first_event(blocker), BOUND)
        requests = [request(30, seed=n) for n in range(3)]
        jobs = [await engine.submit(r) for r in requests]  # they wait in the worker's lanes
        await blocker.cancel()
        results = [await outcome(job) for job in jobs]
        assert isinstance(await outcome(blocker), Cancelled)
    assert len({job.worker_pid for job in jobs}) == 1
    for r, result in zip(requests, results, strict=True):
        assert isinstance(result, Result) and result.device.startswith("cuda"), result
        alone = stylize(r, device="cuda")
        # batched and single convolutions round differently (bf16, or TF32 in fp32), and
        # L-BFGS amplifies that over 30 steps; a job mixed up with a batch-mate is far off
        assert result.losses["total"] == pytest.approx(alone.losses["total"], rel=0.1)
