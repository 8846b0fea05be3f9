"""ProcessPoolEngine: style transfers in worker processes that each own a device and a loaded VGG19.

Lifecycle (all methods are called from one running asyncio loop)::

    async with ProcessPoolEngine() as engine:      # start() + wait_ready()
        job = await engine.submit(request)
        async for event in job.progress(): ...
        result = await job.result()
    # or: engine = ProcessPoolEngine(); await engine.start(); ...; await engine.close()

Construction does nothing and needs no loop; `start()` binds the engine to the running loop,
picks the devices and spawns the workers without waiting for them (`submit()` starts the pool
too, and jobs queue until a worker is ready); `wait_ready()` waits until every worker has loaded
the model, and again after a crash until the replacement has. `close()` ends it for good:
queued and running jobs fail with EngineError ("shutting down"), every process is joined.
Workers start with `spawn`, which imports the program's main module in each of them: keep its
entry point under `if __name__ == "__main__":` and its top-level imports light.

Devices: `devices=None` asks a short-lived child process which CUDA devices torch sees (so this
process never imports torch) and falls back to the CPU. Each worker runs one job at a time; idle
workers take queued jobs in FIFO order, the most recently idle worker first (its caches are warm).

Each process has two daemon threads here: one blocks on the worker's event pipe and hands every
message to the loop with `call_soon_threadsafe`, then waits for the process to end and reports
that; the other sends commands, so a large request never blocks the loop. Both end, and every
pipe of the worker is closed, when it exits. A worker that dies after it was ready is replaced
at once; one that keeps dying soon after start is replaced after a growing delay.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import secrets
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Protocol

from . import worker as worker_side
from .api import Cancelled, EngineError, EngineStats, JobTimeout, Progress, Result, StyleRequest

log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("spawn")
# A slot whose worker dies this many times in a row before it is ready is given up.
MAX_START_FAILURES = 3
# A worker that dies within this many seconds of becoming ready counts towards a crash loop: the
# first death is replaced at once, each further one in a row waits twice as long as the last,
# from CRASH_BACKOFF up to MAX_CRASH_BACKOFF seconds.
CRASH_STREAK_WINDOW = 60.0
CRASH_BACKOFF = 0.5
MAX_CRASH_BACKOFF = 30.0
# Seconds a process gets to exit after SIGTERM (in close) before SIGKILL.
TERMINATE_GRACE = 3.0

CRASHED_TWICE = (
    "The painter crashed twice on this job, so it was given up. "
    "The image may be too large for this machine; try a smaller size."
)
SHUTTING_DOWN = "The painter is shutting down; please try again later."
# Never inherited by painters (they decode hostile images); the bot's token is one.
SECRET_ENV = ("DISCORD_TOKEN",)


class _JobOwner(Protocol):
    """The engine side of a job: RayEngine reuses PoolJob with its own scheduler."""

    def _cancel(self, job: PoolJob) -> None: ...


class PoolJob:
    """A job submitted to a ProcessPoolEngine (implements `api.Job`).

    `worker_pid` is the process running (or that last ran) the job, for logs and diagnostics.
    """

    def __init__(
        self,
        engine: _JobOwner,
        job_id: str,
        request: StyleRequest,
        timeout: float | None,
    ) -> None:
        self.id = job_id
        self.request = request
        self.timeout = timeout
        self.worker_pid: int | None = None
        self.crashes = 0
        self._engine = engine
        self._future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._future.add_done_callback(_mark_retrieved)
        self._subscribers: list[asyncio.Queue[Progress | None]] = []

    def __repr__(self) -> str:
        return f"<PoolJob {self.id} done={self.done}>"

    @property
    def done(self) -> bool:
        return self._future.done()

    async def progress(self) -> AsyncIterator[Progress]:
        """Events from now on, until the job ends (at once if it already has).

        A job retried after its worker died starts its steps again from the first.
        """
        if self.done:
            return
        events: asyncio.Queue[Progress | None] = asyncio.Queue()
        self._subscribers.append(events)
        try:
            while (event := await events.get()) is not None:
                yield event
        finally:
            self._subscribers.remove(events)

    async def result(self) -> Result:
        """The painted image, or the typed error that ended the job."""
        return await asyncio.shield(self._future)

    async def cancel(self) -> None:
        """Drop the job if queued, else ask its worker to stop; `result()` then raises Cancelled.

        A job that has already ended keeps its outcome.
        """
        self._engine._cancel(self)

    def _publish(self, event: Progress) -> None:
        for events in self._subscribers:
            events.put_nowait(event)

    def _finish(self, result: Result | None = None, error: Exception | None = None) -> None:
        """Settle the job once (later calls are ignored) and end every progress stream."""
        if self.done:
            return
        if error is not None:
            self._future.set_exception(error)
        else:
            self._future.set_result(result)
        for events in self._subscribers:
            events.put_nowait(None)


def _mark_retrieved(future: asyncio.Future[Result]) -> None:
    """Nobody has to await a job's result; don't log its error as never retrieved."""
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)
class _Worker:
    """The parent's handle on one worker process."""

    slot: int
    device: str
    process: BaseProcess
    pid: int
    commands: queue.SimpleQueue[tuple | None]
    stop: Any  # RawValue('q'): the seq the worker should stop
    exited: asyncio.Future[int | None]
    ready: bool = False
    ready_at: float = 0.0  # loop time
    killed: bool = False  # by the pool; the exit is still to come
    failure: str | None = None
    job: PoolJob | None = None
    seq: int = 0
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def serving(self) -> bool:
        """Loaded and not condemned: counts towards the pool's strength."""
        return self.ready and not self.killed

    def clear_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class ProcessPoolEngine:
    """An `Engine` running each job in a worker process that keeps VGG19 loaded.

    workers: how many processes; default one per device (`per_device` each). With `devices`
    given or detected, workers are dealt out over them in turn. On the CPU the workers split the
    cores between them (torch threads = cores // workers, at least 1).
    devices: torch device names ("cuda:0", "cpu"); None detects them (see module docstring).
    job_timeout: seconds one attempt of a job may run on a worker (queue time not counted);
    None for no limit; `submit(..., timeout=)` overrides it per job. A job past its limit fails
    with JobTimeout.
    preview_interval: seconds between the small JPEG previews in progress events.
    stop_grace: seconds a worker gets to stop a cancelled or timed-out job (and, in close(), to
    exit) before it is killed and replaced.
    """

    def __init__(
        self,
        workers: int | None = None,
        devices: Sequence[str] | None = None,
        job_timeout: float | None = 600.0,
        per_device: int = 1,
        preview_interval: float = 3.0,
        *,
        stop_grace: float = 10.0,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        if per_device < 1:
            raise ValueError("per_device must be at least 1")
        if devices is not None and not devices:
            raise ValueError("devices must name at least one device")
        if job_timeout is not None and job_timeout <= 0:
            raise ValueError("job_timeout must be positive or None")
        self._workers_wanted = workers
        self._devices = tuple(devices) if devices is not None else None
        self._job_timeout = job_timeout
        self._per_device = per_device
        self._preview_interval = preview_interval
        self._stop_grace = stop_grace

        self._loop: asyncio.AbstractEventLoop | None = None
        self._plan: list[str] = []  # the device of each worker slot
        self._threads = 1
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []  # a stack: the most recently idle worker is on top
        self._queue: collections.deque[PoolJob] = collections.deque()
        self._seqs = itertools.count(1)
        self._start_failures: collections.Counter[int] = collections.Counter()
        self._crash_streaks: collections.Counter[int] = collections.Counter()
        self._lost_slots: set[int] = set()
        self._last_failure = ""
        self._ready: asyncio.Event | None = None
        self._started: asyncio.Future[None] | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Choose devices and spawn the workers (idempotent; returns before they are ready)."""
        if self._closing:
            raise EngineError(SHUTTING_DOWN)
        if self._started is not None:
            await asyncio.shield(self._started)
            return
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._ready = asyncio.Event()
        try:
            devices = self._devices or await self._loop.run_in_executor(None, _detect_devices)
            self._plan = plan_workers(devices, self._workers_wanted, self._per_device)
            self._threads = max(1, _cpu_count() // len(self._plan))
            log.info(
                "starting %d worker(s) on %s, %d torch thread(s) each",
                len(self._plan),
                ", ".join(self._plan),
                self._threads,
            )
            for slot in range(len(self._plan)):
                self._spawn(slot)
        except BaseException as exc:
            self._started.set_exception(exc)
            self._started.exception()
            raise
        self._started.set_result(None)

    async def wait_ready(self) -> None:
        """Wait until every worker slot has a worker with the model loaded.

        Raises EngineError if the engine is closed or no worker could start at all.
        """
        await self.start()
        assert self._ready is not None
        await self._ready.wait()
        if self._closing:
            raise EngineError(SHUTTING_DOWN)
        if (error := self._start_failure()) is not None:
            raise error

    async def __aenter__(self) -> ProcessPoolEngine:
        await self.start()
        try:
            await self.wait_ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Fail queued and running jobs (EngineError), stop and join every worker process.

        Workers get `stop_grace` seconds to stop and exit, then SIGTERM, then SIGKILL.
        Idempotent; the engine cannot be restarted.
        """
        self._closing = True
        error = EngineError(SHUTTING_DOWN)
        while self._queue:
            self._queue.popleft()._finish(error=error)
        if self._ready is not None:
            self._ready.set()
        workers = list(self._workers)
        for w in workers:
            if w.job is not None:
                w.job._finish(error=error)
                w.stop.value = w.seq
            w.commands.put(None)  # the writer closes the pipe; the worker exits on EOF
        if not workers:
            return
        log.info("closing: waiting for %d worker(s) to exit", len(workers))
        pending = await self._wait_exit(workers, self._stop_grace)
        if pending:
            log.warning("terminating %d worker(s) that did not exit", len(pending))
            for w in pending:
                w.process.terminate()
            pending = await self._wait_exit(pending, TERMINATE_GRACE)
        for w in pending:
            log.warning("killing worker pid %s", w.pid)
            w.process.kill()
        for w in await self._wait_exit(pending, TERMINATE_GRACE):
            log.error("worker pid %s survived SIGKILL", w.pid)
        log.info("closed")

    # -- the Engine protocol -----------------------------------------------------------------

    async def submit(self, request: StyleRequest, *, timeout: float | None = None) -> PoolJob:
        """Queue a job; it runs on the next idle worker. Starts the engine if needed.

        timeout: seconds this job may run, instead of the engine's job_timeout (e.g. longer for
        high quality).
        """
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        await self.start()
        if self._closing:
            raise EngineError(SHUTTING_DOWN)
        if (error := self._start_failure()) is not None:
            raise error
        job = PoolJob(self, secrets.token_urlsafe(6), request, timeout or self._job_timeout)
        self._queue.append(job)
        log.info(
            "job %s queued (%s, size %d, %s, %d ahead)",
            job.id,
            "+".join(s.describe() for s in request.styles),
            request.size,
            request.quality,
            len(self._queue) - 1,
        )
        self._dispatch()
        return job

    def stats(self) -> EngineStats:
        """Workers ready, workers busy (including ones stopping a cancelled job), jobs queued,
        on this one machine, and the devices of the ready workers."""
        serving = [w for w in self._workers if w.serving]
        return EngineStats(
            painters=len(serving),
            busy=sum(w.job is not None for w in self._workers),
            queued=len(self._queue),
            nodes=1,
            devices=tuple(sorted({w.device for w in serving})),
        )

    def describe(self) -> str:
        """One line for logs and the bot's `about`: what paints, and where."""
        stats = self.stats()
        where = ", ".join(stats.devices) or "no device yet"
        return f"local process pool, {stats.painters} worker(s) on {where}"

    def pids(self) -> list[int]:
        """The process ids of the live workers, ready or not (for diagnostics)."""
        return [w.pid for w in self._workers]

    # -- scheduling --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._queue and self._idle and not self._closing:
            job = self._queue.popleft()
            w = self._idle.pop()
            w.job = job
            w.seq = next(self._seqs)
            job.worker_pid = w.pid
            w.commands.put(("job", w.seq, job.request))
            log.info("job %s started on worker pid %s (%s)", job.id, w.pid, w.device)
            if job.timeout is not None:
                w.timers.append(self._loop_().call_later(job.timeout, self._on_timeout, w, w.seq))

    def _cancel(self, job: PoolJob) -> None:
        if job.done:
            return
        job._finish(error=Cancelled())
        if job in self._queue:
            self._queue.remove(job)
            log.info("job %s cancelled while queued", job.id)
            return
        for w in self._workers:
            if w.job is job:
                log.info("job %s cancelled; stopping worker pid %s", job.id, w.pid)
                self._stop_job(w)

    def _on_timeout(self, w: _Worker, seq: int) -> None:
        if w.seq != seq or w.job is None or w.job.done:
            return
        log.warning("job %s timed out after %g s on worker pid %s", w.job.id, w.job.timeout, w.pid)
        w.job._finish(
            error=JobTimeout(
                f"The job took longer than {w.job.timeout:g} s and was stopped; "
                "try a smaller size or a lower quality."
            )
        )
        self._stop_job(w)

    def _stop_job(self, w: _Worker) -> None:
        """Ask the worker to stop its job; kill it if it is still on it after the grace period."""
        w.stop.value = w.seq
        w.timers.append(self._loop_().call_later(self._stop_grace, self._kill_if_stuck, w, w.seq))

    def _kill_if_stuck(self, w: _Worker, seq: int) -> None:
        if w.seq == seq and w.job is not None and w.process.is_alive():
            log.warning("worker pid %s did not stop job %s; killing it", w.pid, w.job.id)
            w.killed = True
            w.process.kill()
            self._update_ready()

    # -- worker processes --------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        if self._closing:
            return
        loop = self._loop_()
        commands_in, commands_out = _CONTEXT.Pipe(duplex=False)
        events_in, events_out = _CONTEXT.Pipe(duplex=False)
        stop = _CONTEXT.RawValue("q", 0)
        device = self._plan[slot]
        process = _CONTEXT.Process(
            target=worker_side.serve,
            name=f"nst-worker-{slot}",
            args=(
                slot,
                device,
                self._threads,
                commands_in,
                events_out,
                stop,
                self._preview_interval,
                logging.getLogger("nst_engine").getEffectiveLevel(),
            ),
            daemon=True,  # never outlive this process, even without close()
        )
        with without_secrets():
            process.start()
        commands_in.close()  # the child holds these ends now; closing ours lets EOF through
        events_out.close()
        assert process.pid is not None
        w = _Worker(
            slot, device, process, process.pid, queue.SimpleQueue(), stop, loop.create_future()
        )
        self._workers.append(w)
        log.info("worker pid %s spawned for %s (slot %d)", w.pid, device, slot)
        threading.Thread(
            target=_send_commands,
            args=(commands_out, w.commands),
            daemon=True,
            name=f"nst-pool-send-{w.pid}",
        ).start()
        threading.Thread(
            target=self._read_events,
            args=(w, events_in),
            daemon=True,
            name=f"nst-pool-read-{w.pid}",
        ).start()

    def _read_events(self, w: _Worker, conn: Connection) -> None:
        """Reader thread: forward messages to the loop; at EOF wait for the exit and report it."""
        loop = self._loop_()
        try:
            while True:
                message = conn.recv()
                loop.call_soon_threadsafe(self._on_message, w, message)
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("lost contact with worker pid %s; killing it", w.pid)
            w.process.kill()
        finally:
            conn.close()
        wait([w.process.sentinel])
        try:
            loop.call_soon_threadsafe(self._on_exit, w)
        except RuntimeError:
            log.warning("worker pid %s exited after its event loop closed", w.pid)

    def _on_message(self, w: _Worker, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            w.ready = True
            w.ready_at = self._loop_().time()
            w.device = message[1]
            self._start_failures[w.slot] = 0
            log.info("worker pid %s ready on %s", w.pid, w.device)
            self._make_idle(w)
            self._update_ready()
        elif kind == "failed":
            w.failure = message[1]
        elif kind == "progress":
            if message[1] == w.seq and w.job is not None and not w.job.done:
                w.job._publish(message[2])
        elif kind in ("done", "error"):
            if message[1] != w.seq or w.job is None:
                return
            job = w.job
            w.job = None
            w.clear_timers()
            if kind == "done":
                log.info("job %s done on worker pid %s", job.id, w.pid)
                job._finish(result=message[2])
            else:
                log.info("job %s ended on worker pid %s: %s", job.id, w.pid, message[3])
                job._finish(error=worker_side.ERROR_KINDS[message[2]](message[3]))
            self._make_idle(w)
        else:
            log.error("unknown message %r from worker pid %s", kind, w.pid)

    def _make_idle(self, w: _Worker) -> None:
        if self._closing:
            return
        self._idle.append(w)
        self._dispatch()

    def _on_exit(self, w: _Worker) -> None:
        w.process.join()  # already over (its sentinel fired); this reaps it
        code = w.process.exitcode
        w.process.close()  # its sentinel fd
        w.commands.put(None)  # ends the writer thread, which closes the command pipe
        w.clear_timers()
        self._workers.remove(w)
        if w in self._idle:
            self._idle.remove(w)
        w.exited.set_result(code)
        job, w.job = w.job, None
        if self._closing:
            return
        log.warning("worker pid %s (slot %d) exited with code %s", w.pid, w.slot, code)
        if job is not None and not job.done:
            if job.crashes == 0:
                job.crashes = 1
                log.warning("job %s lost its worker; retrying it on a fresh one", job.id)
                self._queue.appendleft(job)
            else:
                log.error("job %s lost its worker twice; giving up", job.id)
                job._finish(error=EngineError(CRASHED_TWICE))
        if w.ready:
            self._respawn_after_crash(w)
        else:
            self._respawn_after_start_failure(w, code)
        self._update_ready()
        self._dispatch()

    def _respawn_after_crash(self, w: _Worker) -> None:
        """Replace a worker that died after it was ready: at once, or later in a crash loop."""
        if self._loop_().time() - w.ready_at < CRASH_STREAK_WINDOW:
            self._crash_streaks[w.slot] += 1
        else:
            self._crash_streaks[w.slot] = 1
        streak = self._crash_streaks[w.slot]
        if streak == 1:
            self._spawn(w.slot)
            return
        delay = min(MAX_CRASH_BACKOFF, CRASH_BACKOFF * 2.0 ** (streak - 2))
        log.warning(
            "worker slot %d crashed %d times in a row; respawning in %g s", w.slot, streak, delay
        )
        self._loop_().call_later(delay, self._spawn, w.slot)

    def _respawn_after_start_failure(self, w: _Worker, code: int | None) -> None:
        self._last_failure = w.failure or f"the worker process exited with code {code}"
        self._start_failures[w.slot] += 1
        failures = self._start_failures[w.slot]
        if failures < MAX_START_FAILURES:
            delay = 2.0 ** (failures - 1)
            log.warning("worker slot %d failed to start; retrying in %g s", w.slot, delay)
            self._loop_().call_later(delay, self._spawn, w.slot)
            return
        log.error("worker slot %d failed to start %d times; giving it up", w.slot, failures)
        self._lost_slots.add(w.slot)
        if (error := self._start_failure()) is not None:
            while self._queue:
                self._queue.popleft()._finish(error=error)

    def _start_failure(self) -> EngineError | None:
        """The error for every job once all worker slots are given up; None while any is left."""
        if len(self._lost_slots) < len(self._plan):
            return None
        return EngineError(f"The painter could not start: {self._last_failure}")

    def _update_ready(self) -> None:
        assert self._ready is not None
        wanted = len(self._plan) - len(self._lost_slots)
        if self._closing or sum(w.serving for w in self._workers) >= wanted:
            self._ready.set()
        else:
            self._ready.clear()

    async def _wait_exit(self, workers: list[_Worker], timeout: float | None) -> list[_Worker]:
        """Wait up to `timeout` for the workers to exit; return those still running."""
        if workers:
            await asyncio.wait([w.exited for w in workers], timeout=timeout)
        return [w for w in workers if not w.exited.done()]

    def _loop_(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "start() the engine first"
        return self._loop


def plan_workers(devices: Sequence[str], workers: int | None, per_device: int) -> list[str]:
    """The device of each worker: `per_device` per device, or `workers` dealt out in turn."""
    count = workers or len(devices) * per_device
    return [devices[i % len(devices)] for i in range(count)]


def _send_commands(conn: Connection, commands: queue.SimpleQueue[tuple | None]) -> None:
    """Writer thread: send each command to the worker; None (or a dead worker) closes the pipe."""
    try:
        while (command := commands.get()) is not None:
            conn.send(command)
    except OSError:
        pass  # the worker died; its reader thread reports that
    finally:
        conn.close()


@contextlib.contextmanager
def without_secrets() -> Iterator[None]:
    """Hide SECRET_ENV from the processes started meanwhile."""
    saved = {name: os.environ.pop(name) for name in SECRET_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _detect_devices() -> list[str]:
    """Ask a short-lived child process which CUDA devices torch sees (else ["cpu"])."""
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    probe = _CONTEXT.Process(target=worker_side.report_devices, args=(sender,), daemon=True)
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


def _cpu_count() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
