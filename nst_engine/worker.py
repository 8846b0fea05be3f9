"""The child-process side of the pool: load the model once, then run jobs sent over a pipe.

Started with the `spawn` method, so the entry points take only picklable arguments and torch is
imported inside them (the parent imports this module without loading torch). The wire protocol,
child to parent, is tuples of plain data:

    ("ready", device)                    the model is loaded; waiting for jobs
    ("failed", message)                  could not start; the process exits next
    ("progress", seq, Progress)          throttled here, before crossing the pipe
    ("done", seq, Result)
    ("error", seq, kind, message)        kind is one of ERROR_KINDS

and parent to child `("job", seq, StyleRequest, lane)`; the parent closing its end means "exit".
`seq` numbers one attempt of one job; `lane` is which of the worker's `lanes` (its batch places)
the job holds. A shared int64 per lane holds the seq the parent wants stopped there, so a stop
request can never hit a later job by mistake.

A worker with several lanes gathers the jobs waiting in its pipe and paints the oldest one with
every waiting job that shares its schedule (`batch_key`) as one `stylize_batch`. A job that is
stopped leaves the batch at its next step and is reported then, not when the batch ends; one
stopped while it waits for a batch to end is reported at the batch's next step.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .api import Cancelled, EngineError, InputError, Progress, StyleBotError, StyleRequest

log = logging.getLogger(__name__)

# Progress events per second that cross the pipe (previews and scale ends always do).
PROGRESS_INTERVAL = 0.25
# Seconds a worker with free lanes waits, after a job arrives, for batch-mates still on the way.
GATHER_WINDOW = 0.02

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


@dataclass(frozen=True)
class WorkerSetup:
    """What a pool worker process is started with (besides its pipes and stop flags)."""

    index: int
    device: str
    threads: int
    lanes: int  # jobs it may paint at once, as one batch
    nice: int  # added to its CPU niceness: painters yield the CPU to the bot
    preview_interval: float
    log_level: int


@dataclass
class _Queued:
    """A job attempt this worker has received and not yet painted."""

    seq: int
    request: StyleRequest
    lane: int
    key: Hashable


def batch_key(request: StyleRequest) -> Hashable:
    """Jobs with equal keys have one schedule, so they can paint as one batch.

    From the image header (size before EXIF rotation: a rotated photo may paint after its
    batch-mates rather than with them) and the preset. A job whose photo or style is bad, or
    that starts from an init image, gets a key of its own: it runs, and fails, alone.
    """
    from . import images, schedule, styles

    if request.init is not None:
        return object()
    try:
        for source in request.styles:
            if source.name is not None:
                styles.get(source.name)
        info = images.probe(request.content)
        scales = schedule.plan(
            info.width, info.height, request.size, request.quality, request.iterations
        )
    except StyleBotError:
        return object()
    return (tuple(scales), request.precision or "auto")


def serve(setup: WorkerSetup, commands: Connection, events: Connection, stops: Any) -> None:
    """Child entry point: load the model on the device, report ready, run jobs until EOF.

    `stops` holds an int64 per lane (multiprocessing.RawArray): the job with that seq in that
    lane stops at its next step. A worker whose parent has gone stops its jobs too and exits.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.basicConfig(
        level=setup.log_level,
        format=f"%(asctime)s %(levelname)s [worker {setup.index}, pid {os.getpid()}] %(message)s",
    )
    parent_pid = os.getppid()
    try:
        if setup.nice:
            os.nice(setup.nice)
        setup_threads(setup.threads)
        from . import transfer, vgg

        device = vgg.pick_device(setup.device)
        vgg.load_model(device)
    except Exception as exc:
        if isinstance(exc, StyleBotError):
            log.error("could not start on %s: %s", setup.device, exc)
        else:
            log.exception("could not start on %s", setup.device)
        events.send(("failed", _message(exc)))
        sys.exit(1)
    log.info("ready on %s with %d thread(s), %d lane(s)", device, setup.threads, setup.lanes)
    events.send(("ready", str(device)))

    inbox = _Inbox(commands, events.send, stops, setup.lanes, parent_pid)
    try:
        while True:
            batch = inbox.next_batch()
            for message in run_batch(
                [(job.seq, job.request) for job in batch],
                device,
                setup.preview_interval,
                [functools.partial(inbox.should_stop, job, tend=True) for job in batch],
                events.send,
                transfer,
            ):
                events.send(message)
            if os.getppid() != parent_pid:
                break
    except (EOFError, BrokenPipeError):
        pass  # the parent closed the pipe, or has gone
    log.info("exiting")
    logging.shutdown()
    events.close()
    # Skip interpreter teardown (a second or more with torch loaded): nothing is left to flush.
    os._exit(0)


class _Inbox:
    """The jobs sent to this worker that are not painting yet; stopped ones end here at once."""

    def __init__(
        self,
        commands: Connection,
        send: Callable[[tuple], None],
        stops: Any,
        lanes: int,
        parent_pid: int,
    ) -> None:
        self._commands = commands
        self._send = send
        self._stops = stops
        self._lanes = lanes
        self._parent_pid = parent_pid
        self._waiting: list[_Queued] = []
        self._closed = False

    def should_stop(self, job: _Queued, tend: bool = False) -> bool:
        """Whether the parent wants `job` stopped (or has gone); with `tend`, first `tend()`."""
        if tend:
            self.tend()
        return self._stops[job.lane] == job.seq or os.getppid() != self._parent_pid

    def tend(self) -> None:
        """Between a batch's steps: take in the jobs that arrived, and end those of them that
        were stopped while they waited, so their lanes free up without waiting for the batch."""
        try:
            while not self._closed and self._commands.poll():
                self._receive()
        except EOFError:
            self._closed = True  # the parent is closing; it stops the painting jobs itself
        for job in [job for job in self._waiting if self.should_stop(job)]:
            self._waiting.remove(job)
            self._send(("error", job.seq, "cancelled", str(Cancelled())))

    def next_batch(self) -> list[_Queued]:
        """The oldest waiting job and its batch-mates (up to the lanes); blocks until a job
        arrives when none waits. Raises EOFError once the parent has closed the pipe."""
        self.tend()
        if not self._waiting:
            if self._closed:
                raise EOFError
            self._receive()
        while len(self._waiting) < self._lanes and self._commands.poll(GATHER_WINDOW):
            self._receive()
        key = self._waiting[0].key
        batch = [job for job in self._waiting if job.key == key][: self._lanes]
        self._waiting = [job for job in self._waiting if job not in batch]
        return batch

    def _receive(self) -> None:
        _, seq, request, lane = self._commands.recv()
        key = batch_key(request) if self._lanes > 1 else seq
        self._waiting.append(_Queued(seq, request, lane, key))


def run_batch(
    jobs: Sequence[tuple[int, StyleRequest]],
    device: Any,
    preview_interval: float,
    should_stop: Sequence[Callable[[], bool]],
    send: Callable[[tuple], None],
    transfer: Any,
) -> list[tuple]:
    """Paint (seq, request) jobs as one stylize_batch; `send` their progress, and a stopped
    job's end as soon as it leaves the batch; return the messages that end the others."""
    throttles = [
        ProgressThrottle(functools.partial(_send_progress, send, seq), PROGRESS_INTERVAL)
        for seq, _ in jobs
    ]
    stopped: set[int] = set()

    def stop_check(seq: int, check: Callable[[], bool]) -> bool:
        if seq not in stopped and check():
            stopped.add(seq)  # it leaves the batch at this step, as Cancelled
            send(("error", seq, "cancelled", str(Cancelled())))
        return seq in stopped

    stops = [
        functools.partial(stop_check, seq, check)
        for (seq, _), check in zip(jobs, should_stop, strict=True)
    ]
    try:
        outcomes = transfer.stylize_batch(
            [request for _, request in jobs],
            device=device,
            on_progress=throttles,
            should_stop=stops,
            preview_interval=preview_interval,
        )
    except Exception as exc:  # the whole batch failed: every job gets the error
        outcomes = [exc] * len(jobs)
        _note_failure(exc, device, [seq for seq, _ in jobs])
    messages = []
    for (seq, _), throttle, outcome in zip(jobs, throttles, outcomes, strict=True):
        if seq in stopped:
            continue
        if isinstance(outcome, Exception):
            messages.append(_error(seq, outcome))
        else:
            throttle.flush()
            messages.append(("done", seq, outcome))
    return messages


def _send_progress(send: Callable[[tuple], None], seq: int, event: Progress) -> None:
    send(("progress", seq, event))


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

    Ray painters run their jobs with this, pool workers with `run_batch`: both speak the same
    messages.
    """
    throttle = ProgressThrottle(functools.partial(_send_progress, send, seq), PROGRESS_INTERVAL)
    try:
        result = transfer.stylize(
            request,
            device=device,
            on_progress=throttle,
            should_stop=should_stop,
            preview_interval=preview_interval,
        )
    except Exception as exc:
        _note_failure(exc, device, [seq])
        return _error(seq, exc)
    throttle.flush()
    return ("done", seq, result)


def _note_failure(exc: Exception, device: Any, seqs: list[int]) -> None:
    """Log an exception that escaped the engine; after running out of memory, free the cache."""
    import torch

    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        log.warning("seq %s: out of memory", seqs)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    elif not isinstance(exc, StyleBotError):
        log.error("seq %s failed", seqs, exc_info=exc)


def _error(seq: int, exc: Exception) -> tuple:
    """The message that ends job attempt `seq` with `exc`."""
    import torch

    if isinstance(exc, InputError):
        return ("error", seq, "input", str(exc))
    if isinstance(exc, Cancelled):
        return ("error", seq, "cancelled", str(exc))
    if isinstance(exc, EngineError):
        log.warning("seq %d: %s", seq, exc)
        return ("error", seq, "engine", str(exc))
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return ("error", seq, "engine", "The painter ran out of memory; try a smaller size.")
    return ("error", seq, "engine", _message(exc))


def _message(exc: Exception) -> str:
    """A chat-readable message for an unexpected exception (our typed errors keep theirs)."""
    if isinstance(exc, StyleBotError):
        return str(exc)
    return f"The painter failed ({type(exc).__name__}); please try again later."
