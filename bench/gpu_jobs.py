"""Whole jobs on one device: the default job's time per scale, and many concurrent jobs' rate.

    python bench/gpu_jobs.py default [--device cuda] [--size 512] [--iterations N]
    python bench/gpu_jobs.py throughput [--device cuda] [--jobs 32] [--per-device 8]
        [--size 512] [--iterations N] [--serial 4]
    python bench/gpu_jobs.py batch [--device cuda] [--batch 8] [--size 512] [--iterations N]

`default` paints chelsea.png in starry-night (standard) in this process after a warm-up job,
and prints the wall time, each scale's time and the peak memory the allocator held.
`throughput` submits `--jobs` mixed jobs (three aspect ratios, three styles, distinct seeds) at
once to a ProcessPoolEngine with `--per-device` painters on the device and reports jobs/min,
against `--serial` jobs run one at a time through a one-painter pool (jobs/min from their mean).
On CUDA it also reports the device memory in use at the busiest moment per painter.
`batch` paints `--batch` same-shaped jobs (distinct styles and seeds) one after another and then
as one stylize_batch call in this process, and reports both rates.
Each mode ends with one `RESULT {json}` line (bench/gpu_check.sh builds its table from them).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import threading
import time
from pathlib import Path

from nst_engine import images
from nst_engine.api import Progress, Result, StyleRequest, StyleSource

SAMPLE = Path(__file__).parents[1] / "samples" / "chelsea.png"
STYLES = ("starry-night", "the-scream", "great-wave")


def _photo(aspect: str) -> bytes:
    """chelsea.png cropped to landscape (4:3), square or portrait (3:4)."""
    img = images.decode(SAMPLE.read_bytes())
    w, h = img.size
    box = {
        "4:3": (0, 0, w, min(h, w * 3 // 4)),
        "1:1": (0, 0, min(w, h), min(w, h)),
        "3:4": (0, 0, min(w, h * 3 // 4), h),
    }[aspect]
    buf = io.BytesIO()
    img.crop(box).save(buf, "PNG")
    return buf.getvalue()


def _request(args: argparse.Namespace, n: int = 0, aspect: str = "4:3") -> StyleRequest:
    return StyleRequest(
        content=_photo(aspect),
        styles=(StyleSource(name=STYLES[n % len(STYLES)]),),
        size=args.size,
        quality="standard",
        iterations=args.iterations,
        seed=n,
    )


def run_default(args: argparse.Namespace) -> dict:
    import torch

    from nst_engine.transfer import stylize

    stylize(_request(args), device=args.device)  # warm-up: model, cuDNN's autotuner, targets
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    ends: dict[int, float] = {}

    def on_progress(p: Progress) -> None:
        ends[p.scale] = p.elapsed

    started = time.perf_counter()
    result = stylize(_request(args), device=args.device, on_progress=on_progress)
    wall = time.perf_counter() - started
    per_scale = [ends[k] - ends.get(k - 1, 0.0) for k in sorted(ends)]
    return {
        "wall_s": round(wall, 3),
        "scales_s": [round(t, 3) for t in per_scale],
        "size": f"{result.width}x{result.height}",
        "steps": result.iterations,
        "loss": round(result.losses["total"], 5),
        "peak_mem_mib": round(torch.cuda.max_memory_reserved() / 2**20) if cuda else None,
    }


class _MemoryWatch:
    """Samples the device's used memory (all processes) every 50 ms, keeping the maximum."""

    def __init__(self, device: str) -> None:
        import torch

        self._torch = torch
        self._device = torch.device(device)
        self.baseline = self._used()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _used(self) -> int:
        free, total = self._torch.cuda.mem_get_info(self._device)
        return total - free

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._used())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def _burst(device: str, per_device: int, requests: list[StyleRequest], watch: bool):
    from nst_engine.pool import ProcessPoolEngine

    async with ProcessPoolEngine(
        devices=[device], per_device=per_device, job_timeout=None, preview_interval=3600
    ) as engine:
        await engine.wait_ready()
        memory = _MemoryWatch(device) if watch else None
        started = time.perf_counter()
        jobs = [await engine.submit(r) for r in requests]
        results: list[Result] = [await job.result() for job in jobs]
        seconds = time.perf_counter() - started
        if memory is not None:
            memory.stop()
    return seconds, results, memory


def run_throughput(args: argparse.Namespace) -> dict:
    aspects = ("4:3", "1:1", "3:4")
    requests = [_request(args, n, aspects[n % 3]) for n in range(args.jobs)]
    cuda = args.device.startswith("cuda")
    burst_s, results, memory = asyncio.run(
        _burst(args.device, args.per_device, requests, watch=cuda)
    )
    serial_s, serial_results, _ = asyncio.run(
        _burst(args.device, 1, requests[: args.serial], watch=False)
    )
    per_job = serial_s / len(serial_results)
    out = {
        "jobs": len(results),
        "per_device": args.per_device,
        "concurrent_jobs_per_min": round(60 * len(results) / burst_s, 1),
        "concurrent_s": round(burst_s, 2),
        "serial_jobs_per_min": round(60 / per_job, 1),
        "serial_s_per_job": round(per_job, 3),
        "mean_job_s_in_worker": round(sum(r.seconds for r in results) / len(results), 3),
    }
    if memory is not None:
        out["mem_per_painter_mib"] = round(
            (memory.peak - memory.baseline) / 2**20 / args.per_device
        )
        out["mem_idle_pool_mib"] = round(memory.baseline / 2**20)
    return out


def run_batch(args: argparse.Namespace) -> dict:
    from nst_engine.transfer import stylize, stylize_batch

    requests = [_request(args, n) for n in range(args.batch)]
    stylize_batch(requests[:2], device=args.device)  # warm-up: model, autotuner, targets
    started = time.perf_counter()
    for r in requests:
        stylize(r, device=args.device)
    sequential = time.perf_counter() - started
    started = time.perf_counter()
    outcomes = stylize_batch(requests, device=args.device)
    batched = time.perf_counter() - started
    assert all(isinstance(o, Result) for o in outcomes), outcomes
    return {
        "batch": len(requests),
        "sequential_jobs_per_min": round(60 * len(requests) / sequential, 1),
        "batched_jobs_per_min": round(60 * len(requests) / batched, 1),
        "speedup": round(sequential / batched, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("default", "throughput", "batch"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--per-device", type=int, default=8)
    parser.add_argument("--serial", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    run = {"default": run_default, "throughput": run_throughput, "batch": run_batch}
    out = run[args.mode](args)
    for key, value in out.items():
        print(f"{key:28s} {value}")
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
