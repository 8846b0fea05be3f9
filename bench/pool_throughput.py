"""Throughput and overhead of ProcessPoolEngine on tiny draft jobs, against the bare engine.

    .venv/bin/python bench/pool_throughput.py [--jobs 8] [--workers 1 2] [--size 64]

Prints, for each pool size: start-up time; on an idle pool, the latency from submit to the first
progress event and the per-job overhead (median pool wall time minus the in-worker stylize
time, and minus the bare in-process time for the same request); then jobs per minute for a
burst of `--jobs` concurrent jobs and their submit-to-first-progress latency (queue wait
included). All single-job figures are medians.
The bare engine is `transfer.stylize` in this process, measured before each pool with the
thread count that pool's workers get, so each row compares like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from nst_engine.api import Result, StyleRequest, StyleSource
from nst_engine.pool import ProcessPoolEngine

SAMPLE = Path(__file__).parents[1] / "samples" / "chelsea.png"


def make_request(size: int, iterations: int | None) -> StyleRequest:
    return StyleRequest(
        content=SAMPLE.read_bytes(),
        styles=(StyleSource(name="starry-night"),),
        size=size,
        quality="draft",
        iterations=iterations,
    )


def bare_seconds(request: StyleRequest, repeats: int, threads: int) -> float:
    """Median wall time of `transfer.stylize` in this process with `threads` torch threads."""
    import torch

    from nst_engine import transfer

    torch.set_num_threads(threads)
    transfer.stylize(request, device="cpu")  # warm-up: model, style targets
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        transfer.stylize(request, device="cpu")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def timed_job(
    engine: ProcessPoolEngine, request: StyleRequest
) -> tuple[float, float, Result]:
    """(submit → first progress, submit → result, result) for one job, in seconds."""
    started = time.perf_counter()
    job = await engine.submit(request)
    first: float | None = None
    async for _ in job.progress():
        if first is None:
            first = time.perf_counter() - started
    result = await job.result()
    assert first is not None, "the job sent no progress"
    return first, time.perf_counter() - started, result


async def measure_pool(
    workers: int, threads: int, request: StyleRequest, jobs: int, repeats: int, bare: float
) -> None:
    started = time.perf_counter()
    async with ProcessPoolEngine(workers=workers, devices=["cpu"]) as engine:
        startup = time.perf_counter() - started
        # One job per worker first: pays the per-process first-job costs (caches, allocator).
        await asyncio.gather(*(timed_job(engine, request) for _ in range(workers)))

        idle = [await timed_job(engine, request) for _ in range(repeats)]
        first = statistics.median(t[0] for t in idle)
        wall = statistics.median(t[1] for t in idle)
        inside = statistics.median(t[2].seconds for t in idle)

        burst_started = time.perf_counter()
        burst = await asyncio.gather(*(timed_job(engine, request) for _ in range(jobs)))
        burst_wall = time.perf_counter() - burst_started
    firsts = sorted(t[0] for t in burst)
    print(
        f"\n{workers} worker(s), {threads} torch thread(s) each; start-up {startup:.1f} s; "
        f"bare engine in-process with {threads} thread(s): {bare:.2f} s/job"
    )
    print(f"  idle pool, {repeats} job(s) one at a time:")
    print(f"    submit → first progress     {first * 1000:8.0f} ms (median)")
    print(f"    job wall time                {wall:8.2f} s  (in-worker stylize {inside:.2f} s)")
    print(f"    overhead vs in-worker time   {(wall - inside) * 1000:8.0f} ms")
    print(f"    overhead vs bare engine      {(wall - bare) * 1000:8.0f} ms")
    print(f"  burst of {jobs} concurrent jobs:")
    print(f"    wall {burst_wall:.1f} s → {jobs / burst_wall * 60:.1f} jobs/min")
    print(
        f"    submit → first progress      {statistics.median(firsts):.2f} s median, "
        f"{firsts[0]:.2f} s min, {firsts[-1]:.2f} s max (queue wait included)"
    )


def _load() -> str:
    """The machine's load average: the figures mean little when other work shares the cores."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _cores() -> int:
    return len(os.sched_getaffinity(0))


async def main_async(args: argparse.Namespace) -> None:
    request = make_request(args.size, args.iterations)
    steps = args.iterations or "preset"
    print(
        f"draft jobs, long side {args.size} px, {steps} steps, {_cores()} core(s); "
        f"load average {_load()}"
    )
    for workers in args.workers:
        threads = max(1, _cores() // workers)
        bare = bare_seconds(request, args.repeats, threads)
        await measure_pool(workers, threads, request, args.jobs, args.repeats, bare)
    print(f"\nload average at the end (1/5/15 min): {_load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="concurrent jobs in the burst")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=64, help="long side in px")
    parser.add_argument("--iterations", type=int, default=None, help="steps (default: preset)")
    parser.add_argument("--repeats", type=int, default=3, help="one-at-a-time jobs (median)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
