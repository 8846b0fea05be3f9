"""Where a process pool's workers go: the devices, the workers dealt over them, and what each
worker gets (torch threads, jobs painted at once).

Torch-free: devices are detected in a short-lived child process, so the caller never imports
torch.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from multiprocessing.connection import Connection

from .api import EngineError

_CONTEXT = multiprocessing.get_context("spawn")


def plan_workers(devices: Sequence[str], workers: int | None, per_device: int) -> list[str]:
    """The device of each worker: `per_device` per device, or `workers` dealt out in turn."""
    count = workers or len(devices) * per_device
    return [devices[i % len(devices)] for i in range(count)]


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of `workers` workers: the cores this process may use, shared."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


def lanes(device: str, batch_max: int, batch_on_cpu: bool) -> int:
    """How many jobs a worker on `device` paints at once: up to `batch_max` on a GPU.

    On the CPU a batch ran slower than the same jobs one after another (4 jobs at 256 px:
    17.5 s as one batch, 6.8 s in turn, on 2 cores), so CPU workers batch only when asked.
    """
    return batch_max if device.startswith("cuda") or batch_on_cpu else 1


def detect_devices() -> list[str]:
    """Ask a short-lived child process which CUDA devices torch sees (else ["cpu"])."""
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    probe = _CONTEXT.Process(target=report_devices, args=(sender,), daemon=True)
    probe.start()
    sender.close()
    try:
        devices: list[str] = receiver.recv()
    except EOFError as exc:
        raise EngineError("The painter could not start: device detection failed.") from exc
    finally:
        receiver.close()
        probe.join()
    return devices


def report_devices(conn: Connection) -> None:
    """Child entry point: send the devices a pool should use (every CUDA device, else the CPU)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    conn.send([f"cuda:{i}" for i in range(count)] or ["cpu"])
    conn.close()
