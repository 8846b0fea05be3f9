"""RayEngine: the Engine contract on a Ray cluster, painting in actors that keep VGG19 loaded.

    engine = RayEngine(address="10.0.0.5:6379")    # None starts a local cluster; "auto" finds one
    await engine.start(); await engine.wait_ready()
    job = await engine.submit(request)             # as with ProcessPoolEngine
    await engine.close()

Painters are Ray actors pinned to one node each: `painters_per_node` per GPU on nodes with GPUs
(a fraction of the GPU each), or, when the cluster has no GPU at all, `painters_per_node` per
node sharing its CPUs. Each loads the model once and keeps its style-target cache. Every
`poll_interval` seconds the engine reads the cluster's nodes: a node that joined gets painters,
a node that left loses them and their jobs are retried elsewhere, a painter that died is
replaced (at once, then with a growing delay if its node keeps losing them just after start).

Jobs wait here in FIFO order and go to the most recently idle painter. `Painter.paint` is a
streaming generator: progress messages (throttled in the painter, as in pool workers), then the
message that ends the job. The event loop only ever awaits object refs; the few blocking calls
(connecting, listing nodes, shutting down) run in an executor thread. Cancel and timeout set the
painter's stop flag through a second, concurrent method of the (threaded) actor, so a running job
stops within one step; a painter that does not stop within `stop_grace` seconds is killed. A job
whose painter or node is lost is retried once on another painter; a second loss fails it with
EngineError.

Ray keeps one connection per process, so a process runs one RayEngine at a time. If Ray is
already initialised (e.g. by a test), the engine uses that connection and leaves it open;
otherwise close() disconnects, and stops the local cluster it started. This module imports ray
but never torch: torch is imported inside the painters only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import queue
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import worker as worker_side
from .api import Cancelled, EngineError, EngineStats, JobTimeout, StyleRequest
from .pool import (
    CRASH_BACKOFF,
    CRASH_STREAK_WINDOW,
    CRASHED_TWICE,
    MAX_CRASH_BACKOFF,
    MAX_START_FAILURES,
    SHUTTING_DOWN,
    PoolJob,
    without_secrets,
)

log = logging.getLogger(__name__)


class RayJob(PoolJob):
    """A job submitted to a RayEngine (implements `api.Job`).

    `worker_pid` is the pid of the painter running (or that last ran) it, `node_id` its node.
    """

    node_id: str | None = None

    def __repr__(self) -> str:
        return f"<RayJob {self.id} done={self.done}>"


class Painter:
    """The actor: one model on one device, painting one job at a time (see the module doc)."""

    def __init__(self, threads: int, preview_interval: float, log_level: int) -> None:
        logging.basicConfig(
            level=log_level,
            format="%(asctime)s %(levelname)s [painter pid %(process)d] %(message)s",
        )
        worker_side.setup_threads(threads)
        from . import transfer, vgg

        self._transfer = transfer
        self._device = vgg.pick_device("cuda:0" if ray.get_gpu_ids() else "cpu")
        vgg.load_model(self._device)
        self._preview_interval = preview_interval
        self._stop = 0
        log.info("ready on %s with %d thread(s)", self._device, threads)

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
_PainterActor = ray.remote(max_restarts=0, max_concurrency=3)(Painter)


@dataclass(frozen=True)
class PainterSpec:
    """How many painters a node gets, and what each reserves."""

    count: int
    num_cpus: float
    num_gpus: float
    threads: int


def painter_spec(resources: dict[str, float], per_node: int, use_gpus: bool) -> PainterSpec | None:
    """The painters for a node with these Ray resources; None if it should have none.

    With GPUs in the cluster only GPU nodes paint, `per_node` painters per GPU; otherwise each
    node with CPUs gets `per_node` painters (at most one per CPU) that split its CPUs.
    """
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 0))
    if use_gpus:
        if gpus == 0:
            return None
        count = gpus * per_node
        return PainterSpec(count, 0, round(1 / per_node, 4), max(1, cpus // count))
    if cpus == 0:
        return None
    count = min(per_node, cpus)
    return PainterSpec(count, cpus // count, 0, cpus // count)


@dataclass(eq=False)
class _Painter:
    """The engine's handle on one painter actor."""

    actor: Any
    node_id: str
    pid: int = 0
    device: str = ""
    ready: bool = False
    ready_at: float = 0.0  # loop time
    killed: bool = False  # by the engine; its loss is still to come
    job: RayJob | None = None
    seq: int = 0
    task: asyncio.Task[None] | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def serving(self) -> bool:
        return self.ready and not self.killed

    def clear_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class RayEngine:
    """An `Engine` whose painters are Ray actors spread over a cluster's nodes.

    address: the cluster ("host:6379", "auto", "ray://host:10001"); None starts a local one
    with `num_cpus` CPUs (default: all). painters_per_node: painters per GPU, or per CPU-only
    node when the cluster has no GPU. job_timeout, preview_interval, stop_grace: as for
    ProcessPoolEngine. poll_interval: seconds between looks at the cluster's nodes.
    """

    def __init__(
        self,
        address: str | None = None,
        painters_per_node: int = 1,
        job_timeout: float | None = 600.0,
        preview_interval: float = 3.0,
        *,
        stop_grace: float = 10.0,
        poll_interval: float = 2.0,
        num_cpus: int | None = None,
    ) -> None:
        if painters_per_node < 1:
            raise ValueError("painters_per_node must be at least 1")
        if job_timeout is not None and job_timeout <= 0:
            raise ValueError("job_timeout must be positive or None")
        self._address = address
        self._per_node = painters_per_node
        self._job_timeout = job_timeout
        self._preview_interval = preview_interval
        self._stop_grace = stop_grace
        self._poll_interval = poll_interval
        self._num_cpus = num_cpus

        self._loop: asyncio.AbstractEventLoop | None = None
        self._owns_connection = False
        self._gcs_address = ""
        self._painters: list[_Painter] = []
        self._idle: list[_Painter] = []  # a stack: the most recently idle painter is on top
        self._queue: collections.deque[RayJob] = collections.deque()
        self._seqs = itertools.count(1)
        self._wanted: dict[str, int] = {}  # painters per alive node, from the last poll
        self._start_failures: collections.Counter[str] = collections.Counter()
        self._crash_streaks: collections.Counter[str] = collections.Counter()
        self._not_before: dict[str, float] = {}  # node → loop time of its next painter
        self._last_failure = ""
        self._ready: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (or start a local cluster) and create the painters (idempotent)."""
        if self._closing:
            raise EngineError(SHUTTING_DOWN)
        if self._started is not None:
            await asyncio.shield(self._started)
            return
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        try:
            await self._loop.run_in_executor(None, self._connect)
            await self._poll()
        except BaseException as exc:
            self._started.set_exception(exc)
            self._started.exception()
            raise
        self._watcher = self._loop.create_task(self._watch())
        self._started.set_result(None)

    async def wait_ready(self) -> None:
        """Wait until every painter the cluster has room for has loaded the model.

        Returns at once if the cluster has no room yet (jobs then wait for a node to join); a
        painter that Ray cannot place because other work holds its node's resources keeps it
        waiting.
        Raises EngineError if the engine is closed or no painter could start on any node.
        """
        await self.start()
        assert self._ready is not None
        await self._ready.wait()
        if self._closing:
            raise EngineError(SHUTTING_DOWN)
        if (error := self._start_failure()) is not None:
            raise error

    async def __aenter__(self) -> RayEngine:
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
        """Fail queued and running jobs (EngineError), kill the painters, disconnect.

        Idempotent; the engine cannot be restarted.
        """
        if self._closing:
            return
        self._closing = True
        error = EngineError(SHUTTING_DOWN)
        while self._queue:
            self._queue.popleft()._finish(error=error)
        if self._ready is not None:
            self._ready.set()
        tasks = [t for t in (self._watcher, *(p.task for p in self._painters)) if t is not None]
        for p in self._painters:
            if p.job is not None:
                p.job._finish(error=error)
            p.clear_timers()
            _kill(p.actor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._painters.clear()
        self._idle.clear()
        if self._owns_connection:
            assert self._loop is not None
            await self._loop.run_in_executor(None, ray.shutdown)
        log.info("closed")

    # -- the Engine protocol -----------------------------------------------------------------

    async def submit(self, request: StyleRequest, *, timeout: float | None = None) -> RayJob:
        """Queue a job; it runs on the next idle painter. Starts the engine if needed.

        timeout: seconds this job may run, instead of the engine's job_timeout.
        """
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        await self.start()
        if self._closing:
            raise EngineError(SHUTTING_DOWN)
        if (error := self._start_failure()) is not None:
            raise error
        job = RayJob(self, secrets.token_urlsafe(6), request, timeout or self._job_timeout)
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
        """Painters ready, painters busy, jobs queued, nodes with a ready painter, devices."""
        serving = [p for p in self._painters if p.serving]
        return EngineStats(
            painters=len(serving),
            busy=sum(p.job is not None for p in self._painters),
            queued=len(self._queue),
            nodes=len({p.node_id for p in serving}),
            devices=tuple(sorted({p.device for p in serving})),
        )

    def describe(self) -> str:
        """One line for logs and the bot's `about`: where the cluster is and what paints."""
        stats = self.stats()
        devices = ", ".join(stats.devices) or "no device yet"
        return (
            f"ray at {self._gcs_address or self._address or 'a local cluster'}, "
            f"{stats.painters} painters on {stats.nodes} nodes ({devices})"
        )

    def pids(self) -> list[int]:
        """The process ids of the ready painters (for diagnostics and tests)."""
        return [p.pid for p in self._painters if p.ready]

    def placements(self) -> dict[str, str]:
        """Each running job's id → the node id of its painter."""
        return {p.job.id: p.node_id for p in self._painters if p.job is not None}

    # -- the cluster ---------------------------------------------------------------------------

    def _connect(self) -> None:
        """Executor thread: join the cluster at `address`, or start a local one."""
        if ray.is_initialized():
            log.info("using this process's existing Ray connection")
        else:
            options: dict[str, Any] = {"log_to_driver": False}
            if self._address is None:
                options |= {"num_cpus": self._num_cpus, "include_dashboard": False}
            try:
                with without_secrets():  # the local cluster's processes
                    ray.init(address=self._address, **options)
            except ConnectionError as exc:
                raise EngineError(
                    f"Could not connect to the Ray cluster at {self._address}: "
                    f"{_first_line(exc)} If the cluster uses token authentication (Ray's "
                    "default), set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (`ray get-auth-token` "
                    "on the head) in this process's environment."
                ) from exc
            self._owns_connection = True
        self._gcs_address = ray.get_runtime_context().gcs_address
        log.info("connected to the Ray cluster at %s", self._gcs_address)

    async def _watch(self) -> None:
        """Look at the cluster's nodes every poll_interval (or sooner when woken)."""
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()
            try:
                await self._poll()
            except Exception as exc:  # the head unreachable, or a reply Ray could not parse
                log.warning("could not read the cluster's nodes: %s", _first_line(exc))

    async def _poll(self) -> None:
        """Match the painters to the alive nodes: drop those on nodes gone, add missing ones."""
        loop = self._loop_()
        nodes = await loop.run_in_executor(None, ray.nodes)
        alive = {n["NodeID"]: n.get("Resources", {}) for n in nodes if n.get("Alive")}
        for p in list(self._painters):
            if p.node_id not in alive:
                self._lose(p, "its machine left the cluster")
        use_gpus = any(r.get("GPU", 0) >= 1 for r in alive.values())
        self._wanted = {}
        for node_id, resources in alive.items():
            spec = painter_spec(resources, self._per_node, use_gpus)
            if spec is None or self._start_failures[node_id] >= MAX_START_FAILURES:
                continue
            self._wanted[node_id] = spec.count
            if loop.time() < self._not_before.get(node_id, 0.0):
                continue
            have = sum(p.node_id == node_id for p in self._painters)
            for _ in range(spec.count - have):
                self._create(node_id, spec)
        self._update_ready()
        self._fail_queue_if_hopeless()

    def _create(self, node_id: str, spec: PainterSpec) -> None:
        if self._closing:
            return
        actor = _PainterActor.options(
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(
            spec.threads,
            self._preview_interval,
            logging.getLogger("nst_engine").getEffectiveLevel(),
        )
        p = _Painter(actor, node_id)
        self._painters.append(p)
        p.task = self._loop_().create_task(self._bring_up(p))
        log.info("painter created on node %s (%d thread(s))", node_id[:8], spec.threads)

    async def _bring_up(self, p: _Painter) -> None:
        """Wait for a new painter to load the model, then put it to work."""
        try:
            p.pid, p.device = await p.actor.info.remote()
        except RayError as exc:
            self._last_failure = _first_line(exc)
            self._start_failures[p.node_id] += 1
            log.warning(
                "painter on node %s failed to start (%d): %s",
                p.node_id[:8],
                self._start_failures[p.node_id],
                self._last_failure,
            )
            self._lose(p, "it failed to start")
            return
        p.ready = True
        p.ready_at = self._loop_().time()
        self._start_failures[p.node_id] = 0
        log.info("painter pid %s ready on %s, node %s", p.pid, p.device, p.node_id[:8])
        self._make_idle(p)
        self._update_ready()

    def _lose(self, p: _Painter, why: str) -> None:
        """Forget a painter that died, left or was killed; retry its job once; replace it soon."""
        if p not in self._painters:
            return
        self._painters.remove(p)
        if p in self._idle:
            self._idle.remove(p)
        p.clear_timers()
        if p.task is not None and p.task is not asyncio.current_task():
            p.task.cancel()
        _kill(p.actor)
        if self._closing:
            return
        if p.ready:
            log.warning("painter pid %s on node %s lost: %s", p.pid, p.node_id[:8], why)
        job, p.job = p.job, None
        if job is not None and not job.done:
            if job.crashes == 0:
                job.crashes = 1
                log.warning("job %s lost its painter; retrying it on another", job.id)
                self._queue.appendleft(job)
            else:
                log.error("job %s lost its painter twice; giving up", job.id)
                job._finish(error=EngineError(CRASHED_TWICE))
        if p.ready and not p.killed:
            self._back_off(p)
        self._update_ready()
        self._dispatch()
        self._fail_queue_if_hopeless()
        assert self._wake is not None
        self._wake.set()  # replace it

    def _back_off(self, p: _Painter) -> None:
        """A node that keeps losing painters soon after they start waits longer each time."""
        loop = self._loop_()
        if loop.time() - p.ready_at < CRASH_STREAK_WINDOW:
            self._crash_streaks[p.node_id] += 1
        else:
            self._crash_streaks[p.node_id] = 1
        streak = self._crash_streaks[p.node_id]
        if streak > 1:
            delay = min(MAX_CRASH_BACKOFF, CRASH_BACKOFF * 2.0 ** (streak - 2))
            log.warning(
                "node %s lost %d painters in a row; next in %g s", p.node_id[:8], streak, delay
            )
            self._not_before[p.node_id] = loop.time() + delay

    def _start_failure(self) -> EngineError | None:
        """The error for every job once no node can start a painter; None while one might."""
        given_up = [n for n, count in self._start_failures.items() if count >= MAX_START_FAILURES]
        if self._painters or self._wanted or not given_up:
            return None
        return EngineError(f"The painter could not start: {self._last_failure}")

    def _fail_queue_if_hopeless(self) -> None:
        if (error := self._start_failure()) is not None:
            while self._queue:
                self._queue.popleft()._finish(error=error)

    def _update_ready(self) -> None:
        assert self._ready is not None
        serving = sum(p.serving for p in self._painters)
        if self._closing or serving >= sum(self._wanted.values()):
            self._ready.set()
        else:
            self._ready.clear()

    # -- scheduling --------------------------------------------------------------------------

    def _make_idle(self, p: _Painter) -> None:
        if self._closing or p not in self._painters:
            return
        self._idle.append(p)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and self._idle and not self._closing:
            job = self._queue.popleft()
            p = self._idle.pop()
            p.job = job
            p.seq = next(self._seqs)
            job.worker_pid = p.pid
            job.node_id = p.node_id
            p.task = self._loop_().create_task(self._paint(p, job, p.seq))
            log.info("job %s started on painter pid %s (%s)", job.id, p.pid, p.device)
            if job.timeout is not None:
                p.timers.append(self._loop_().call_later(job.timeout, self._on_timeout, p, p.seq))

    async def _paint(self, p: _Painter, job: RayJob, seq: int) -> None:
        """Stream one job attempt's messages from its painter into the job."""
        try:
            async for ref in p.actor.paint.remote(seq, job.request):
                message = await ref
                if message[0] == "progress":
                    if not job.done:
                        job._publish(message[2])
                    continue
                if message[0] == "done":
                    log.info("job %s done on painter pid %s", job.id, p.pid)
                    job._finish(result=message[2])
                else:
                    log.info("job %s ended on painter pid %s: %s", job.id, p.pid, message[3])
                    job._finish(error=worker_side.ERROR_KINDS[message[2]](message[3]))
                break  # the painter is free as soon as it has sent the job's end
        except RayError as exc:
            self._lose(p, _first_line(exc))
            return
        p.job = None
        p.clear_timers()
        self._make_idle(p)

    def _cancel(self, job: PoolJob) -> None:
        if job.done:
            return
        job._finish(error=Cancelled())
        if job in self._queue:
            self._queue.remove(job)  # type: ignore[arg-type]
            log.info("job %s cancelled while queued", job.id)
            return
        for p in self._painters:
            if p.job is job:
                log.info("job %s cancelled; stopping painter pid %s", job.id, p.pid)
                self._stop_job(p)

    def _on_timeout(self, p: _Painter, seq: int) -> None:
        if p.seq != seq or p.job is None or p.job.done:
            return
        log.warning("job %s timed out after %g s on painter pid %s", p.job.id, p.job.timeout, p.pid)
        p.job._finish(
            error=JobTimeout(
                f"The job took longer than {p.job.timeout:g} s and was stopped; "
                "try a smaller size or a lower quality."
            )
        )
        self._stop_job(p)

    def _stop_job(self, p: _Painter) -> None:
        """Ask the painter to stop its job; kill it if it is still on it after the grace period."""
        p.actor.stop.remote(p.seq)
        p.timers.append(self._loop_().call_later(self._stop_grace, self._kill_if_stuck, p, p.seq))

    def _kill_if_stuck(self, p: _Painter, seq: int) -> None:
        if p.seq == seq and p.job is not None and p in self._painters:
            log.warning("painter pid %s did not stop job %s; killing it", p.pid, p.job.id)
            p.killed = True
            _kill(p.actor)
            self._update_ready()

    def _loop_(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "start() the engine first"
        return self._loop


def _kill(actor: Any) -> None:
    """Kill an actor; one that is already gone is fine."""
    with contextlib.suppress(RayError, ValueError):
        ray.kill(actor, no_restart=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
