"""A fair job queue: round-robin across users, FIFO within a user, caps per user, guild and bot.

`FairQueue` is the plain bookkeeping (no I/O, easy to test); `Scheduler` runs the queue on the
event loop, starting jobs as painter slots free up and telling its owner when waiting jobs move.
A place under the caps is reserved (`reserve`) before anything is downloaded, so a burst of
commands can never download more than the caps allow.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from nst_engine.api import InputError

log = logging.getLogger(__name__)


class CapExceeded(InputError):
    """A new job would go over one of the caps; it was not queued."""


@dataclass(frozen=True)
class Limits:
    user_running: int = 1
    user_waiting: int = 2
    guild_jobs: int = 8
    total_jobs: int = 50


class Queued(Protocol):
    """What the queue needs of a job."""

    @property
    def id(self) -> str: ...

    @property
    def owner_id(self) -> int: ...

    @property
    def guild_id(self) -> int | None: ...


J = TypeVar("J", bound=Queued)


@dataclass(eq=False)
class Place:
    """A reserved place under the caps, held while a job's inputs download."""

    owner_id: int
    guild_id: int | None
    held: bool = True


class FairQueue(Generic[J]):
    """Waiting and running jobs (plus reserved places), with the caps checked on `reserve`.

    Fairness: the next job comes from the user who was served longest ago (a user never served,
    or with nothing left in the queue, counts as never served); ties go to the earlier arrival.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._waiting: dict[int, deque[J]] = {}
        self._running: dict[str, J] = {}
        self._places: list[Place] = []
        self._arrival: dict[str, int] = {}
        self._served: dict[int, int] = {}  # user -> serial of their last start
        self._serial = 0
        self._arrivals = itertools.count(1)

    def __len__(self) -> int:
        return self.waiting_count + len(self._running) + len(self._places)

    @property
    def waiting_count(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @property
    def running(self) -> list[J]:
        return list(self._running.values())

    def is_running(self, job: J) -> bool:
        return self._running.get(job.id) is job

    def _all(self) -> Iterator[Queued | Place]:
        yield from self._running.values()
        for queue in self._waiting.values():
            yield from queue
        yield from self._places

    def reserve(self, owner_id: int, guild_id: int | None) -> Place:
        """Hold a place for a job about to be accepted, or raise `CapExceeded`."""
        lim = self.limits
        mine = [x for x in self._all() if x.owner_id == owner_id]
        running = sum(1 for j in self._running.values() if j.owner_id == owner_id)
        # A user's allowance is running + waiting together: one whose jobs all wait behind
        # others' may hold that many, and a zero waiting cap still lets a job start.
        if len(mine) >= lim.user_running + lim.user_waiting:
            raise CapExceeded(
                f"You already have {running} running and {len(mine) - running} waiting "
                f"(the limit is {lim.user_running} running + {lim.user_waiting} waiting). "
                "Wait for one to finish, or `cancel` one."
            )
        if len(self) >= lim.total_jobs:
            raise CapExceeded(
                f"The queue is full ({lim.total_jobs} jobs). Please try again in a few minutes."
            )
        if guild_id is not None:
            in_guild = sum(1 for x in self._all() if x.guild_id == guild_id)
            if in_guild >= lim.guild_jobs:
                raise CapExceeded(
                    f"This server already has {in_guild} jobs queued or running "
                    f"(the limit is {lim.guild_jobs}). Please try again in a few minutes."
                )
        place = Place(owner_id, guild_id)
        self._places.append(place)
        return place

    def release(self, place: Place) -> None:
        """Give back a place whose job was not accepted after all."""
        if place.held:
            place.held = False
            self._places.remove(place)

    def add(self, job: J, place: Place | None = None) -> None:
        """Queue a job in the place reserved for it (None: resumed jobs, no caps checked)."""
        if place is not None:
            self.release(place)
        self._arrival[job.id] = next(self._arrivals)
        self._waiting.setdefault(job.owner_id, deque()).append(job)

    def _user_running(self, user_id: int) -> int:
        return sum(j.owner_id == user_id for j in self._running.values())

    def _key(self, user_id: int) -> tuple[int, int]:
        return self._served.get(user_id, 0), self._arrival[self._waiting[user_id][0].id]

    def pop_next(self) -> J | None:
        """Take the next job in fair order whose user may start another, or None."""
        eligible = [u for u in self._waiting if self._user_running(u) < self.limits.user_running]
        if not eligible:
            return None
        user_id = min(eligible, key=self._key)
        queue = self._waiting[user_id]
        job = queue.popleft()
        if not queue:
            del self._waiting[user_id]
        self._serial += 1
        self._served[user_id] = self._serial
        self._running[job.id] = job
        return job

    def finish(self, job: J) -> None:
        self._running.pop(job.id, None)
        self._arrival.pop(job.id, None)
        self._forget_if_idle(job.owner_id)

    def _forget_if_idle(self, user_id: int) -> None:
        if user_id not in self._waiting and not self._user_running(user_id):
            self._served.pop(user_id, None)

    def remove(self, job: J) -> bool:
        """Drop a waiting job; False when it is not waiting (running or gone)."""
        queue = self._waiting.get(job.owner_id)
        if queue is None or job not in queue:
            return False
        queue.remove(job)
        self._arrival.pop(job.id, None)
        if not queue:
            del self._waiting[job.owner_id]
            self._forget_if_idle(job.owner_id)
        return True

    def order(self) -> list[J]:
        """Waiting jobs in the order they are expected to start (running caps aside)."""
        heap = [
            (self._served.get(user_id, 0), self._arrival[queue[0].id], user_id, 0)
            for user_id, queue in self._waiting.items()
        ]
        heapq.heapify(heap)
        serial = itertools.count(self._serial + 1)
        result: list[J] = []
        while heap:
            _, _, user_id, index = heapq.heappop(heap)
            queue = self._waiting[user_id]
            result.append(queue[index])
            if index + 1 < len(queue):
                nxt = queue[index + 1]
                heapq.heappush(heap, (next(serial), self._arrival[nxt.id], user_id, index + 1))
        return result

    def positions(self) -> dict[str, int]:
        """1-based expected start position of every waiting job, by job id."""
        return {job.id: index for index, job in enumerate(self.order(), start=1)}

    def drain(self) -> list[J]:
        """Remove and return every waiting job (used at shutdown)."""
        waiting = self.order()
        self._waiting.clear()
        for job in waiting:
            self._arrival.pop(job.id, None)
        for user_id in list(self._served):
            self._forget_if_idle(user_id)
        return waiting


Runner = Callable[[J], Awaitable[None]]
MovedCallback = Callable[[dict[str, int]], None]


class Scheduler(Generic[J]):
    """Runs jobs from a `FairQueue` with at most `slots` at once.

    `run(job)` paints one job (delivery happens elsewhere, so a slot frees as soon as the
    painting ends); `on_moved(positions)` is called (synchronously) after every change with the
    current positions of the waiting jobs.
    """

    def __init__(self, limits: Limits, slots: int, run: Runner[J], on_moved: MovedCallback) -> None:
        self.queue: FairQueue[J] = FairQueue(limits)
        self.slots = max(1, slots)
        self._run = run
        self._on_moved = on_moved
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.accepting = True

    def reserve(self, owner_id: int, guild_id: int | None) -> Place:
        """A place under the caps, before any download; raises `CapExceeded`."""
        if not self.accepting:
            raise CapExceeded("The bot is shutting down and is not taking new jobs.")
        return self.queue.reserve(owner_id, guild_id)

    def submit(self, job: J, place: Place | None) -> int | None:
        """Queue a job; returns its position, or None when it started at once."""
        self.queue.add(job, place)
        if not self._pump():
            self._notify()
        return None if self.queue.is_running(job) else self.queue.positions()[job.id]

    def resize(self, slots: int) -> None:
        """Follow the engine's capacity (painters come and go on a cluster)."""
        self.slots = max(1, slots)
        self._pump()

    def cancel_waiting(self, job: J) -> bool:
        removed = self.queue.remove(job)
        if removed:
            self._notify()
        return removed

    def _pump(self) -> bool:
        """Start jobs while slots are free; True (after notifying) when any started."""
        started = False
        while self.accepting and len(self.queue.running) < self.slots:
            job = self.queue.pop_next()
            if job is None:
                break
            started = True
            self._tasks[job.id] = asyncio.create_task(
                self._guarded(job), name=f"stylebot-job-{job.id}"
            )
        if started:
            self._notify()
        return started

    async def _guarded(self, job: J) -> None:
        try:
            await self._run(job)
        except Exception:
            log.exception("job %s: the runner failed", job.id)
        finally:
            self.queue.finish(job)
            self._tasks.pop(job.id, None)
            self._pump()

    def _notify(self) -> None:
        try:
            self._on_moved(self.queue.positions())
        except Exception:
            log.exception("updating queue positions failed")

    def stop(self) -> list[J]:
        """Stop starting jobs; remove and return the waiting ones."""
        self.accepting = False
        return self.queue.drain()

    async def join(self) -> None:
        """Wait for the running jobs to end."""
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
