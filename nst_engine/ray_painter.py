"""The Ray painter actor: one model on one device of a cluster node, one job at a time.

It runs inside a Ray worker process (on any node of the cluster) and is driven by RayEngine:
`info` once the model is loaded, `paint` as a streaming generator of the worker protocol's
messages, `stop` beside it to end a job attempt at its next step. torch is imported here only.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator

import ray

from . import worker as worker_side
from .api import StyleRequest

log = logging.getLogger(__name__)


class Painter:
    """The actor: one model on one device, painting one job at a time."""

    def __init__(self, threads: int, preview_interval: float, log_level: int, nice: int) -> None:
        """Load the model; run at CPU niceness `nice` or lower priority (0: as Ray starts it)."""
        logging.basicConfig(
            level=log_level,
            format="%(asctime)s %(levelname)s [painter pid %(process)d] %(message)s",
        )
        if nice > os.nice(0):  # Ray starts workers at 15 (its worker_niceness) unless told not to
            os.nice(nice - os.nice(0))  # below the bot's priority, so the bot answers promptly
        worker_side.setup_threads(threads)
        from . import transfer, vgg

        self._transfer = transfer
        self._device = vgg.pick_device("cuda:0" if ray.get_gpu_ids() else "cpu")
        vgg.load_model(self._device)
        self._preview_interval = preview_interval
        self._stop = 0
        log.info("ready on %s with %d thread(s), nice %d", self._device, threads, os.nice(0))

    def info(self) -> tuple[int, str]:
        """(pid, device) once the model is loaded."""
        return os.getpid(), str(self._device)

    def stop(self, seq: int) -> None:
        """Stop the job attempt numbered `seq` at its next step (runs beside `paint`)."""
        self._stop = seq

    def paint(self, seq: int, request: StyleRequest) -> Iterator[tuple]:
        """Yield the job's progress messages, then the message that ends it (worker protocol)."""
        messages: queue.SimpleQueue[tuple] = queue.SimpleQueue()

        def run() -> None:
            messages.put(
                worker_side.run_job(
                    request,
                    seq,
                    self._device,
                    self._preview_interval,
                    lambda: self._stop == seq,
                    messages.put,
                    self._transfer,
                )
            )

        threading.Thread(target=run, name=f"paint-{seq}", daemon=True).start()
        while (message := messages.get())[0] == "progress":
            yield message
        yield message


# max_concurrency: `paint` holds one thread for the whole job, so `stop` and `info` need others.
PainterActor = ray.remote(max_restarts=0, max_concurrency=3)(Painter)
