"""ProcessPoolEngine against RayEngine on one and on two nodes: jobs/min and overhead per job.

    .venv/bin/python bench/ray_throughput.py [--jobs 8] [--size 64] [--iterations 20] [--cpus 2]

The same jobs on the same total CPU (`--cpus`, one per painter) for each engine:
  pool   ProcessPoolEngine, `--cpus` workers on this machine;
  ray-1  RayEngine on a local one-node cluster with `--cpus` CPUs, one painter per CPU;
  ray-2  RayEngine on a two-node cluster (ray.cluster_utils.Cluster on this machine: a head with
         no CPU and two nodes sharing `--cpus`), one painter per CPU.
Both Ray clusters run on loopback only, without usage statistics (nst_engine/ray_local.py).
Each runs in a fresh child process, so peak memory (VmHWM) is its own. Per engine it prints the
time to ready; on idle painters (median of `--repeats` jobs, after a warm-up job on each): submit
→ first progress, submit → result, the overhead (submit → result minus the painter's own paint
time) and the result transfer (the last step's progress event → the result); then jobs/min for a
burst of `--jobs` concurrent jobs; then the peak RSS of the calling process and of each painter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pool_throughput import make_request  # noqa: E402  (the same jobs for every engine)
from nst_engine.api import StyleRequest  # noqa: E402

KINDS = ("pool", "ray-1", "ray-2")
RESULT = "RESULT "  # marks the child's answer among whatever Ray prints


def peak_rss_mib(pid: int | str = "self") -> float:
    """The peak resident set (VmHWM) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def timed_job(engine: Any, request: StyleRequest) -> dict[str, float]:
    """Seconds from submit to first progress and to the result, the painter's own paint time,
    and from the last step's progress event to the result."""
    started = time.perf_counter()
    job = await engine.submit(request)
    first = last = None
    async for event in job.progress():
        now = time.perf_counter()
        first = first or now
        if event.step >= event.total_steps:
            last = now
    result = await job.result()
    done = time.perf_counter()
    assert first is not None and last is not None
    return {
        "first": first - started,
        "total": done - started,
        "overhead": done - started - result.seconds,
        "transfer": done - last,
    }


async def measure(engine: Any, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    await engine.start()
    await engine.wait_ready()
    ready = time.perf_counter() - started
    painters = engine.stats().painters
    request = make_request(args.size, args.iterations)
    await asyncio.gather(*(timed_job(engine, request) for _ in range(painters)))  # warm-up
    singles = [await timed_job(engine, request) for _ in range(args.repeats)]
    burst_started = time.perf_counter()
    await asyncio.gather(*(timed_job(engine, request) for _ in range(args.jobs)))
    burst = time.perf_counter() - burst_started
    row = {key: statistics.median(s[key] for s in singles) for key in singles[0]}
    return row | {
        "ready": ready,
        "painters": painters,
        "nodes": engine.stats().nodes,
        "jobs_per_min": args.jobs / burst * 60,
        "caller_mib": peak_rss_mib(),
        "painter_mib": [round(peak_rss_mib(pid)) for pid in sorted(engine.pids())],
    }


async def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    if kind == "pool":
        from nst_engine.pool import ProcessPoolEngine

        engine: Any = ProcessPoolEngine(workers=args.cpus, devices=["cpu"], preview_interval=1.0)
        try:
            return await measure(engine, args)
        finally:
            await engine.close()

    from nst_engine.ray_engine import RayEngine

    if kind == "ray-1":
        engine = RayEngine(num_cpus=args.cpus, painters_per_node=args.cpus, preview_interval=1.0)
        try:
            return await measure(engine, args)
        finally:
            await engine.close()

    from nst_engine import ray_local

    cluster = ray_local.loopback_cluster(num_cpus=0)
    try:
        shares = [args.cpus // 2, args.cpus - args.cpus // 2]
        for cpus in shares:
            cluster.add_node(num_cpus=cpus)
        engine = RayEngine(
            address=cluster.address, painters_per_node=max(shares), preview_interval=1.0
        )
        try:
            return await measure(engine, args)
        finally:
            await engine.close()
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--only", choices=KINDS, help=argparse.SUPPRESS)  # one child's run
    args = parser.parse_args()
    if args.only:
        print(RESULT + json.dumps(asyncio.run(run_one(args.only, args))), flush=True)
        return

    print(
        f"{args.jobs} jobs of {args.size} px × {args.iterations} steps, {args.cpus} CPU(s) per "
        f"engine, load average {os.getloadavg()[0]:.1f} at start"
    )
    header = (
        f"{'engine':6} {'ready s':>7} {'painters':>8} {'nodes':>5} {'1st prog s':>10} "
        f"{'job s':>6} {'overhead s':>10} {'transfer s':>10} {'jobs/min':>8} "
        f"{'caller MiB':>10}  painter MiB"
    )
    print(header)
    for kind in KINDS:
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--only", kind],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            print(f"{kind:6} failed:\n{out.stderr[-2000:]}")
            continue
        (line,) = [x for x in out.stdout.splitlines() if x.startswith(RESULT)]
        r = json.loads(line.removeprefix(RESULT))
        print(
            f"{kind:6} {r['ready']:7.1f} {r['painters']:8d} {r['nodes']:5d} {r['first']:10.2f} "
            f"{r['total']:6.2f} {r['overhead']:10.3f} {r['transfer']:10.3f} "
            f"{r['jobs_per_min']:8.1f} {r['caller_mib']:10.0f}  {r['painter_mib']}"
        )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
