"""What ProcessPoolEngine and RayEngine share: the scheduling around painters (the job handle
they give back is `jobs.EngineJob`).

`Dispatcher` keeps the FIFO queue of jobs and hands them to the most recently idle painter;
it does the engine's start/close bookkeeping, `submit()`, cancel and timeouts (ask the painter to
stop, kill it after `stop_grace`), retries a job once when its painter is lost (a second loss
fails it with CRASHED_TWICE), counts start failures and spaces out replacements in a crash loop.
An engine subclasses it with its own painters (`Slot`s: worker processes, Ray actors) and fills
in the hooks: how it starts up, how a job starts on a painter, how a painter is told to stop and
killed, how many painters it wants, and when it has given up starting any.

Torch-free: both engines import this in the bot's process.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import itertools
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

from .api import Cancelled, EngineError, EngineStats, JobTimeout, StyleRequest
from .jobs import EngineJob

# A painter slot (pool) or node (Ray) whose painter dies this many times in a row before it is
# ready is given up.
MAX_START_FAILURES = 3
# A painter that dies within this many seconds of becoming ready counts towards a crash loop: the
# first death is replaced at once, each further one in a row waits twice as long as the last,
# from CRASH_BACKOFF up to MAX_CRASH_BACKOFF seconds.
CRASH_STREAK_WINDOW = 60.0
CRASH_BACKOFF = 0.5
MAX_CRASH_BACKOFF = 30.0

CRASHED_TWICE = (
    "The painter crashed twice on this job, so it was given up. "
    "The image may be too large for this machine; try a smaller size."
)
SHUTTING_DOWN = "The painter is shutting down; please try again later."
# Never inherited by painters (they decode hostile images); the bot's token is one.
SECRET_ENV = ("DISCORD_TOKEN",)


J = TypeVar("J", bound=EngineJob)


@dataclass(eq=False, kw_only=True)
class Slot(Generic[J]):
    """The engine's handle on one painter: its state as the scheduler sees it."""

    pid: int = 0
    device: str = ""
    ready: bool = False
    ready_at: float = 0.0  # loop time
    killed: bool = False  # by the engine; its loss is still to come
    job: J | None = None
    seq: int = 0  # the current job attempt, for the painter's stop flag and stale messages
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def serving(self) -> bool:
        """Loaded and not condemned: counts towards the engine's strength."""
        return self.ready and not self.killed

    def clear_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


S = TypeVar("S", bound=Slot[Any])


class Dispatcher(abc.ABC, Generic[J, S]):
    """The queue, dispatch, cancel/timeout and retry logic of an engine (see the module doc).

    All methods are called from the one running loop the engine was started on.
    """

    _log: ClassVar[logging.Logger]  # the engine module's logger
    _job_class: ClassVar[type[EngineJob]]
    _noun: ClassVar[str]  # what a painter is called in log lines: "worker", "painter"
    _retry_on: ClassVar[str]  # where a job lost with its painter goes, in the log line

    def __init__(
        self, job_timeout: float | None, preview_interval: float, stop_grace: float
    ) -> None:
        if job_timeout is not None and job_timeout <= 0:
            raise ValueError("job_timeout must be positive or None")
        self._job_timeout = job_timeout
        self._preview_interval = preview_interval
        self._stop_grace = stop_grace

        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: list[S] = []
        self._idle: list[S] = []  # a stack: the most recently idle painter is on top
        self._queue: collections.deque[J] = collections.deque()
        self._seqs = itertools.count(1)
        self._start_failures: collections.Counter[Any] = collections.Counter()
        self._crash_streaks: collections.Counter[Any] = collections.Counter()
        self._last_failure = ""
        self._ready: asyncio.Event | None = None
        self._started: asyncio.Future[None] | None = None
        self._closing = False

    # -- what each engine fills in -----------------------------------------------------------

    @abc.abstractmethod
    async def _start_up(self) -> None:
        """Create the painters (the loop, `_started` and `_ready` are set by now)."""

    @abc.abstractmethod
    def _start_on(self, s: S, job: J) -> None:
        """Send the job to its painter (`s.job` and `s.seq` are set by now)."""

    @abc.abstractmethod
    def _signal_stop(self, s: S) -> None:
        """Ask the painter to stop the job attempt `s.seq` at its next step."""

    @abc.abstractmethod
    def _still_running(self, s: S) -> bool:
        """Whether the painter is still there to be killed."""

    @abc.abstractmethod
    def _kill_painter(self, s: S) -> None:
        """Kill a painter that did not stop; its loss is handled when it is reported."""

    @abc.abstractmethod
    def _wanted(self) -> int:
        """How many painters the engine should have serving."""

    @abc.abstractmethod
    def _nodes(self, serving: list[S]) -> int:
        """How many machines the serving painters are on."""

    @abc.abstractmethod
    def _start_failure(self) -> EngineError | None:
        """The error for every job once no painter can start at all; None while one might."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bring the painters up (idempotent; returns before they are ready)."""
        if self._closing:
            raise EngineError(SHUTTING_DOWN)
        if self._started is not None:
            await asyncio.shield(self._started)
            return
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._ready = asyncio.Event()
        try:
            await self._start_up()
        except BaseException as exc:
            self._started.set_exception(exc)
            self._started.exception()
            raise
        self._started.set_result(None)

    async def wait_ready(self) -> None:
        """Wait until every painter the engine wants has loaded the model.

        Raises EngineError if the engine is closed or no painter could start at all.
        """
        await self.start()
        assert self._ready is not None
        await self._ready.wait()
        if self._closing:
            raise EngineError(SHUTTING_DOWN)
        if (error := self._start_failure()) is not None:
            raise error

    async def __aenter__(self) -> Self:
        """Start and wait until ready; closed again if either fails."""
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

    @abc.abstractmethod
    async def close(self) -> None:
        """Fail queued and running jobs (EngineError) and end every painter."""

    def _begin_close(self) -> EngineError:
        """Refuse new work and fail the queued jobs; the error for the running ones."""
        self._closing = True
        error = EngineError(SHUTTING_DOWN)
        self._fail_queue(error)
        if self._ready is not None:
            self._ready.set()
        return error

    # -- the Engine protocol -----------------------------------------------------------------

    async def submit(self, request: StyleRequest, *, timeout: float | None = None) -> J:
        """Queue a job; it runs on the next idle painter. Starts the engine if needed.

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
        job: J = self._job_class(  # type: ignore[assignment]
            self, secrets.token_urlsafe(6), request, timeout or self._job_timeout
        )
        self._queue.append(job)
        self._log.info(
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
        """Painters ready, painters busy (including ones stopping a cancelled job), jobs queued,
        machines with a ready painter, and the devices of the ready painters."""
        serving = [s for s in self._slots if s.serving]
        return EngineStats(
            painters=len(serving),
            busy=sum(s.job is not None for s in self._slots),
            queued=len(self._queue),
            nodes=self._nodes(serving),
            devices=tuple(sorted({s.device for s in serving})),
        )

    # -- scheduling --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._queue and self._idle and not self._closing:
            job = self._queue.popleft()
            s = self._idle.pop()
            s.job = job
            s.seq = next(self._seqs)
            job.worker_pid = s.pid
            self._start_on(s, job)
            self._log.info("job %s started on %s pid %s (%s)", job.id, self._noun, s.pid, s.device)
            if job.timeout is not None:
                s.timers.append(self._loop_().call_later(job.timeout, self._on_timeout, s, s.seq))

    def _make_idle(self, s: S) -> None:
        if self._closing or s not in self._slots:
            return
        self._idle.append(s)
        self._dispatch()

    def _cancel(self, job: EngineJob) -> None:
        if job.done:
            return
        job._finish(error=Cancelled())
        if job in self._queue:
            self._queue.remove(job)  # type: ignore[arg-type]
            self._log.info("job %s cancelled while queued", job.id)
            return
        for s in self._slots:
            if s.job is job:
                self._log.info("job %s cancelled; stopping %s pid %s", job.id, self._noun, s.pid)
                self._stop_job(s)

    def _on_timeout(self, s: S, seq: int) -> None:
        if s.seq != seq or s.job is None or s.job.done:
            return
        self._log.warning(
            "job %s timed out after %g s on %s pid %s", s.job.id, s.job.timeout, self._noun, s.pid
        )
        s.job._finish(
            error=JobTimeout(
                f"The job took longer than {s.job.timeout:g} s and was stopped; "
                "try a smaller size or a lower quality."
            )
        )
        self._stop_job(s)

    def _stop_job(self, s: S) -> None:
        """Ask the painter to stop its job; kill it if it is still on it after the grace period."""
        self._signal_stop(s)
        s.timers.append(self._loop_().call_later(self._stop_grace, self._kill_if_stuck, s, s.seq))

    def _kill_if_stuck(self, s: S, seq: int) -> None:
        if s.seq == seq and s.job is not None and self._still_running(s):
            self._log.warning(
                "%s pid %s did not stop job %s; killing it", self._noun, s.pid, s.job.id
            )
            s.killed = True
            self._kill_painter(s)
            self._update_ready()

    # -- lost painters -------------------------------------------------------------------------

    def _retry_or_give_up(self, job: J | None) -> None:
        """A job whose painter was lost: queue it first to run again, or fail it the second time."""
        if job is None or job.done:
            return
        if job.crashes == 0:
            job.crashes = 1
            self._log.warning(
                "job %s lost its %s; retrying it on %s", job.id, self._noun, self._retry_on
            )
            self._queue.appendleft(job)
        else:
            self._log.error("job %s lost its %s twice; giving up", job.id, self._noun)
            job._finish(error=EngineError(CRASHED_TWICE))

    def _crash_delay(self, key: Any, ready_at: float) -> tuple[int, float]:
        """Count a ready painter's death at `key` (slot or node): its streak of deaths soon after
        start, and how long to wait before the next painter there (0 for the first)."""
        if self._loop_().time() - ready_at < CRASH_STREAK_WINDOW:
            self._crash_streaks[key] += 1
        else:
            self._crash_streaks[key] = 1
        streak = self._crash_streaks[key]
        if streak == 1:
            return streak, 0.0
        return streak, min(MAX_CRASH_BACKOFF, CRASH_BACKOFF * 2.0 ** (streak - 2))

    def _count_start_failure(self, key: Any, why: str) -> int:
        """Note that a painter at `key` failed to start; how many times in a row it has."""
        self._last_failure = why
        self._start_failures[key] += 1
        return self._start_failures[key]

    def _fail_queue(self, error: EngineError) -> None:
        while self._queue:
            self._queue.popleft()._finish(error=error)

    def _fail_queue_if_hopeless(self) -> None:
        if (error := self._start_failure()) is not None:
            self._fail_queue(error)

    def _update_ready(self) -> None:
        assert self._ready is not None
        if self._closing or sum(s.serving for s in self._slots) >= self._wanted():
            self._ready.set()
        else:
            self._ready.clear()

    def _loop_(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "start() the engine first"
        return self._loop


@contextlib.contextmanager
def without_secrets() -> Iterator[None]:
    """Hide SECRET_ENV from the processes started meanwhile."""
    saved = {name: os.environ.pop(name) for name in SECRET_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
