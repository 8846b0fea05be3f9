"""The child-process side of the pool: load the model once, then run jobs sent over a pipe.

Started with the `spawn` method, so the entry points take only picklable arguments and torch is
imported inside them (the parent imports this module without loading torch). The wire protocol,
child to parent, is tuples of plain data:

    ("ready", device)                    the model is loaded; waiting for jobs
    ("failed", message)                  could not start; the process exits next
    ("progress", seq, Progress)          throttled here, before crossing the pipe
    ("done", seq, Result)
    ("error", seq, kind, message)        kind is one of ERROR_KINDS

and parent to child `("job", seq, StyleRequest)`; the parent closing its end means "exit". `seq`
numbers one attempt of one job. A shared int64 holds the seq the parent wants stopped, so a stop
request can never hit a later job by mistake.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .api import Cancelled, EngineError, InputError, Progress, StyleBotError, StyleRequest

log = logging.getLogger(__name__)

# Progress events per second that cross the pipe (previews and scale ends always do).
PROGRESS_INTERVAL = 0.25

ERROR_KINDS: dict[str, type[Exception]] = {
    "input": InputError,
    "cancelled": Cancelled,
    "engine": EngineError,
}


class ProgressThrottle:
    """Forward at most one event per `interval`, plus every preview and each scale's last step.

    Events in between are held back; one that is still held when its scale ends is sent then, so
    the parent always sees where each scale finished.
    """

    def __init__(self, send: Callable[[Progress], None], interval: float) -> None:
        self._send = send
        self._interval = interval
        self._last_sent = -math.inf
        self._held: Progress | None = None

    def __call__(self, event: Progress) -> None:
        if self._held is not None and self._held.scale != event.scale:
            self._emit(self._held)
        due = time.monotonic() - self._last_sent >= self._interval
        if due or event.preview is not None or event.step >= event.total_steps:
            self._emit(event)
        else:
            self._held = event

    def flush(self) -> None:
        """Send the held event, if any (call when the run ends normally)."""
        if self._held is not None:
            self._emit(self._held)

    def _emit(self, event: Progress) -> None:
        self._held = None
        self._last_sent = time.monotonic()
        self._send(event)


def setup_threads(threads: int) -> None:
    """Give torch `threads` CPU threads, idle ones sleeping rather than spinning.

    Call before torch is first imported: OpenMP reads its wait policy once. Spinning threads
    (OpenMP's default) make a painter ten times slower as soon as anything else wants the CPU,
    such as the bot beside it answering a crowd (measured on 2 cores: 7.4 s against 0.8 s for
    one small job); on an idle machine sleeping ones cost about 10 % (11.3 s against 12.4 s for
    30 steps at 256 px). An operator's own OMP_WAIT_POLICY wins (ACTIVE for a machine that
    only paints).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(threads)


def report_devices(conn: Connection) -> None:
    """Child entry point: send the devices a pool should use (every CUDA device, else the CPU)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    conn.send([f"cuda:{i}" for i in range(count)] or ["cpu"])
    conn.close()


def serve(
    index: int,
    device_name: str,
    threads: int,
    commands: Connection,
    events: Connection,
    stop: Any,
    preview_interval: float,
    log_level: int,
) -> None:
    """Child entry point: load the model on `device_name`, report ready, run jobs until EOF.

    `stop` is a shared int64 (multiprocessing.RawValue): a job with that seq stops at its next
    step. A worker whose parent has gone stops its job too and exits.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s [worker {index}, pid {os.getpid()}] %(message)s",
    )
    parent_pid = os.getppid()
    try:
        setup_threads(threads)
        from . import transfer, vgg

        device = vgg.pick_device(device_name)
        vgg.load_model(device)
    except Exception as exc:
        if isinstance(exc, StyleBotError):
            log.error("could not start on %s: %s", device_name, exc)
        else:
            log.exception("could not start on %s", device_name)
        events.send(("failed", _message(exc)))
        sys.exit(1)
    log.info("ready on %s with %d thread(s)", device, threads)
    events.send(("ready", str(device)))

    while True:
        try:
            _, seq, request = commands.recv()
        except EOFError:
            break

        def should_stop(seq: int = seq) -> bool:
            return stop.value == seq or os.getppid() != parent_pid

        try:
            events.send(
                run_job(request, seq, device, preview_interval, should_stop, events.send, transfer)
            )
        except BrokenPipeError:
            break  # the parent has gone
        if os.getppid() != parent_pid:
            break
    log.info("exiting")
    logging.shutdown()
    events.close()
    # Skip interpreter teardown (a second or more with torch loaded): nothing is left to flush.
    os._exit(0)


def run_job(
    request: StyleRequest,
    seq: int,
    device: Any,
    preview_interval: float,
    should_stop: Callable[[], bool],
    send: Callable[[tuple], None],
    transfer: Any,
) -> tuple:
    """Run one job attempt, `send` its throttled progress messages, return the one that ends it.

    Shared by pool workers and Ray painters, so both speak the same messages.
    """
    import torch

    throttle = ProgressThrottle(lambda p: send(("progress", seq, p)), PROGRESS_INTERVAL)
    try:
        result = transfer.stylize(
            request,
            device=device,
            on_progress=throttle,
            should_stop=should_stop,
            preview_interval=preview_interval,
        )
    except InputError as exc:
        return ("error", seq, "input", str(exc))
    except Cancelled as exc:
        return ("error", seq, "cancelled", str(exc))
    except EngineError as exc:
        log.warning("seq %d: %s", seq, exc)
        return ("error", seq, "engine", str(exc))
    except (MemoryError, torch.OutOfMemoryError):
        log.warning("seq %d: out of memory", seq)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return ("error", seq, "engine", "The painter ran out of memory; try a smaller size.")
    except Exception as exc:
        log.exception("seq %d failed", seq)
        return ("error", seq, "engine", _message(exc))
    throttle.flush()
    return ("done", seq, result)


def _message(exc: Exception) -> str:
    """A chat-readable message for an unexpected exception (our typed errors keep theirs)."""
    if isinstance(exc, StyleBotError):
        return str(exc)
    return f"The painter failed ({type(exc).__name__}); please try again later."
