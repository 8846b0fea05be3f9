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

Devices, workers per device and jobs per worker come from `placement` (`devices=None`: every
CUDA device torch sees, else the CPU). A worker is `placement.lanes` painters ("lanes") to the
scheduler, each with its own job, seq, stop flag, timeout and retry; it paints the waiting jobs
that share a schedule as one batch (see `worker`). Idle lanes take queued jobs in FIFO order,
the most recently idle first (its caches are warm). Workers run `nice` steps below this
process's CPU priority, so the bot beside them keeps answering while they paint.

Each process has two daemon threads here: one blocks on the worker's event pipe and hands every
message to the loop with `call_soon_threadsafe`, then waits for the process to end and reports
that; the other sends commands, so a large request never blocks the loop. Both end, and every
pipe of the worker is closed, when it exits; its lanes go with it. A worker that dies after it
was ready is replaced at once; one that keeps dying soon after start, after a growing delay.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, ClassVar

from . import placement
from . import worker as worker_side
from .api import EngineError
from .dispatch import CRASH_BACKOFF as CRASH_BACKOFF
from .dispatch import MAX_START_FAILURES, Dispatcher, Slot, without_secrets
from .jobs import EngineJob

log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("spawn")
# Seconds a process gets to exit after SIGTERM (in close) before SIGKILL.
TERMINATE_GRACE = 3.0


class PoolJob(EngineJob):
    """A job submitted to a ProcessPoolEngine (implements `api.Job`).

    `worker_pid` is the process running (or that last ran) the job, for logs and diagnostics.
    """


@dataclass(eq=False)
class _Process:
    """The parent's handle on one worker process and the lanes it paints for."""

    slot: int
    pid: int
    process: BaseProcess
    commands: queue.SimpleQueue[tuple | None]
    stops: Any  # RawArray('q'), one per lane: the seq the worker should stop there
    exited: asyncio.Future[int | None]
    lanes: list[_Worker] = field(default_factory=list)
    failure: str | None = None


@dataclass(eq=False)
class _Worker(Slot[PoolJob]):
    """One lane of a worker process: a painter as the scheduler sees it (one job at a time)."""

    proc: _Process
    lane: int


class ProcessPoolEngine(Dispatcher[PoolJob, _Worker]):
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
    batch_max: jobs a CUDA worker may paint as one batch (1: one at a time); `batch_on_cpu`
    applies it to CPU workers too (see `placement.lanes`).
    nice: how much lower the workers' CPU priority is than this process's (0: the same).
    """

    _log: ClassVar[logging.Logger] = log
    _job_class = PoolJob
    _noun = "worker"
    _retry_on = "a fresh one"

    def __init__(
        self,
        workers: int | None = None,
        devices: Sequence[str] | None = None,
        job_timeout: float | None = 600.0,
        per_device: int = 1,
        preview_interval: float = 3.0,
        *,
        stop_grace: float = 10.0,
        batch_max: int = 1,
        batch_on_cpu: bool = False,
        nice: int = 10,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        if per_device < 1:
            raise ValueError("per_device must be at least 1")
        if devices is not None and not devices:
            raise ValueError("devices must name at least one device")
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        if nice < 0:
            raise ValueError("nice must be 0 or more")
        super().__init__(job_timeout, preview_interval, stop_grace)
        self._workers_wanted = workers
        self._devices = tuple(devices) if devices is not None else None
        self._per_device = per_device
        self._batch_max = batch_max
        self._batch_on_cpu = batch_on_cpu
        self._nice = nice
        self._plan: list[str] = []  # the device of each worker slot
        self._threads = 1
        self._lost_slots: set[int] = set()
        self._procs: list[_Process] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def _start_up(self) -> None:
        """Choose devices and spawn the workers without waiting for them."""
        loop = self._loop_()
        devices = self._devices or await loop.run_in_executor(None, placement.detect_devices)
        self._plan = placement.plan_workers(devices, self._workers_wanted, self._per_device)
        self._threads = placement.threads_per_worker(len(self._plan))
        log.info(
            "starting %d worker(s) on %s, %d torch thread(s) each",
            len(self._plan),
            ", ".join(self._plan),
            self._threads,
        )
        for slot in range(len(self._plan)):
            self._spawn(slot)

    async def close(self) -> None:
        """Fail queued and running jobs (EngineError), stop and join every worker process.

        Workers get `stop_grace` seconds to stop and exit, then SIGTERM, then SIGKILL.
        Idempotent; the engine cannot be restarted.
        """
        error = self._begin_close()
        workers = list(self._procs)
        for w in workers:
            for lane in w.lanes:
                if lane.job is not None:
                    lane.job._finish(error=error)
                    self._signal_stop(lane)
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

    def describe(self) -> str:
        """One line for logs and the bot's `about`: what paints, and where."""
        stats = self.stats()
        where = ", ".join(stats.devices) or "no device yet"
        workers = len({w.proc for w in self._slots if w.serving})
        batch = max((w.lane + 1 for w in self._slots if w.serving), default=1)
        batching = f"batches of up to {batch} jobs" if batch > 1 else "one job at a time"
        return f"local process pool, {workers} worker(s) on {where}, {batching} each"

    def pids(self) -> list[int]:
        """The process ids of the live workers, ready or not (for diagnostics)."""
        return [w.pid for w in self._procs]

    # -- the Dispatcher's hooks --------------------------------------------------------------

    def _start_on(self, w: _Worker, job: PoolJob) -> None:
        w.proc.commands.put(("job", w.seq, job.request, w.lane))

    def _signal_stop(self, w: _Worker) -> None:
        w.proc.stops[w.lane] = w.seq

    def _still_running(self, w: _Worker) -> bool:
        return w.proc.process.is_alive()

    def _kill_painter(self, w: _Worker) -> None:
        w.proc.process.kill()

    def _wanted(self) -> int:
        return sum(
            placement.lanes(device, self._batch_max, self._batch_on_cpu)
            for slot, device in enumerate(self._plan)
            if slot not in self._lost_slots
        )

    def _nodes(self, serving: list[_Worker]) -> int:
        return 1

    def _start_failure(self) -> EngineError | None:
        """The error for every job once all worker slots are given up; None while any is left."""
        if len(self._lost_slots) < len(self._plan):
            return None
        return EngineError(f"The painter could not start: {self._last_failure}")

    # -- worker processes --------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        if self._closing:
            return
        loop = self._loop_()
        commands_in, commands_out = _CONTEXT.Pipe(duplex=False)
        events_in, events_out = _CONTEXT.Pipe(duplex=False)
        device = self._plan[slot]
        lanes = placement.lanes(device, self._batch_max, self._batch_on_cpu)
        stops = _CONTEXT.RawArray("q", lanes)
        process = _CONTEXT.Process(
            target=worker_side.serve,
            name=f"nst-worker-{slot}",
            args=(
                worker_side.WorkerSetup(
                    index=slot,
                    device=device,
                    threads=self._threads,
                    lanes=lanes,
                    nice=self._nice,
                    preview_interval=self._preview_interval,
                    log_level=logging.getLogger("nst_engine").getEffectiveLevel(),
                ),
                commands_in,
                events_out,
                stops,
            ),
            daemon=True,  # never outlive this process, even without close()
        )
        with without_secrets():
            process.start()
        commands_in.close()  # the child holds these ends now; closing ours lets EOF through
        events_out.close()
        assert process.pid is not None
        w = _Process(slot, process.pid, process, queue.SimpleQueue(), stops, loop.create_future())
        w.lanes = [_Worker(proc=w, lane=i, pid=w.pid, device=device) for i in range(lanes)]
        self._procs.append(w)
        self._slots.extend(w.lanes)
        log.info("worker pid %s spawned for %s (slot %d, %d lane(s))", w.pid, device, slot, lanes)
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

    def _read_events(self, w: _Process, conn: Connection) -> None:
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

    def _on_message(self, w: _Process, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            now = self._loop_().time()
            self._start_failures[w.slot] = 0
            log.info("worker pid %s ready on %s", w.pid, message[1])
            for lane in w.lanes:
                lane.ready, lane.ready_at, lane.device = True, now, message[1]
                self._make_idle(lane)
            self._update_ready()
        elif kind == "failed":
            w.failure = message[1]
        elif kind in ("progress", "done", "error"):
            lane = next((x for x in w.lanes if x.seq == message[1] and x.job is not None), None)
            if lane is None or lane.job is None:
                return  # a stale message: that attempt has ended
            if kind == "progress":
                if not lane.job.done:
                    lane.job._publish(message[2])
                return
            job = lane.job
            lane.job = None
            lane.clear_timers()
            if kind == "done":
                log.info("job %s done on worker pid %s", job.id, w.pid)
                job._finish(result=message[2])
            else:
                log.info("job %s ended on worker pid %s: %s", job.id, w.pid, message[3])
                job._finish(error=worker_side.ERROR_KINDS[message[2]](message[3]))
            self._make_idle(lane)
        else:
            log.error("unknown message %r from worker pid %s", kind, w.pid)

    def _on_exit(self, w: _Process) -> None:
        w.process.join()  # already over (its sentinel fired); this reaps it
        code = w.process.exitcode
        w.process.close()  # its sentinel fd
        w.commands.put(None)  # ends the writer thread, which closes the command pipe
        self._procs.remove(w)
        jobs = []
        for lane in w.lanes:
            lane.clear_timers()
            self._slots.remove(lane)
            if lane in self._idle:
                self._idle.remove(lane)
            jobs.append(lane.job)
            lane.job = None
        w.exited.set_result(code)
        if self._closing:
            return
        log.warning("worker pid %s (slot %d) exited with code %s", w.pid, w.slot, code)
        for job in jobs:
            self._retry_or_give_up(job)
        if w.lanes[0].ready:
            self._respawn_after_crash(w)
        else:
            self._respawn_after_start_failure(w, code)
        self._update_ready()
        self._dispatch()

    def _respawn_after_crash(self, w: _Process) -> None:
        """Replace a worker that died after it was ready: at once, or later in a crash loop."""
        streak, delay = self._crash_delay(w.slot, w.lanes[0].ready_at)
        if streak == 1:
            self._spawn(w.slot)
            return
        log.warning(
            "worker slot %d crashed %d times in a row; respawning in %g s", w.slot, streak, delay
        )
        self._loop_().call_later(delay, self._spawn, w.slot)

    def _respawn_after_start_failure(self, w: _Process, code: int | None) -> None:
        failures = self._count_start_failure(
            w.slot, w.failure or f"the worker process exited with code {code}"
        )
        if failures < MAX_START_FAILURES:
            delay = 2.0 ** (failures - 1)
            log.warning("worker slot %d failed to start; retrying in %g s", w.slot, delay)
            self._loop_().call_later(delay, self._spawn, w.slot)
            return
        log.error("worker slot %d failed to start %d times; giving it up", w.slot, failures)
        self._lost_slots.add(w.slot)
        self._fail_queue_if_hopeless()

    async def _wait_exit(self, workers: list[_Process], timeout: float | None) -> list[_Process]:
        """Wait up to `timeout` for the workers to exit; return those still running."""
        if workers:
            await asyncio.wait([w.exited for w in workers], timeout=timeout)
        return [w for w in workers if not w.exited.done()]


def _send_commands(conn: Connection, commands: queue.SimpleQueue[tuple | None]) -> None:
    """Writer thread: send each command to the worker; None (or a dead worker) closes the pipe."""
    try:
        while (command := commands.get()) is not None:
            conn.send(command)
    except OSError:
        pass  # the worker died; its reader thread reports that
    finally:
        conn.close()
