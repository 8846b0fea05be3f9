"""One budget per channel for everything the bot posts or edits there.

Discord lets a bot make about 5 message creates and edits per 5 s in one channel. Every send
and edit the bot makes in a channel goes through that channel's `Lane`: one request at a time,
the most important first (queue-board pages, results, first answers, progress of running
jobs, queue positions), and an edit still waiting is replaced by a newer one for
the same message, so a busy channel sends the latest state rather than every state. The lane's
model of the bucket is corrected from the X-RateLimit-* headers of every answer in that bucket
(`trace_config`; Discord's route + channel, by X-RateLimit-Bucket), so it stays right when
Discord's numbers differ from the defaults, and reading the channel never resets it.

Interaction responses and follow-ups are not channel traffic: they have their own budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

# Most urgent first: a queue-board page (one answers ~20 commands of a crowd), a result, a
# first answer, a running job's progress, a waiting job's queue place.
BOARD, RESULT, ANSWER, PROGRESS, POSITION = range(5)
DEFAULT_LIMIT = 5
# Progress and queue places never spend the last KEEP requests of a window: those stay for
# results, queue-board pages and first answers that may come before it resets.
KEEP = 2
DEFAULT_WINDOW = 5.0
# Message routes of a channel; the bucket of sends (creates, edits, deletes) is the lane's.
# Reading them (GET) has a bucket of its own, as reactions do.
_MESSAGE_ROUTE = re.compile(r"/channels/(\d+)/messages(/\d+)?$")
_SENDS = frozenset({"POST", "PATCH", "DELETE"})
_CREATE = "POST /channels/{channel_id}/messages"

IDLE_TIMEOUT = 30.0  # s an empty lane's task waits for work before it ends

Send = Callable[[], Awaitable[Any]]
# How an empty lane waits for work: True when woken, False when it gave up (idle).
IdleWait = Callable[[asyncio.Event], Awaitable[bool]]


def idle_timeout(seconds: float) -> IdleWait:
    """Wait for the lane's wake-up at most `seconds`."""

    async def wait(wake: asyncio.Event) -> bool:
        try:
            await asyncio.wait_for(wake.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    return wait


class Budget:
    """The channel's bucket as the bot believes it stands: `limit` requests per `window`.

    Like Discord's, the window starts with the first request after a reset. Headers from real
    answers overwrite the guess (`observe`).
    """

    def __init__(self, limit: int = DEFAULT_LIMIT, window: float = DEFAULT_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.remaining = limit
        self.reset_at: float | None = None  # monotonic; None: no window running

    def _roll(self, now: float) -> None:
        if self.reset_at is not None and now >= self.reset_at:
            self.remaining = self.limit
            self.reset_at = None

    def available(self, now: float | None = None) -> int:
        """Requests that can go now without waiting."""
        self._roll(time.monotonic() if now is None else now)
        return self.remaining

    def delay(self, now: float | None = None, *, keep: int = 0) -> float:
        """Seconds until a request may go and still leave `keep` requests of the window unspent
        (0 when it may go now)."""
        now = time.monotonic() if now is None else now
        self._roll(now)
        if self.remaining > min(keep, self.limit - 1) or self.reset_at is None:
            return 0.0
        return max(0.0, self.reset_at - now)

    def take(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._roll(now)
        if self.reset_at is None:
            self.reset_at = now + self.window
        self.remaining = max(0, self.remaining - 1)

    def observe(self, limit: int | None, remaining: int, reset_after: float) -> None:
        """What Discord said in an answer's headers."""
        if limit:
            self.limit = limit
        self.remaining = remaining
        self.reset_at = time.monotonic() + reset_after


@dataclass(order=True)
class _Item:
    priority: int
    serial: int
    key: Hashable | None = field(compare=False)
    send: Send = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    dropped: bool = field(default=False, compare=False)


class Lane:
    """The queue of one channel: sends one request at a time when the budget allows."""

    def __init__(self, budget: Budget, name: str = "-", idle: IdleWait | None = None) -> None:
        self.budget = budget
        self.name = name
        self._idle = idle or idle_timeout(IDLE_TIMEOUT)
        self._heap: list[_Item] = []
        self._keyed: dict[Hashable, _Item] = {}
        self._serial = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.busy = False

    @property
    def pending(self) -> int:
        return sum(not item.dropped for item in self._heap)

    @property
    def urgent(self) -> int:
        """Pending results and first answers (edits of progress can wait or be coalesced)."""
        return sum(not item.dropped and item.priority <= ANSWER for item in self._heap)

    def submit(self, priority: int, send: Send, key: Hashable | None = None) -> asyncio.Future[Any]:
        """Queue `send()`; a pending request with the same `key` is replaced (its future then
        resolves with this one's outcome)."""
        loop = asyncio.get_running_loop()
        old = self._keyed.pop(key, None) if key is not None else None
        if old is not None:
            old.dropped = True
            future = old.future
            priority = min(priority, old.priority)
        else:
            future = loop.create_future()
        item = _Item(priority, next(self._serial), key, send, future)
        heapq.heappush(self._heap, item)
        if key is not None:
            self._keyed[key] = item
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"stylebot-lane-{self.name}")
        return future

    def _peek(self) -> _Item | None:
        while self._heap and self._heap[0].dropped:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None

    def _pop(self) -> _Item | None:
        while self._heap:
            item = heapq.heappop(self._heap)
            if item.dropped:
                continue
            if item.key is not None and self._keyed.get(item.key) is item:
                del self._keyed[item.key]
            return item
        return None

    async def _run(self) -> None:
        while True:
            if not self.pending:
                self._wake.clear()
                if not await self._idle(self._wake) and not self.pending:
                    # Idle. No await between that check and the end of the task, so a submit
                    # either found work waiting here or finds this task done and starts one.
                    return
                continue
            top = self._peek()
            keep = KEEP if top is not None and top.priority >= PROGRESS else 0
            delay = self.budget.delay(keep=keep)
            if delay > 0:
                self._wake.clear()  # a more urgent request may come and go before the reset
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            item = self._pop()
            if item is None:
                continue
            self.budget.take()
            self.busy = True
            try:
                result = await item.send()
            except asyncio.CancelledError:
                if not item.future.done():
                    item.future.cancel()
                raise
            except Exception as exc:
                if not item.future.done():
                    item.future.set_exception(exc)
                    item.future.exception()  # a fire-and-forget edit need not be awaited
            else:
                if not item.future.done():
                    item.future.set_result(result)
            finally:
                self.busy = False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._heap:
            if not item.future.done():
                item.future.cancel()
        self._heap.clear()
        self._keyed.clear()


class Traffic:
    """The lanes of every channel the bot talks in."""

    def __init__(self, limit: int = DEFAULT_LIMIT, window: float = DEFAULT_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._lanes: dict[int, Lane] = {}
        self._buckets: dict[str, str] = {}  # "METHOD route" -> Discord's bucket hash

    def lane(self, channel_id: int) -> Lane:
        lane = self._lanes.get(channel_id)
        if lane is None:
            lane = self._lanes[channel_id] = Lane(Budget(self.limit, self.window), str(channel_id))
        return lane

    def send(
        self, channel_id: int, priority: int, send: Send, key: Hashable | None = None
    ) -> asyncio.Future[Any]:
        """Queue a request in the channel's lane; await the future for its answer."""
        return self.lane(channel_id).submit(priority, send, key)

    def room(self, channel_id: int, spare: int = 1) -> bool:
        """Whether the channel can take an optional message now and still keep `spare`
        requests of this window for results: nothing urgent waits, the bucket is not empty."""
        lane = self.lane(channel_id)
        return lane.budget.available() - lane.urgent - int(lane.busy) > spare

    def observe(self, method: str, path: str, headers: Any) -> None:
        """Correct a channel's budget from an answer's X-RateLimit-* headers.

        Discord keys a bucket by route and major parameter (the channel), and says in
        X-RateLimit-Bucket which routes share one. The lane's bucket is that of message creates
        in its channel: an answer counts if its bucket hash is the creates' hash, or, before
        that hash is known, if it is a send (POST, PATCH, DELETE) on the channel's messages.
        Reading messages (GET) never resets the send budget."""
        match = _MESSAGE_ROUTE.search(path)
        if match is None:
            return
        route = f"{method} /channels/{{channel_id}}/messages" + ("/{id}" if match[2] else "")
        bucket = headers.get("X-RateLimit-Bucket")
        if bucket:
            self._buckets[route] = bucket
        sends = self._buckets.get(_CREATE)
        if sends is not None and bucket:
            if bucket != sends:
                return
        elif method not in _SENDS:
            return
        lane = self._lanes.get(int(match[1]))
        remaining, reset_after = (
            headers.get("X-RateLimit-Remaining"),
            headers.get("X-RateLimit-Reset-After"),
        )
        if lane is None or remaining is None or reset_after is None:
            return
        try:
            limit = headers.get("X-RateLimit-Limit")
            lane.budget.observe(int(limit) if limit else None, int(remaining), float(reset_after))
        except ValueError:
            log.debug("unreadable rate-limit headers on %s", path)

    def trace_config(self) -> aiohttp.TraceConfig:
        """An aiohttp trace that feeds every answer's headers to `observe` (give it to the
        discord.py client as `http_trace`)."""

        async def on_end(_: Any, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
            self.observe(params.method, params.url.path, params.response.headers)

        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(on_end)
        return trace

    async def close(self) -> None:
        await asyncio.gather(*(lane.close() for lane in self._lanes.values()))
        self._lanes.clear()
