"""RayEngine: the Engine contract on a Ray cluster, painting in actors that keep VGG19 loaded.

    engine = RayEngine(address="10.0.0.5:6379")    # None starts a local cluster; "auto" finds one
    await engine.start(); await engine.wait_ready()
    job = await engine.submit(request)             # as with ProcessPoolEngine
    await engine.close()

Painters are Ray actors (`ray_painter.Painter`) pinned to one node each: `painters_per_node`
per GPU on nodes with GPUs (a fraction of the GPU each), or, when the cluster has no GPU at all,
`painters_per_node` per node sharing its CPUs. Each loads the model once, keeps its style-target
cache, and runs at a lower CPU priority (`nice`). Every `poll_interval` seconds the engine
reads the cluster's nodes: a node that joined gets painters, a node that left loses them and
their jobs are retried elsewhere, a painter that died is replaced (at once, then with a growing
delay if its node keeps losing them just after start).

Jobs wait here in FIFO order and go to the most recently idle painter. `Painter.paint` is a
streaming generator: progress messages (throttled in the painter), then the message that ends
the job. The event loop only ever awaits object refs; the few blocking calls (connecting,
listing nodes, shutting down) run in an executor thread. Cancel and timeout set the painter's
stop flag through a second, concurrent actor method, so a running job stops within one step; a
painter that does not stop within `stop_grace` seconds is killed. A job whose painter or node is
lost is retried once on another painter; a second loss fails it with EngineError.

The cluster the engine starts itself (no address), and one at a loopback address, are kept on
loopback with usage statistics off (`ray_local`); any other address is the operator's cluster.
Ray keeps one connection per process, so a process runs one RayEngine at a time. If Ray is
already initialised (e.g. by a test), the engine uses that connection and leaves it open;
otherwise close() disconnects, and stops the local cluster it started. This module imports ray
but never torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import ray_local
from . import worker as worker_side
from .api import EngineError
from .dispatch import MAX_START_FAILURES, Dispatcher, EngineJob, Slot, without_secrets
from .ray_painter import PainterActor

log = logging.getLogger(__name__)


class RayJob(EngineJob):
    """A job submitted to a RayEngine (implements `api.Job`).

    `worker_pid` is the pid of the painter running (or that last ran) it, `node_id` its node.
    """

    node_id: str | None = None


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
class _Painter(Slot[RayJob]):
    """The engine's handle on one painter actor."""

    actor: Any
    node_id: str
    task: asyncio.Task[None] | None = None


class RayEngine(Dispatcher[RayJob, _Painter]):
    """An `Engine` whose painters are Ray actors spread over a cluster's nodes.

    address: the cluster ("host:6379", "auto", "ray://host:10001"); None starts a local one
    with `num_cpus` CPUs (default: all). painters_per_node: painters per GPU, or per CPU-only
    node when the cluster has no GPU. job_timeout, preview_interval, stop_grace: as for
    ProcessPoolEngine. poll_interval: seconds between looks at the cluster's nodes. nice: the
    painters' lowest CPU niceness (STYLEBOT_PAINTER_NICE; Ray itself starts workers at 15).

    `wait_ready()` returns at once if the cluster has no room yet (jobs then wait for a node to
    join); a painter that Ray cannot place because other work holds its node's resources keeps
    it waiting.
    """

    _log: ClassVar[logging.Logger] = log
    _job_class = RayJob
    _noun = "painter"
    _retry_on = "another"

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
        nice: int = 10,
    ) -> None:
        if painters_per_node < 1:
            raise ValueError("painters_per_node must be at least 1")
        super().__init__(job_timeout, preview_interval, stop_grace)
        self._address = address
        self._per_node = painters_per_node
        self._poll_interval = poll_interval
        self._num_cpus = num_cpus
        self._nice = nice

        self._owns_connection = False
        self._gcs_address = ""
        self._per_node_wanted: dict[str, int] = {}  # painters per alive node, from the last poll
        self._not_before: dict[str, float] = {}  # node → loop time of its next painter
        self._wake: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def _start_up(self) -> None:
        """Connect (or start a local cluster), create the painters and start watching nodes."""
        loop = self._loop_()
        self._wake = asyncio.Event()
        await loop.run_in_executor(None, self._connect)
        await self._poll()
        self._watcher = loop.create_task(self._watch())

    async def close(self) -> None:
        """Fail queued and running jobs (EngineError), kill the painters, disconnect.

        Idempotent; the engine cannot be restarted.
        """
        if self._closing:
            return
        error = self._begin_close()
        tasks = [t for t in (self._watcher, *(p.task for p in self._slots)) if t is not None]
        for p in self._slots:
            if p.job is not None:
                p.job._finish(error=error)
            p.clear_timers()
            _kill(p.actor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._slots.clear()
        self._idle.clear()
        if self._owns_connection:
            assert self._loop is not None
            await self._loop.run_in_executor(None, ray.shutdown)
        log.info("closed")

    # -- the Engine protocol -----------------------------------------------------------------

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
        return [p.pid for p in self._slots if p.ready]

    def placements(self) -> dict[str, str]:
        """Each running job's id → the node id of its painter."""
        return {p.job.id: p.node_id for p in self._slots if p.job is not None}

    # -- the cluster ---------------------------------------------------------------------------

    def _connect(self) -> None:
        """Executor thread: join the cluster at `address`, or start a local one on loopback."""
        if ray.is_initialized():
            log.info("using this process's existing Ray connection")
        else:
            local = self._address is None or ray_local.is_loopback(self._address)
            if local:
                ray_local.pin_to_loopback()
            options: dict[str, Any] = {"address": self._address, "log_to_driver": False}
            if self._address is None:  # "local": its own cluster, never the last one started here
                options |= {"address": "local", "num_cpus": self._num_cpus}
                options["include_dashboard"] = False
            try:
                with without_secrets():  # the local cluster's processes
                    ray.init(**options)
            except ConnectionError as exc:
                raise EngineError(
                    f"Could not connect to the Ray cluster at {self._address}: "
                    f"{_first_line(exc)} If the cluster uses token authentication (Ray's "
                    "default), set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (`ray get-auth-token` "
                    "on the head) in this process's environment."
                ) from exc
            self._owns_connection = True
            if local:
                ray_local.check_on_loopback()
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
        for p in list(self._slots):
            if p.node_id not in alive:
                self._lose(p, "its machine left the cluster")
        use_gpus = any(r.get("GPU", 0) >= 1 for r in alive.values())
        self._per_node_wanted = {}
        for node_id, resources in alive.items():
            spec = painter_spec(resources, self._per_node, use_gpus)
            if spec is None or self._start_failures[node_id] >= MAX_START_FAILURES:
                continue
            self._per_node_wanted[node_id] = spec.count
            if loop.time() < self._not_before.get(node_id, 0.0):
                continue
            have = sum(p.node_id == node_id for p in self._slots)
            for _ in range(spec.count - have):
                self._create(node_id, spec)
        self._update_ready()
        self._fail_queue_if_hopeless()

    def _create(self, node_id: str, spec: PainterSpec) -> None:
        if self._closing:
            return
        actor = PainterActor.options(
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(
            spec.threads,
            self._preview_interval,
            logging.getLogger("nst_engine").getEffectiveLevel(),
            self._nice,
        )
        p = _Painter(actor, node_id)
        self._slots.append(p)
        p.task = self._loop_().create_task(self._bring_up(p))
        log.info("painter created on node %s (%d thread(s))", node_id[:8], spec.threads)

    async def _bring_up(self, p: _Painter) -> None:
        """Wait for a new painter to load the model, then put it to work."""
        try:
            p.pid, p.device = await p.actor.info.remote()
        except RayError as exc:
            failures = self._count_start_failure(p.node_id, _first_line(exc))
            log.warning(
                "painter on node %s failed to start (%d): %s",
                p.node_id[:8],
                failures,
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
        if p not in self._slots:
            return
        self._slots.remove(p)
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
        self._retry_or_give_up(job)
        if p.ready and not p.killed:
            self._back_off(p)
        self._update_ready()
        self._dispatch()
        self._fail_queue_if_hopeless()
        assert self._wake is not None
        self._wake.set()  # replace it

    def _back_off(self, p: _Painter) -> None:
        """A node that keeps losing painters soon after they start waits longer each time."""
        streak, delay = self._crash_delay(p.node_id, p.ready_at)
        if streak > 1:
            log.warning(
                "node %s lost %d painters in a row; next in %g s", p.node_id[:8], streak, delay
            )
            self._not_before[p.node_id] = self._loop_().time() + delay

    def _start_failure(self) -> EngineError | None:
        """The error for every job once no node can start a painter; None while one might."""
        given_up = [n for n, count in self._start_failures.items() if count >= MAX_START_FAILURES]
        if self._slots or self._per_node_wanted or not given_up:
            return None
        return EngineError(f"The painter could not start: {self._last_failure}")

    def _wanted(self) -> int:
        return sum(self._per_node_wanted.values())

    def _nodes(self, serving: list[_Painter]) -> int:
        return len({p.node_id for p in serving})

    # -- the Dispatcher's hooks --------------------------------------------------------------

    def _start_on(self, p: _Painter, job: RayJob) -> None:
        job.node_id = p.node_id
        p.task = self._loop_().create_task(self._paint(p, job, p.seq))

    def _signal_stop(self, p: _Painter) -> None:
        p.actor.stop.remote(p.seq)

    def _still_running(self, p: _Painter) -> bool:
        return p in self._slots

    def _kill_painter(self, p: _Painter) -> None:
        _kill(p.actor)

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


def _kill(actor: Any) -> None:
    """Kill an actor; one that is already gone is fine."""
    with contextlib.suppress(RayError, ValueError):
        ray.kill(actor, no_restart=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
