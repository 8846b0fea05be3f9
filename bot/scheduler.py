"""A fair job queue: round-robin across users, FIFO within a user, caps per user, guild and bot.

`FairQueue` is the plain bookkeeping (no I/O, easy to test); `Scheduler` runs the queue on the
event loop, starting jobs as slots free up and telling its owner when waiting jobs move.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

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


@dataclass(eq=False)
class Ticket:
    """One job's place in the queue. `payload` is whatever the owner of the queue attaches."""

    id: str
    user_id: int
    guild_id: int | None
    payload: object = None
    running: bool = field(default=False, init=False)
    arrival: int = field(default=0, init=False)


class FairQueue:
    """Waiting and running tickets, with the caps checked on `add`.

    Fairness: the next job comes from the user who was served longest ago (a user never served,
    or with nothing left in the queue, counts as never served); ties go to the earlier arrival.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._waiting: dict[int, deque[Ticket]] = {}
        self._running: dict[str, Ticket] = {}
        self._served: dict[int, int] = {}  # user -> serial of their last start
        self._serial = 0
        self._arrivals = itertools.count(1)

    def __len__(self) -> int:
        return self.waiting_count + len(self._running)

    @property
    def waiting_count(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @property
    def running(self) -> list[Ticket]:
        return list(self._running.values())

    def tickets(self) -> Iterator[Ticket]:
        yield from self._running.values()
        yield from self.order()

    def add(self, ticket: Ticket) -> None:
        """Queue a ticket, or raise `CapExceeded` with a message for its owner."""
        self.check(ticket)
        ticket.arrival = next(self._arrivals)
        self._waiting.setdefault(ticket.user_id, deque()).append(ticket)

    def check(self, ticket: Ticket) -> None:
        """Raise `CapExceeded` when queueing this ticket would go over a cap."""
        lim = self.limits
        waiting = len(self._waiting.get(ticket.user_id, ()))
        running = self._user_running(ticket.user_id)
        # A user's allowance is running + waiting together: one whose jobs all wait behind
        # others' may hold that many, and a zero waiting cap still lets a job start.
        if waiting + running >= lim.user_running + lim.user_waiting:
            raise CapExceeded(
                f"You already have {running} running and {waiting} waiting "
                f"(the limit is {lim.user_running} running + {lim.user_waiting} waiting). "
                "Wait for one to finish, or `cancel` one."
            )
        if len(self) >= lim.total_jobs:
            raise CapExceeded(
                f"The queue is full ({lim.total_jobs} jobs). Please try again in a few minutes."
            )
        if ticket.guild_id is not None:
            in_guild = sum(t.guild_id == ticket.guild_id for t in self.tickets())
            if in_guild >= lim.guild_jobs:
                raise CapExceeded(
                    f"This server already has {in_guild} jobs queued or running "
                    f"(the limit is {lim.guild_jobs}). Please try again in a few minutes."
                )

    def _user_running(self, user_id: int) -> int:
        return sum(t.user_id == user_id for t in self._running.values())

    def _key(self, user_id: int) -> tuple[int, int]:
        return self._served.get(user_id, 0), self._waiting[user_id][0].arrival

    def pop_next(self) -> Ticket | None:
        """Take the next ticket in fair order whose user may start another, or None."""
        eligible = [
            user_id
            for user_id in self._waiting
            if self._user_running(user_id) < self.limits.user_running
        ]
        if not eligible:
            return None
        user_id = min(eligible, key=self._key)
        queue = self._waiting[user_id]
        ticket = queue.popleft()
        if not queue:
            del self._waiting[user_id]
        self._serial += 1
        self._served[user_id] = self._serial
        ticket.running = True
        self._running[ticket.id] = ticket
        return ticket

    def finish(self, ticket: Ticket) -> None:
        self._running.pop(ticket.id, None)
        ticket.running = False
        self._forget_if_idle(ticket.user_id)

    def _forget_if_idle(self, user_id: int) -> None:
        if user_id not in self._waiting and not self._user_running(user_id):
            self._served.pop(user_id, None)

    def remove(self, ticket: Ticket) -> bool:
        """Drop a waiting ticket; False when it is not waiting (running or gone)."""
        queue = self._waiting.get(ticket.user_id)
        if queue is None or ticket not in queue:
            return False
        queue.remove(ticket)
        if not queue:
            del self._waiting[ticket.user_id]
            self._forget_if_idle(ticket.user_id)
        return True

    def order(self) -> list[Ticket]:
        """Waiting tickets in the order they are expected to start (running caps aside)."""
        heap = [
            (self._served.get(user_id, 0), queue[0].arrival, user_id, 0)
            for user_id, queue in self._waiting.items()
        ]
        heapq.heapify(heap)
        serial = itertools.count(self._serial + 1)
        result: list[Ticket] = []
        while heap:
            _, _, user_id, index = heapq.heappop(heap)
            queue = self._waiting[user_id]
            result.append(queue[index])
            if index + 1 < len(queue):
                heapq.heappush(heap, (next(serial), queue[index + 1].arrival, user_id, index + 1))
        return result

    def positions(self) -> dict[str, int]:
        """1-based expected start position of every waiting ticket, by ticket id."""
        return {ticket.id: index for index, ticket in enumerate(self.order(), start=1)}

    def drain(self) -> list[Ticket]:
        """Remove and return every waiting ticket (used at shutdown)."""
        waiting = self.order()
        self._waiting.clear()
        for user_id in list(self._served):
            self._forget_if_idle(user_id)
        return waiting


Runner = Callable[[Ticket], Awaitable[None]]
MovedCallback = Callable[[dict[str, int]], None]


class Scheduler:
    """Runs tickets from a `FairQueue` with at most `slots` at once.

    `run(ticket)` does the work of one job; `on_moved(positions)` is called (synchronously) after
    every change with the current positions of the waiting tickets.
    """

    def __init__(self, limits: Limits, slots: int, run: Runner, on_moved: MovedCallback) -> None:
        self.queue = FairQueue(limits)
        self.slots = max(1, slots)
        self._run = run
        self._on_moved = on_moved
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.accepting = True

    def submit(self, ticket: Ticket) -> int | None:
        """Queue a ticket; returns its position, or None when it started at once."""
        if not self.accepting:
            raise CapExceeded("The bot is shutting down and is not taking new jobs.")
        self.queue.add(ticket)
        if not self._pump():
            self._notify()
        return None if ticket.running else self.queue.positions()[ticket.id]

    def check(self, ticket: Ticket) -> None:
        """Raise `CapExceeded` when the ticket would be refused (before any message is sent)."""
        if not self.accepting:
            raise CapExceeded("The bot is shutting down and is not taking new jobs.")
        self.queue.check(ticket)

    def cancel_waiting(self, ticket: Ticket) -> bool:
        removed = self.queue.remove(ticket)
        if removed:
            self._notify()
        return removed

    def _pump(self) -> bool:
        """Start tickets while slots are free; True (after notifying) when any started."""
        started = False
        while self.accepting and len(self.queue.running) < self.slots:
            ticket = self.queue.pop_next()
            if ticket is None:
                break
            started = True
            self._tasks[ticket.id] = asyncio.create_task(
                self._guarded(ticket), name=f"stylebot-job-{ticket.id}"
            )
        if started:
            self._notify()
        return started

    async def _guarded(self, ticket: Ticket) -> None:
        try:
            await self._run(ticket)
        except Exception:
            log.exception("job %s: the runner failed", ticket.id)
        finally:
            self.queue.finish(ticket)
            self._tasks.pop(ticket.id, None)
            self._pump()

    def _notify(self) -> None:
        try:
            self._on_moved(self.queue.positions())
        except Exception:
            log.exception("updating queue positions failed")

    def stop(self) -> list[Ticket]:
        """Stop starting jobs; remove and return the waiting tickets."""
        self.accepting = False
        return self.queue.drain()

    async def join(self) -> None:
        """Wait for the running jobs to end."""
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
